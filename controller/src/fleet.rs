//! What agents report about themselves (per-enforcer status, events, which node they
//! stream from) and the fleet view built from it.
//!
//! Reports are stored as notes ([`Command::Note`]): they take no revision, so a report
//! never wakes desired-state streams or watchers. Keys:
//! - `status/<agent>`: the agent's latest [`AgentStatus`] (replaced)
//! - `presence/<agent>/<node>`: [`Presence`], written by the node serving the agent's stream
//! - `event/<agent>/<event id>`: an [`AgentEvent`], stored once per agent-assigned id
//! - `beat/<node>`: [`Beat`], every [`BEAT_EVERY`] from each node: a node whose beat is older
//!   than [`BEAT_EXPIRY`] is gone, and so are the streams it served.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::node::{Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::security::{self, AgentRecord, HostFacts};
use crate::store::Command;

pub const BEAT_EVERY: Duration = Duration::from_secs(5);
pub const BEAT_EXPIRY: Duration = Duration::from_secs(20);
/// Most events one report may carry.
pub const MAX_REPORT_EVENTS: usize = 1000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnforcerState {
    NotManaged,
    Compliant,
    DriftedRepaired,
    Failed,
    AuditNoncompliant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcerReport {
    pub enforcer: String,
    pub revision: u64,
    pub state: EnforcerState,
    pub reason: String,
    pub checked_at_ms: i64,
    pub details: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The newest desired-state revision the agent holds.
    pub desired_revision: u64,
    pub enforcers: Vec<EnforcerReport>,
    pub agent_version: String,
    pub reported_at_ms: i64,
}

impl AgentStatus {
    /// The revision every managed enforcer has been judged against (0: none yet).
    pub fn applied_revision(&self) -> u64 {
        self.enforcers
            .iter()
            .filter(|e| e.state != EnforcerState::NotManaged)
            .map(|e| e.revision)
            .min()
            .unwrap_or(self.desired_revision)
    }

    pub fn any(&self, state: EnforcerState) -> bool {
        self.enforcers.iter().any(|e| e.state == state)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    pub id: String,
    pub kind: String,
    pub enforcer: String,
    pub at_ms: i64,
    pub revision: u64,
    pub summary: String,
    pub before: String,
    pub after: String,
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The serving node's boot (its streams end when it restarts).
    pub boot: u64,
    pub connected: bool,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub boot: u64,
    pub at_ms: i64,
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, NodeError> {
    postcard::to_stdvec(v).map_err(|e| NodeError::Internal(format!("encoding a note: {e}")))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, NodeError> {
    postcard::from_bytes(bytes)
        .map_err(|e| NodeError::Internal(format!("corrupt note {key} in storage: {e}")))
}

fn read_err(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(e.to_string())
}

fn note(key: String, value: Vec<u8>, replace: bool) -> Command {
    Command::Note { key, value, replace }
}

/// An agent's report, as the agent sent it (minus the wire format).
#[derive(Debug, Default)]
pub struct Report {
    pub desired_revision: u64,
    /// Empty: keep the last reported enforcer states.
    pub enforcers: Vec<EnforcerReport>,
    pub events: Vec<AgentEvent>,
    pub facts: Option<HostFacts>,
    pub agent_version: String,
}

/// Commits `report` of agent `id` (status, events and changed facts in one entry) and
/// returns the ids of the events now stored.
pub async fn report(node: &Node, id: &str, report: Report) -> Result<Vec<String>, NodeError> {
    if report.events.len() > MAX_REPORT_EVENTS {
        return Err(NodeError::Invalid(format!(
            "a report carries at most {MAX_REPORT_EVENTS} events, not {}; send them in batches",
            report.events.len()
        )));
    }
    if let Some(bad) = report.events.iter().find(|e| e.id.is_empty() || e.id.contains('/')) {
        return Err(NodeError::Invalid(format!(
            "event id {:?} must be non-empty and without '/'",
            bad.id
        )));
    }
    let mut ops = Vec::new();
    let previous = status(&node.reader, id)?;
    let enforcers = if report.enforcers.is_empty() {
        previous.map(|s| s.enforcers).unwrap_or_default()
    } else {
        report.enforcers
    };
    let status = AgentStatus {
        desired_revision: report.desired_revision,
        enforcers,
        agent_version: report.agent_version,
        reported_at_ms: now_ms(),
    };
    ops.push(note(format!("status/{id}"), encode(&status)?, true));
    let stored: Vec<String> = report.events.iter().map(|e| e.id.clone()).collect();
    for event in &report.events {
        ops.push(note(format!("event/{id}/{}", event.id), encode(event)?, false));
    }
    if let Some(facts) = report.facts
        && let Some(op) = security::facts_update(&node.reader, id, facts)?
    {
        ops.push(op);
    }
    node.write(Command::Txn(ops).into()).await?;
    Ok(stored)
}

/// Records that agent `id` streams from this node now (`connected`) or stopped.
pub async fn set_presence(node: &Node, id: &str, connected: bool) -> Result<(), NodeError> {
    let presence = Presence { boot: node.boot, connected, at_ms: now_ms() };
    let key = format!("presence/{id}/{}", node.id);
    node.write(note(key, encode(&presence)?, true).into()).await.map(|_| ())
}

/// Writes this node's beat every [`BEAT_EVERY`] while the node runs.
pub fn spawn_beats(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(BEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let beat = Beat { boot: node.boot, at_ms: now_ms() };
            let Ok(value) = encode(&beat) else { continue };
            if node.raft.metrics().borrow().current_leader.is_none() {
                continue;
            }
            if let Err(e) = node.write(note(format!("beat/{}", node.id), value, true).into()).await
            {
                tracing::debug!(error = %e, "node beat not written");
            }
        }
    });
}

pub fn status(reader: &Reader, id: &str) -> Result<Option<AgentStatus>, NodeError> {
    let key = format!("status/{id}");
    match reader.note(&key).map_err(read_err)? {
        Some(bytes) => Ok(Some(decode(&key, &bytes)?)),
        None => Ok(None),
    }
}

/// The newest `n` events of agent `id`, newest first.
pub fn recent_events(reader: &Reader, id: &str, n: usize) -> Result<Vec<AgentEvent>, NodeError> {
    reader
        .last_notes(&format!("event/{id}/"), n)
        .map_err(read_err)?
        .iter()
        .map(|(k, v)| decode(k, v))
        .collect()
}

/// One agent as the fleet view shows it.
#[derive(Debug, Clone)]
pub struct FleetEntry {
    pub agent: AgentRecord,
    pub revoked: Option<String>,
    /// The revision of the agent's record (and revocation).
    pub record_revision: u64,
    pub online: bool,
    /// The node it streams from (or last streamed from); 0: never connected.
    pub node: u64,
    pub last_seen_ms: i64,
    pub status: Option<AgentStatus>,
}

/// Every enrolled agent with its presence and status, judged at `now_ms`.
pub fn view(reader: &Reader, now_ms: i64) -> Result<Vec<FleetEntry>, NodeError> {
    let beats: BTreeMap<u64, Beat> = reader
        .notes("beat/")
        .map_err(read_err)?
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("beat/")?.parse().ok()?, decode(k, v).ok()?)))
        .collect();
    let alive = |node: u64, boot: u64| {
        beats
            .get(&node)
            .is_some_and(|b| b.boot == boot && now_ms - b.at_ms < BEAT_EXPIRY.as_millis() as i64)
    };
    let mut presence: BTreeMap<String, Vec<(u64, Presence)>> = BTreeMap::new();
    for (k, v) in reader.notes("presence/").map_err(read_err)? {
        let Some((agent, node)) = k.strip_prefix("presence/").and_then(|r| r.rsplit_once('/'))
        else {
            continue;
        };
        let Ok(node) = node.parse::<u64>() else { continue };
        presence.entry(agent.to_owned()).or_default().push((node, decode(&k, &v)?));
    }
    security::agents(reader)?
        .into_iter()
        .map(|(agent, revoked, record_revision)| {
            let seen = presence.remove(&agent.id).unwrap_or_default();
            let live = seen.iter().find(|(n, p)| p.connected && alive(*n, p.boot));
            let latest = seen.iter().max_by_key(|(_, p)| p.at_ms);
            let status = status(reader, &agent.id)?;
            let last_seen_ms = latest
                .map_or(0, |(_, p)| p.at_ms)
                .max(status.as_ref().map_or(0, |s| s.reported_at_ms));
            let last_seen_ms = if live.is_some() { now_ms } else { last_seen_ms };
            Ok(FleetEntry {
                online: live.is_some() && revoked.is_none(),
                node: live.or(latest).map_or(0, |(n, _)| *n),
                last_seen_ms,
                status,
                agent,
                revoked,
                record_revision,
            })
        })
        .collect()
}
