//! Staged rollouts. Records of kind `bulwark.rollout`, written through Raft:
//! - `released`: [`Released`], the documents agents resolve against (with, per document,
//!   the revision it was released at). Absent until the first staged apply: then agents
//!   resolve against the stored documents, as before staging existed.
//! - `current`: the active [`Rollout`] (running, paused or halted): its canaries resolve
//!   against the target revision's documents.
//! - `last`: the last [`Ended`] rollout; its canaries' desired states count its revision,
//!   so a canary sent back to the released documents gets a newer revision.
//!
//! The driver ([`spawn_driver`]) runs on every node and acts only while that node leads;
//! everything it needs is in the records, so it survives leader failover.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Document;
use super::store::{self as policy_store, documents_at};
use crate::fleet::{self, EnforcerState};
use crate::node::{Consistency, Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::store::{Command, Proposal, Record};

pub const KIND: &str = "bulwark.rollout";
const RELEASED: &str = "released";
const CURRENT: &str = "current";
const LAST: &str = "last";
/// The agent event that means a canary's firewall change was rolled back.
pub const ROLLBACK_EVENT: &str = "commit-confirmed-rollback";

/// Stands for the revision of the write that stores it (unknown before it is applied);
/// [`released`] reads it as the record's mod revision.
pub const THIS_WRITE: u64 = u64::MAX;

/// The released documents. A revision of [`THIS_WRITE`] stands for the record's own mod
/// revision (the write that released them), resolved by [`released`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Released {
    /// The documents revision released.
    pub revision: u64,
    /// Each document with the revision it was released at.
    pub documents: Vec<(Document, u64)>,
    /// The revision of the last release that removed a policy from some agents (a policy
    /// deleted or its selector changed): every agent's desired state counts it.
    pub narrowed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Running,
    Paused,
    Halted,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Halted => "halted",
        }
    }
}

/// An active rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollout {
    /// The documents revision rolled out.
    pub target: u64,
    /// The documents at `target`.
    pub documents: Vec<Document>,
    /// The canary agents, chosen when the rollout started.
    pub canaries: Vec<String>,
    /// How they were chosen, in words (`canary role=ct`, `percent 10`).
    pub selection: String,
    pub wait_ms: u64,
    pub started_ms: i64,
    /// When the canaries must have confirmed (while running).
    pub deadline_ms: i64,
    /// Wait left when paused.
    pub remaining_ms: u64,
    pub phase: Phase,
    /// Why it halted or paused.
    pub reason: String,
}

/// How the last rollout ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub target: u64,
    pub canaries: Vec<String>,
    /// `completed` or `aborted`.
    pub outcome: String,
    pub reason: String,
    pub at_ms: i64,
}

fn read_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}

fn get(reader: &Reader, key: &str) -> Result<Option<Record>, NodeError> {
    reader.get(KIND, key).map_err(read_err)
}

fn decode<T: serde::de::DeserializeOwned>(r: &Record) -> Result<T, NodeError> {
    serde_json::from_slice(&r.value)
        .map_err(|e| NodeError::Internal(format!("corrupt {KIND}/{} record: {e}", r.key)))
}

fn put<T: Serialize>(key: &str, value: &T, expect: u64) -> Result<Command, NodeError> {
    Ok(Command::Put {
        kind: KIND.into(),
        key: key.into(),
        value: serde_json::to_vec(value).map_err(read_err)?,
        expect_mod_revision: Some(expect),
    })
}

/// The released record with every [`THIS_WRITE`] resolved, and its mod revision.
pub fn released(reader: &Reader) -> Result<Option<(Released, u64)>, NodeError> {
    let Some(r) = get(reader, RELEASED)? else { return Ok(None) };
    let mut rel: Released = decode(&r)?;
    let own = |x: u64| if x == THIS_WRITE { r.mod_revision } else { x };
    rel.revision = own(rel.revision);
    rel.narrowed = own(rel.narrowed);
    for (_, rev) in &mut rel.documents {
        *rev = own(*rev);
    }
    Ok(Some((rel, r.mod_revision)))
}

/// The active rollout, its create revision (when the canaries switched) and mod revision.
pub fn current(reader: &Reader) -> Result<Option<(Rollout, u64, u64)>, NodeError> {
    Ok(match get(reader, CURRENT)? {
        Some(r) => Some((decode(&r)?, r.create_revision, r.mod_revision)),
        None => None,
    })
}

/// The last ended rollout and the revision it ended at.
pub fn last(reader: &Reader) -> Result<Option<(Ended, u64)>, NodeError> {
    Ok(match get(reader, LAST)? {
        Some(r) => Some((decode(&r)?, r.mod_revision)),
        None => None,
    })
}

/// Whether going from `before` to `after` removes a policy from some agents.
pub fn narrows(before: &[Document], after: &[Document]) -> bool {
    before.iter().any(|b| match b {
        Document::Policy(p) => !after.iter().any(|a| match a {
            Document::Policy(q) => q.name == p.name && q.selector == p.selector,
            _ => false,
        }),
        _ => false,
    })
}

/// The released record after releasing `after` on top of `prev`: documents unchanged since
/// `prev` keep their revision, changed ones get this write's ([`THIS_WRITE`]).
pub fn release(prev: &Released, after: &[Document], revision: u64) -> Released {
    let before: Vec<Document> = prev.documents.iter().map(|(d, _)| d.clone()).collect();
    let documents = after
        .iter()
        .map(|d| {
            let kept = prev.documents.iter().find(|(p, _)| p == d).map_or(THIS_WRITE, |(_, r)| *r);
            (d.clone(), kept)
        })
        .collect();
    let narrowed = if narrows(&before, after) { THIS_WRITE } else { prev.narrowed };
    Released { revision, documents, narrowed }
}

/// The commands a policy write adds so that the released documents stay right.
/// Staged: the first staged write records what is released now (the stored documents,
/// `before`). Not staged: refused during a rollout; otherwise `after` is released with the
/// write itself (when a released record exists; without one, the stored documents are
/// what agents get).
pub fn guard_write(
    reader: &Reader,
    staged: bool,
    before: &[(Document, u64)],
    after: &[Document],
) -> Result<Vec<Command>, NodeError> {
    let active = current(reader)?;
    let existing = released(reader)?;
    if staged {
        if existing.is_some() {
            return Ok(Vec::new());
        }
        let narrowed = policy_store::narrowed(reader)?;
        let rel = Released {
            revision: policy_store::generation(reader)?,
            documents: before.to_vec(),
            narrowed,
        };
        return Ok(vec![put(RELEASED, &rel, 0)?]);
    }
    if let Some((r, _, _)) = active {
        return Err(NodeError::Refused(format!(
            "a rollout of revision {} is {}; stage the change (--staged), or abort the rollout first",
            r.target,
            r.phase.name()
        )));
    }
    match existing {
        None => Ok(Vec::new()),
        Some((rel, mod_rev)) => {
            Ok(vec![put(RELEASED, &release(&rel, after, THIS_WRITE), mod_rev)?])
        }
    }
}

/// How canaries are chosen.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Agents whose labels have every pair.
    Labels(Vec<(String, String)>),
    /// This percentage of agents, by a stable hash of their id (at least one agent).
    Percent(u32),
}

/// A stable hash of an agent id in 0..100 (FNV-1a), the same on every node and release.
pub fn bucket(id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as u32
}

/// The canaries `selection` picks among `agents` (non-revoked ids), sorted.
pub fn pick(
    selection: &Selection,
    agents: &[(String, std::collections::BTreeMap<String, String>)],
) -> Vec<String> {
    let mut out: Vec<String> = match selection {
        Selection::Labels(pairs) => agents
            .iter()
            .filter(|(_, labels)| pairs.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(id, _)| id.clone())
            .collect(),
        Selection::Percent(n) => {
            let mut chosen: Vec<String> =
                agents.iter().filter(|(id, _)| bucket(id) < *n).map(|(id, _)| id.clone()).collect();
            if chosen.is_empty()
                && let Some((id, _)) = agents.iter().min_by_key(|(id, _)| (bucket(id), id.clone()))
            {
                chosen.push(id.clone());
            }
            chosen
        }
    };
    out.sort();
    out
}

/// Starts a rollout of the staged documents revision `target`.
pub async fn start(
    node: &Node,
    target: u64,
    selection: Selection,
    wait: Duration,
) -> Result<(Rollout, u64), NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let reader = &node.reader;
    if let Some((r, _, _)) = current(reader)? {
        return Err(NodeError::Refused(format!(
            "a rollout of revision {} is already {}; abort it first",
            r.target,
            r.phase.name()
        )));
    }
    let Some((rel, _)) = released(reader)? else {
        return Err(NodeError::Refused(
            "nothing is staged: apply with --staged first (every stored revision is released)"
                .into(),
        ));
    };
    let generation = policy_store::generation(reader)?;
    if target <= rel.revision || target > generation {
        return Err(NodeError::Invalid(format!(
            "revision {target} is not staged: the released revision is {}, the newest stored is {generation}",
            rel.revision
        )));
    }
    let documents = documents_at(reader, target)?;
    let agents: Vec<_> = crate::security::agents(reader)?
        .into_iter()
        .filter(|(_, revoked, _)| revoked.is_none())
        .map(|(a, _, _)| (a.id, a.labels))
        .collect();
    let canaries = pick(&selection, &agents);
    let words = match &selection {
        Selection::Labels(pairs) => {
            let p: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("canary {}", p.join(","))
        }
        Selection::Percent(n) => format!("percent {n}"),
    };
    if canaries.is_empty() {
        return Err(NodeError::Invalid(format!("{words} selects no enrolled agent")));
    }
    let now = fleet::now_ms();
    let rollout = Rollout {
        target,
        documents,
        canaries,
        selection: words,
        wait_ms: wait.as_millis() as u64,
        started_ms: now,
        deadline_ms: now + wait.as_millis() as i64,
        remaining_ms: 0,
        phase: Phase::Running,
        reason: String::new(),
    };
    let cmd = put(CURRENT, &rollout, 0)?;
    let written = node.write(Proposal { request_id: Some(rand::random()), command: cmd }).await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable("the rollout state changed meanwhile; retry".into()));
    }
    Ok((rollout, written.outcome.revision))
}

/// Rewrites the active rollout with `change` (compare-and-set).
async fn update(
    node: &Node,
    change: impl FnOnce(&mut Rollout) -> Result<(), NodeError>,
) -> Result<Rollout, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let Some((mut r, _, mod_rev)) = current(&node.reader)? else {
        return Err(NodeError::NotFound("no rollout is active".into()));
    };
    change(&mut r)?;
    let cmd = put(CURRENT, &r, mod_rev)?;
    let written = node.write(Proposal { request_id: Some(rand::random()), command: cmd }).await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable("the rollout changed meanwhile; retry".into()));
    }
    Ok(r)
}

pub async fn pause(node: &Node, why: &str) -> Result<Rollout, NodeError> {
    update(node, |r| match r.phase {
        Phase::Running => {
            r.remaining_ms = (r.deadline_ms - fleet::now_ms()).max(0) as u64;
            r.phase = Phase::Paused;
            r.reason = why.to_owned();
            Ok(())
        }
        p => Err(NodeError::Refused(format!("the rollout is {}, not running", p.name()))),
    })
    .await
}

pub async fn resume(node: &Node) -> Result<Rollout, NodeError> {
    update(node, |r| match r.phase {
        Phase::Paused => {
            r.deadline_ms = fleet::now_ms() + r.remaining_ms as i64;
            r.phase = Phase::Running;
            r.reason.clear();
            Ok(())
        }
        Phase::Running => Err(NodeError::Refused("the rollout is already running".into())),
        Phase::Halted => Err(NodeError::Refused(format!(
            "the rollout halted ({}); abort it, and start a new one when the cause is fixed",
            r.reason
        ))),
    })
    .await
}

/// Ends the active rollout: `completed` releases its target to everyone, `aborted` sends
/// the canaries back to the released documents.
async fn end(
    node: &Node,
    expect: Option<u64>,
    outcome: &str,
    reason: String,
) -> Result<(Rollout, u64), NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let reader = &node.reader;
    let Some((r, _, mod_rev)) = current(reader)? else {
        return Err(NodeError::NotFound("no rollout is active".into()));
    };
    if expect.is_some_and(|e| e != mod_rev) {
        return Err(NodeError::Unavailable("the rollout changed meanwhile".into()));
    }
    let ended = Ended {
        target: r.target,
        canaries: r.canaries.clone(),
        outcome: outcome.to_owned(),
        reason,
        at_ms: fleet::now_ms(),
    };
    let mut ops = vec![
        Command::Delete {
            kind: KIND.into(),
            key: CURRENT.into(),
            expect_mod_revision: Some(mod_rev),
        },
        put(LAST, &ended, get(reader, LAST)?.map_or(0, |x| x.mod_revision))?,
    ];
    if outcome == "completed" {
        let (rel, rel_mod) = released(reader)?
            .ok_or_else(|| NodeError::Internal("a rollout without a released record".into()))?;
        ops.push(put(RELEASED, &release(&rel, &r.documents, r.target), rel_mod)?);
    }
    let cmd = Command::Txn(ops);
    let written = node.write(Proposal { request_id: Some(rand::random()), command: cmd }).await?;
    if written.outcome.conflict.is_some() {
        return Err(NodeError::Unavailable("the rollout changed meanwhile; retry".into()));
    }
    Ok((r, written.outcome.revision))
}

pub async fn abort(node: &Node) -> Result<(Rollout, u64), NodeError> {
    end(node, None, "aborted", "aborted by an operator".into()).await
}

/// One canary as the rollout sees it.
#[derive(Debug, Clone)]
pub struct CanaryView {
    pub id: String,
    pub applied_revision: u64,
    /// `confirmed`, `pending`, or `failed: why`.
    pub state: String,
}

/// What each canary says about the rollout that switched them at `since`: confirmed
/// (applied it, every managed enforcer compliant), a failure (a failed enforcer at
/// it, or a commit-confirmed rollback), or pending.
pub fn judge(reader: &Reader, r: &Rollout, since: u64) -> Result<Vec<CanaryView>, NodeError> {
    let mut out = Vec::new();
    for id in &r.canaries {
        let status = fleet::status(reader, id)?;
        let applied = status.as_ref().map_or(0, fleet::AgentStatus::applied_revision);
        let failed = status.as_ref().and_then(|s| {
            s.enforcers.iter().find(|e| e.state == EnforcerState::Failed && e.revision >= since)
        });
        let rolled_back = fleet::recent_events(reader, id, 50)?
            .into_iter()
            .find(|e| e.kind == ROLLBACK_EVENT && (e.revision >= since || e.at_ms >= r.started_ms));
        let state = if let Some(e) = failed {
            format!(
                "failed: enforcer {} failed at revision {}: {}",
                e.enforcer, e.revision, e.reason
            )
        } else if let Some(e) = rolled_back {
            format!("failed: commit-confirmed rollback: {}", e.summary)
        } else if status.as_ref().is_some_and(|s| {
            applied >= since
                && s.desired_revision >= since
                && s.enforcers.iter().all(|e| {
                    matches!(
                        e.state,
                        EnforcerState::Compliant
                            | EnforcerState::DriftedRepaired
                            | EnforcerState::NotManaged
                    )
                })
        }) {
            "confirmed".into()
        } else {
            "pending".into()
        };
        out.push(CanaryView { id: id.clone(), applied_revision: applied, state });
    }
    Ok(out)
}

/// One look at the active rollout, on the leader: advance, halt, or wait.
async fn drive(node: &Node) -> Result<(), NodeError> {
    let Some((r, since, mod_rev)) = current(&node.reader)? else { return Ok(()) };
    if r.phase != Phase::Running {
        return Ok(());
    }
    let canaries = judge(&node.reader, &r, since)?;
    let halt = |reason: String| async move {
        tracing::warn!(target_revision = r.target, %reason, "rollout halted");
        let _ = update(node, |x| {
            x.phase = Phase::Halted;
            x.reason = reason;
            Ok(())
        })
        .await?;
        Ok(())
    };
    if let Some(c) = canaries.iter().find(|c| c.state.starts_with("failed")) {
        return halt(format!("canary {} {}", c.id, c.state)).await;
    }
    if canaries.iter().all(|c| c.state == "confirmed") {
        tracing::info!(target_revision = r.target, "canaries confirmed; releasing to every agent");
        end(node, Some(mod_rev), "completed", "every canary confirmed".into()).await?;
        return Ok(());
    }
    if fleet::now_ms() > r.deadline_ms {
        let pending: Vec<&str> =
            canaries.iter().filter(|c| c.state == "pending").map(|c| c.id.as_str()).collect();
        let wait = humantime::format_duration(Duration::from_millis(r.wait_ms));
        return halt(format!("canaries did not confirm within {wait}: {}", pending.join(", ")))
            .await;
    }
    Ok(())
}

/// Runs the rollout driver: every second, if this node leads, [`drive`].
pub fn spawn_driver(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if node.raft.metrics().borrow().current_leader != Some(node.id) {
                continue;
            }
            if let Err(e) = drive(&node).await {
                tracing::debug!(error = %e, "rollout driver");
            }
        }
    });
}

/// The agents of `ids` as a set.
pub fn id_set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}
