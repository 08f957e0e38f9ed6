//! Policy documents in the replicated store (kind `bulwark.policy`, key `Kind/name`,
//! canonical JSON), applied atomically: all documents of one apply in one Raft entry.

use std::collections::BTreeSet;

use super::{Document, load_sources};
use crate::node::{Consistency, Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::store::{Command, Proposal};

pub const KIND: &str = "bulwark.policy";
/// One record whose mod revision is the revision of the last policy change, deletes included.
const GENERATION: (&str, &str) = ("bulwark.policy-meta", "generation");

fn bump_generation() -> Command {
    Command::Put {
        kind: GENERATION.0.into(),
        key: GENERATION.1.into(),
        value: Vec::new(),
        expect_mod_revision: None,
    }
}

/// The revision of the last change to any policy document (0: never).
pub fn generation(reader: &Reader) -> Result<u64, NodeError> {
    Ok(reader
        .get(GENERATION.0, GENERATION.1)
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map_or(0, |r| r.mod_revision))
}

/// Every stored document with its mod revision, in key order.
pub fn stored(reader: &Reader) -> Result<Vec<(Document, u64)>, NodeError> {
    let (records, _) = reader.list(KIND).map_err(|e| NodeError::Internal(e.to_string()))?;
    records
        .iter()
        .map(|r| {
            serde_json::from_slice(&r.value)
                .map(|d| (d, r.mod_revision))
                .map_err(|e| NodeError::Internal(format!("corrupt policy document {}: {e}", r.key)))
        })
        .collect()
}

/// What an apply did (or would do).
#[derive(Debug, Default)]
pub struct Applied {
    pub revision: u64,
    pub changes: Vec<(String, &'static str)>,
    pub warnings: Vec<String>,
}

/// Validates `sources` against each other and the stored documents; stores them all in
/// one transaction (compare-and-set on every document read), or nothing.
pub async fn apply(
    node: &Node,
    sources: &[(String, String)],
    dry_run: bool,
) -> Result<Applied, NodeError> {
    for _attempt in 0..5 {
        node.read_barrier(Consistency::Linearizable).await?;
        let existing = stored(&node.reader)?;
        let existing_docs: Vec<Document> = existing.iter().map(|(d, _)| d.clone()).collect();
        let loaded = load_sources(sources, &existing_docs);
        if loaded.has_errors() {
            let lines: Vec<String> = loaded.errors().map(ToString::to_string).collect();
            let plural = if lines.len() == 1 { "" } else { "s" };
            return Err(NodeError::Invalid(format!(
                "{} error{plural}; nothing was stored:\n{}",
                lines.len(),
                lines.join("\n")
            )));
        }
        if loaded.documents.is_empty() {
            return Err(NodeError::Invalid("no documents to apply".into()));
        }
        let warnings = loaded.diagnostics.iter().map(ToString::to_string).collect();
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        for l in &loaded.documents {
            let key = l.doc.key();
            let current = existing.iter().find(|(d, _)| d.key() == key);
            let change = match current {
                None => "created",
                Some((d, _)) if d == &l.doc => "unchanged",
                Some(_) => "updated",
            };
            changes.push((key.clone(), change));
            if change != "unchanged" {
                let value =
                    serde_json::to_vec(&l.doc).map_err(|e| NodeError::Internal(e.to_string()))?;
                ops.push(Command::Put {
                    kind: KIND.into(),
                    key,
                    value,
                    expect_mod_revision: Some(current.map_or(0, |(_, rev)| *rev)),
                });
            }
        }
        if dry_run || ops.is_empty() {
            return Ok(Applied { revision: 0, changes, warnings });
        }
        ops.push(bump_generation());
        let written = node
            .write(Proposal { request_id: Some(rand::random()), command: Command::Txn(ops) })
            .await?;
        if written.outcome.conflict.is_none() {
            return Ok(Applied { revision: written.outcome.revision, changes, warnings });
        }
        // Another apply changed a document in between: validate again against it.
    }
    Err(NodeError::Unavailable("policy documents are changing concurrently; retry".into()))
}

/// Documents that refer to `key` (a Segment or Service).
fn referrers(docs: &[Document], key: &str) -> Vec<String> {
    let Some((kind, name)) = key.split_once('/') else { return Vec::new() };
    docs.iter()
        .filter_map(|d| match d {
            Document::Policy(p) => {
                let uses = p.firewall.iter().flat_map(|f| &f.rules).any(|r| match kind {
                    "Segment" => r.peers.iter().any(|x| x == name),
                    "Service" => r.services.iter().any(|x| x == name),
                    _ => false,
                });
                uses.then(|| d.key())
            }
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Deletes one document, refusing while others refer to it.
pub async fn delete(node: &Node, key: &str) -> Result<u64, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let existing = stored(&node.reader)?;
    let Some((_, rev)) = existing.iter().find(|(d, _)| d.key() == key) else {
        return Err(NodeError::NotFound(format!(
            "no document {key} (keys look like Policy/modalities)"
        )));
    };
    let docs: Vec<Document> = existing.iter().map(|(d, _)| d.clone()).collect();
    let users = referrers(&docs, key);
    if !users.is_empty() {
        return Err(NodeError::Refused(format!("{key} is still used by {}", users.join(", "))));
    }
    let cmd = Command::Txn(vec![
        Command::Delete { kind: KIND.into(), key: key.into(), expect_mod_revision: Some(*rev) },
        bump_generation(),
    ]);
    let written = node.write(Proposal { request_id: Some(rand::random()), command: cmd }).await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable(format!("{key} changed while deleting it; retry")));
    }
    Ok(written.outcome.revision)
}
