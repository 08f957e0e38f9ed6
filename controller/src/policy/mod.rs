//! The policy language: YAML documents (`Segment`, `Service`, `Policy`), decoded with every
//! problem reported at once by file, line, column and field path, then checked across
//! documents (duplicates, references, contradictions).

pub mod decode;
pub mod model;
pub mod parse;
pub mod resolve;
pub mod resolver;
pub mod rollout;
pub mod store;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use decode::{Diagnostic, Severity};
pub use model::Document;

use decode::Decoder;
use model::{Action, FirewallRule};
use yaml::Pos;

/// A decoded document and where it came from.
#[derive(Debug, Clone)]
pub struct Located {
    pub file: String,
    pub pos: Pos,
    pub doc: Document,
    /// Where each field path of the document stands.
    pub positions: std::collections::HashMap<String, Pos>,
}

/// The outcome of loading policy sources: documents, and every diagnostic.
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Located>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Decodes every document of every `(file name, text)` source and checks them together,
/// also against `existing` documents (already stored) for references.
pub fn load_sources(sources: &[(String, String)], existing: &[Document]) -> Loaded {
    let mut loaded = Loaded::default();
    for (file, text) in sources {
        let mut d = Decoder::new(file);
        match yaml::load(text) {
            Err(e) => d.error(e.pos, "", format!("YAML syntax: {}", e.message)),
            Ok(nodes) => {
                if nodes.is_empty() {
                    d.warning(Pos { line: 1, col: 1 }, "", "no documents in this file");
                }
                for node in &nodes {
                    let doc = parse::document(&mut d, node);
                    let positions = std::mem::take(&mut d.positions);
                    if let Some(doc) = doc {
                        loaded.documents.push(Located {
                            file: file.clone(),
                            pos: node.pos,
                            doc,
                            positions,
                        });
                    }
                }
            }
        }
        loaded.diagnostics.extend(d.diags);
    }
    check_together(&mut loaded, existing);
    loaded.diagnostics.sort();
    loaded.diagnostics.dedup();
    loaded
}

/// A diagnostic at `path` of document `l` (at the document's start if the path is unknown).
fn diag(l: &Located, severity: Severity, path: &str, message: String) -> Diagnostic {
    let pos = l.positions.get(path).copied().unwrap_or(l.pos);
    Diagnostic {
        file: l.file.clone(),
        line: pos.line,
        col: pos.col,
        severity,
        path: path.into(),
        message,
    }
}

/// Duplicates, unknown references and contradictory rules.
fn check_together(loaded: &mut Loaded, existing: &[Document]) {
    let mut diags = Vec::new();
    let mut seen: BTreeMap<String, &Located> = BTreeMap::new();
    for l in &loaded.documents {
        if let Some(first) = seen.insert(l.doc.key(), l) {
            diags.push(diag(
                l,
                Severity::Error,
                "metadata.name",
                format!(
                    "{} is defined twice (also at {}:{}:{})",
                    l.doc.key(),
                    first.file,
                    first.positions.get("metadata.name").unwrap_or(&first.pos).line,
                    first.positions.get("metadata.name").unwrap_or(&first.pos).col
                ),
            ));
        }
    }
    let names = |kind: &str| -> BTreeSet<String> {
        let new = loaded.documents.iter().map(|l| &l.doc);
        new.chain(existing).filter(|d| d.kind() == kind).map(|d| d.name().to_owned()).collect()
    };
    let segments = names("Segment");
    let services = names("Service");
    for l in &loaded.documents {
        let Document::Policy(p) = &l.doc else { continue };
        let Some(fw) = &p.firewall else { continue };
        for (i, rule) in fw.rules.iter().enumerate() {
            for (k, peer) in rule.peers.iter().enumerate() {
                if !segments.contains(peer) {
                    diags.push(diag(
                        l,
                        Severity::Error,
                        &format!("spec.firewall.rules[{i}].peers[{k}]"),
                        format!("unknown segment {peer:?}"),
                    ));
                }
            }
            for (k, svc) in rule.services.iter().enumerate() {
                if !services.contains(svc) {
                    diags.push(diag(
                        l,
                        Severity::Error,
                        &format!("spec.firewall.rules[{i}].services[{k}]"),
                        format!("unknown service {svc:?}"),
                    ));
                }
            }
        }
        for (i, j) in contradictions(&fw.rules) {
            diags.push(diag(
                l,
                Severity::Error,
                &format!("spec.firewall.rules[{j}]"),
                format!("contradicts rules[{i}]: the same traffic is both allowed and denied"),
            ));
        }
    }
    loaded.diagnostics.extend(diags);
}

/// Pairs of rules (i < j) that match the same traffic with opposite actions.
fn contradictions(rules: &[FirewallRule]) -> Vec<(usize, usize)> {
    let same = |a: &FirewallRule, b: &FirewallRule| {
        fn set(v: &[String]) -> BTreeSet<&String> {
            v.iter().collect()
        }
        a.direction == b.direction
            && a.interface == b.interface
            && set(&a.peers) == set(&b.peers)
            && set(&a.services) == set(&b.services)
    };
    let mut out = Vec::new();
    for (i, a) in rules.iter().enumerate() {
        for (j, b) in rules.iter().enumerate().skip(i + 1) {
            if a.action != b.action
                && same(a, b)
                && matches!(
                    (a.action, b.action),
                    (Action::Allow, Action::Deny) | (Action::Deny, Action::Allow)
                )
            {
                out.push((i, j));
            }
        }
    }
    out
}

/// Reads `paths` (files, or directories of `*.yaml`/`*.yml`, sorted) as sources.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(format!("{}: no .yaml or .yml files in this directory", p.display()));
            }
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((display(f), text))
        })
        .collect()
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests;
