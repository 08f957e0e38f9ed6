//! Policy documents in the replicated store (kind `bulwark.policy`, key `Kind/name`,
//! canonical JSON), applied atomically: all documents of one apply in one Raft entry.

use std::collections::{BTreeMap, BTreeSet};

use super::resolve::{Impact, Inputs, SegmentIndex, impact, resolve_with};
use super::{Document, load_sources};
use crate::node::{Consistency, Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::store::{ChangeOp, Command, Proposal};

pub const KIND: &str = "bulwark.policy";
/// One record whose mod revision is the revision of the last policy change, deletes included.
const GENERATION: (&str, &str) = ("bulwark.policy-meta", "generation");

/// One record whose mod revision is the revision of the last change that removed a policy
/// from some agents (a policy deleted, or its selector changed).
const NARROWED: (&str, &str) = ("bulwark.policy-meta", "narrowed");

/// The commands that record a change from `before` to `after`: the generation, the
/// narrowing marker when it removes a policy from agents, and the released documents
/// ([`super::rollout::guard_write`]).
fn meta_commands(
    reader: &Reader,
    staged: bool,
    before: &[(Document, u64)],
    after: &[Document],
) -> Result<Vec<Command>, NodeError> {
    let mut ops = super::rollout::guard_write(reader, staged, before, after)?;
    let plain: Vec<Document> = before.iter().map(|(d, _)| d.clone()).collect();
    if super::rollout::narrows(&plain, after) {
        ops.push(Command::Put {
            kind: NARROWED.0.into(),
            key: NARROWED.1.into(),
            value: Vec::new(),
            expect_mod_revision: None,
        });
    }
    ops.push(bump_generation());
    Ok(ops)
}

/// The revision of the last change that removed a policy from some agents (0: never).
pub fn narrowed(reader: &Reader) -> Result<u64, NodeError> {
    Ok(reader
        .get(NARROWED.0, NARROWED.1)
        .map_err(|e| NodeError::Internal(e.to_string()))?
        .map_or(0, |r| r.mod_revision))
}

fn bump_generation() -> Command {
    Command::Put {
        kind: GENERATION.0.into(),
        key: GENERATION.1.into(),
        value: Vec::new(),
        expect_mod_revision: None,
    }
}

/// Whether any change in `(from, to]` touches what resolution reads (policy documents,
/// agents, revocations). True when the history no longer holds `from + 1`.
pub fn touches_resolution(reader: &Reader, from: u64, to: u64) -> bool {
    const INPUTS: [&str; 4] =
        [KIND, GENERATION.0, crate::security::AGENT, crate::security::REVOKED_AGENT];
    match reader.changes(from, to) {
        Ok(changes) => changes.iter().any(|c| INPUTS.contains(&c.record.kind.as_str())),
        Err(_) => true,
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
    /// Agents whose desired state changes, grouped by identical change.
    pub impacts: Vec<ImpactGroup>,
    pub agents_affected: usize,
}

/// One change and the agents (id, hostname) it reaches.
pub type ImpactGroup = (Impact, Vec<(String, String)>);

/// The agents whose desired state differs between two document sets, grouped, and how
/// many they are.
pub fn impacts(
    reader: &Reader,
    before: &[Document],
    after: &[Document],
) -> Result<(Vec<ImpactGroup>, usize), NodeError> {
    let agents = crate::security::agents(reader)?;
    let mut groups: BTreeMap<Impact, Vec<(String, String)>> = BTreeMap::new();
    let mut affected = 0;
    let b = Inputs { documents: before, agents: &agents, documents_revision: 0 };
    let a = Inputs { documents: after, agents: &agents, documents_revision: 0 };
    let (bi, ai) = (SegmentIndex::new(&b), SegmentIndex::new(&a));
    for (agent, revoked, _) in &agents {
        if revoked.is_some() {
            continue;
        }
        let change = impact(&resolve_with(&b, &bi, agent, 0), &resolve_with(&a, &ai, agent, 0));
        if !change.is_empty() {
            affected += 1;
            groups.entry(change).or_default().push((agent.id.clone(), agent.hostname.clone()));
        }
    }
    Ok((groups.into_iter().collect(), affected))
}

/// Warnings for selectors that match no enrolled agent.
fn selector_warnings(reader: &Reader, loaded: &super::Loaded) -> Result<Vec<String>, NodeError> {
    let agents = crate::security::agents(reader)?;
    let mut out = Vec::new();
    for l in &loaded.documents {
        let selector = match &l.doc {
            Document::Policy(p) => Some(&p.selector),
            Document::Segment(s) => s.selector.as_ref(),
            Document::Service(_) => None,
        };
        if let Some(sel) = selector
            && !sel.match_labels.is_empty()
            && !agents.iter().any(|(a, revoked, _)| revoked.is_none() && sel.matches(&a.labels))
        {
            out.push(format!(
                "{}:{}:{}: warning: {}: spec.selector matches no enrolled agent (yet)",
                l.file,
                l.pos.line,
                l.pos.col,
                l.doc.key()
            ));
        }
    }
    Ok(out)
}

/// Validates `sources` against each other and the stored documents; stores them all in
/// one transaction (compare-and-set on every document read), or nothing.
pub async fn apply(
    node: &Node,
    sources: &[(String, String)],
    dry_run: bool,
    staged: bool,
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
        let mut warnings: Vec<String> =
            loaded.diagnostics.iter().map(ToString::to_string).collect();
        warnings.extend(selector_warnings(&node.reader, &loaded)?);
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
        let mut after: Vec<Document> = existing_docs
            .iter()
            .filter(|d| !loaded.documents.iter().any(|l| l.doc.key() == d.key()))
            .cloned()
            .collect();
        after.extend(loaded.documents.iter().map(|l| l.doc.clone()));
        let (impacts, agents_affected) = impacts(&node.reader, &existing_docs, &after)?;
        if dry_run || ops.is_empty() {
            return Ok(Applied { revision: 0, changes, warnings, impacts, agents_affected });
        }
        ops.extend(meta_commands(&node.reader, staged, &existing, &after)?);
        let written = node
            .write(Proposal { request_id: Some(rand::random()), command: Command::Txn(ops) })
            .await?;
        if written.outcome.conflict.is_none() {
            let revision = written.outcome.revision;
            return Ok(Applied { revision, changes, warnings, impacts, agents_affected });
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
    let after: Vec<Document> = docs.iter().filter(|d| d.key() != key).cloned().collect();
    let mut ops = vec![Command::Delete {
        kind: KIND.into(),
        key: key.into(),
        expect_mod_revision: Some(*rev),
    }];
    ops.extend(meta_commands(&node.reader, false, &existing, &after)?);
    let cmd = Command::Txn(ops);
    let written = node.write(Proposal { request_id: Some(rand::random()), command: cmd }).await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable(format!("{key} changed while deleting it; retry")));
    }
    Ok(written.outcome.revision)
}

fn decode_doc(value: &[u8], key: &str) -> Result<Document, NodeError> {
    serde_json::from_slice(value)
        .map_err(|e| NodeError::Internal(format!("corrupt policy document {key}: {e}")))
}

/// Every retained change of `key` as (revision, put or delete, document before a delete).
pub fn history(reader: &Reader, key: &str) -> Result<Vec<(u64, ChangeOp, Document)>, NodeError> {
    let read = |e: crate::raft::state_machine::ReadError| NodeError::Internal(e.to_string());
    let oldest = reader.oldest_retained().map_err(read)?.unwrap_or(1);
    let changes = reader.changes(oldest.saturating_sub(1), reader.revision()).map_err(read)?;
    changes
        .into_iter()
        .filter(|c| c.record.kind == KIND && c.record.key == key)
        .map(|c| Ok((c.revision, c.op, decode_doc(&c.record.value, key)?)))
        .collect()
}

/// The documents as they were at `revision`, reconstructed from the current ones and the
/// retained history.
pub fn documents_at(reader: &Reader, revision: u64) -> Result<Vec<Document>, NodeError> {
    let read = |e: crate::raft::state_machine::ReadError| NodeError::Internal(e.to_string());
    if revision > reader.revision() {
        return Err(NodeError::Invalid(format!(
            "revision {revision} is in the future (current: {})",
            reader.revision()
        )));
    }
    let oldest = reader.oldest_retained().map_err(read)?.unwrap_or(reader.revision() + 1);
    let changes = reader.changes(oldest.saturating_sub(1), reader.revision()).map_err(read)?;
    let changes: Vec<_> = changes.into_iter().filter(|c| c.record.kind == KIND).collect();
    let mut keys: BTreeSet<String> = changes.iter().map(|c| c.record.key.clone()).collect();
    let current = stored(reader)?;
    keys.extend(current.iter().map(|(d, _)| d.key()));
    let mut out = Vec::new();
    for key in keys {
        let of_key: Vec<_> = changes.iter().filter(|c| c.record.key == key).collect();
        let after: Vec<_> = of_key.iter().filter(|c| c.revision > revision).collect();
        let value = if after.is_empty() {
            current.iter().find(|(d, _)| d.key() == key).map(|(d, _)| d.clone())
        } else if let Some(before) = of_key.iter().rev().find(|c| c.revision <= revision) {
            match before.op {
                ChangeOp::Put => Some(decode_doc(&before.record.value, &key)?),
                ChangeOp::Delete => None,
            }
        } else if after[0].record.create_revision > revision {
            None
        } else {
            return Err(NodeError::Refused(format!(
                "the retained history no longer reaches revision {revision} for {key} (oldest retained: {oldest})"
            )));
        };
        out.extend(value);
    }
    Ok(out)
}

/// Makes the stored documents what they were at `revision`, in one transaction.
pub async fn rollback(
    node: &Node,
    revision: u64,
    dry_run: bool,
    staged: bool,
) -> Result<Applied, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let target = documents_at(&node.reader, revision)?;
    let existing = stored(&node.reader)?;
    let existing_docs: Vec<Document> = existing.iter().map(|(d, _)| d.clone()).collect();
    let mut ops = Vec::new();
    let mut changes = Vec::new();
    for doc in &target {
        let key = doc.key();
        let current = existing.iter().find(|(d, _)| d.key() == key);
        let change = match current {
            None => "created",
            Some((d, _)) if d == doc => continue,
            Some(_) => "updated",
        };
        changes.push((key.clone(), change));
        let value = serde_json::to_vec(doc).map_err(|e| NodeError::Internal(e.to_string()))?;
        ops.push(Command::Put {
            kind: KIND.into(),
            key,
            value,
            expect_mod_revision: Some(current.map_or(0, |(_, r)| *r)),
        });
    }
    for (doc, rev) in &existing {
        if !target.iter().any(|t| t.key() == doc.key()) {
            changes.push((doc.key(), "deleted"));
            ops.push(Command::Delete {
                kind: KIND.into(),
                key: doc.key(),
                expect_mod_revision: Some(*rev),
            });
        }
    }
    let (impacts, agents_affected) = impacts(&node.reader, &existing_docs, &target)?;
    if dry_run || ops.is_empty() {
        return Ok(Applied {
            revision: 0,
            changes,
            warnings: Vec::new(),
            impacts,
            agents_affected,
        });
    }
    ops.extend(meta_commands(&node.reader, staged, &existing, &target)?);
    let written = node
        .write(Proposal { request_id: Some(rand::random()), command: Command::Txn(ops) })
        .await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable(
            "policy documents changed during the rollback; retry".into(),
        ));
    }
    let revision = written.outcome.revision;
    Ok(Applied { revision, changes, warnings: Vec::new(), impacts, agents_affected })
}
