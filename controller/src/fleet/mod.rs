//! What agents report about themselves (per-enforcer status, events, which node they
//! stream from) and the fleet view built from it.
//!
//! Reports are stored as notes ([`Command::Note`]): they take no revision, so a report
//! never wakes desired-state streams or watchers. Keys:
//! - `status/<agent>`: the agent's latest [`AgentStatus`] (replaced)
//! - `presence/<agent>/<node>`: [`Presence`], written by the node serving the agent's stream
//! - `event/<first id>/<agent>/<last id>/<count>`: the events one report carried
//!   (a postcard `Vec<AgentEvent>`, ids ascending), written by [`Command::Events`]. Ids are
//!   assigned by the agent, start with its clock in milliseconds and ascend for each agent,
//!   so keys are in time order of their first event. Data written before events were
//!   stored per report holds `event/<event id>/<agent>`: one [`AgentEvent`]; both are read.
//! - `agent-event/<agent>/<first id>`: the per-agent index: the event key after `event/`
//!   (empty for a single event of the older layout, whose key it names)
//! - `event-mark/<agent>`: the highest event id stored for the agent: a retried report
//!   stores only its events past it, so each event is stored once
//! - `beat/<node>`: [`Beat`], every [`BEAT_EVERY`] from each node: a node whose beat is older
//!   than [`BEAT_EXPIRY`] is gone, and so are the streams it served.
//!
//! These notes are written through the node's [`batch::NoteBatcher`], so a fleet reporting at
//! once makes a few Raft entries, not one per report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::node::{Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::security::{self, AgentRecord, HostFacts};
use crate::store::Command;

pub mod batch;

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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where one report's events are stored, parsed from the key after `event/`: either
/// `<first>/<agent>/<last>/<count>`, or `<id>/<agent>` for one event of the older layout
/// (`single`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKey<'a> {
    pub first: &'a str,
    pub agent: &'a str,
    pub last: &'a str,
    pub count: usize,
}

impl<'a> EventKey<'a> {
    pub fn parse(rest: &'a str) -> Option<Self> {
        let mut parts = rest.split('/');
        let (first, agent) = (parts.next()?, parts.next()?);
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(Self { first, agent, last: first, count: 1 }),
            (Some(last), Some(count), None) => {
                Some(Self { first, agent, last, count: count.parse().ok()? })
            }
            _ => None,
        }
    }

    /// A key of the older layout: one event, stored as an [`AgentEvent`], not a `Vec`.
    fn single(rest: &str) -> bool {
        rest.matches('/').count() == 1
    }

    /// The events stored under this key (`rest`), from its value.
    fn events(rest: &str, value: &[u8]) -> Result<Vec<AgentEvent>, NodeError> {
        let key = format!("event/{rest}");
        if Self::single(rest) { Ok(vec![decode(&key, value)?]) } else { decode(&key, value) }
    }
}

impl std::fmt::Display for EventKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.first, self.agent, self.last, self.count)
    }
}

/// The note holding the highest event id stored for `agent`.
pub fn event_mark_key(agent: &str) -> String {
    format!("event-mark/{agent}")
}

/// The index note of the events of `agent` whose first id is `first`.
pub fn event_index_key(agent: &str, first: &str) -> String {
    format!("agent-event/{agent}/{first}")
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

/// Commits `report` of agent `id` (status, events and changed facts in one entry, shared
/// with other reports unless facts changed) and returns the ids of the events now stored.
///
/// A report without enforcer states keeps the stored ones, read when the report arrives,
/// not when its batch applies: of two reports of one agent in one batch (an agent that
/// retried before the first was answered) the later is stored last and wins, but carries
/// the states stored before the first. `bulwark-agent` sends the state of every enforcer
/// that has run in every report, so an empty list means none has run yet and the states
/// taken over are the ones it had anyway.
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
    if !report.events.is_empty() {
        let events = report.events.iter().map(|e| Ok::<_, NodeError>((e.id.clone(), encode(e)?)));
        let op =
            Command::Events { agent: id.to_owned(), events: events.collect::<Result<_, _>>()? };
        // Said here, naming the report's ids, rather than as the command's generic error.
        if let Err(crate::store::InvalidCommand::EventOrder { before, after }) = op.validate() {
            return Err(NodeError::Invalid(format!(
                "event ids must ascend within a report (as the agent assigns them): {after:?} comes after {before:?}"
            )));
        }
        ops.push(op);
    }
    let facts = match report.facts {
        Some(facts) => security::facts_update(&node.reader, id, facts)?,
        None => None,
    };
    match facts {
        // Notes only: one batch with other reports.
        None => {
            node.notes.submit(ops).await?;
        }
        // A compare-and-set on the agent record fails its whole entry: written alone.
        Some(op) => {
            ops.push(op);
            let written = node.write(Command::Txn(ops).into()).await?;
            if written.outcome.conflict.is_some() {
                return Err(NodeError::Unavailable(format!(
                    "agent {id}'s record changed while its report was written; nothing was stored, retry"
                )));
            }
        }
    }
    Ok(stored)
}

/// Records that agent `id` streams from this node now (`connected`) or stopped.
pub async fn set_presence(node: &Node, id: &str, connected: bool) -> Result<(), NodeError> {
    let presence = Presence { boot: node.boot, connected, at_ms: now_ms() };
    let key = format!("presence/{id}/{}", node.id);
    node.notes.submit(vec![note(key, encode(&presence)?, true)]).await.map(|_| ())
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
            if let Err(e) =
                node.notes.submit(vec![note(format!("beat/{}", node.id), value, true)]).await
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
    let mut events = Vec::new();
    // Each index entry names a report's events (or, in the older layout, one event).
    for (k, v) in reader.last_notes(&format!("agent-event/{id}/"), n).map_err(read_err)? {
        let rest = match v.is_empty() {
            true => format!("{}/{id}", k.rsplit('/').next().unwrap_or_default()),
            false => String::from_utf8_lossy(&v).into_owned(),
        };
        if let Some(bytes) = reader.note(&format!("event/{rest}")).map_err(read_err)? {
            events.extend(EventKey::events(&rest, &bytes)?.into_iter().rev());
        }
        if events.len() >= n {
            break;
        }
    }
    events.truncate(n);
    Ok(events)
}

/// Which stored events a query wants.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub kinds: Vec<String>,
    pub agent_id: String,
    pub since_ms: i64,
}

/// A stored event, with the agent that reported it and its cursor: `<first>/<agent>/<id>`
/// for an event of the report whose first event is `first` (`<id>/<agent>` in the older
/// layout); listing after it goes on with the next event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub agent_id: String,
    pub event: AgentEvent,
    pub cursor: String,
}

/// Up to `limit` events matching `filter`, after `cursor` (empty: from the oldest), in the
/// order of their reports' first events, each report's in id order. Returns them and the
/// cursor to continue from (the last one looked at).
pub fn list_events(
    reader: &Reader,
    filter: &EventFilter,
    cursor: &str,
    limit: usize,
) -> Result<(Vec<StoredEvent>, String), NodeError> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut cursor = cursor.to_owned();
    // Event ids begin with their time: a report whose last id is older than `since_ms`
    // is skipped by its key, without reading its events.
    let since = format!("{:013}", filter.since_ms);
    loop {
        // A cursor inside a report's events: the report's key sorts after it, and its
        // events up to the cursor's are skipped.
        let within = match cursor.splitn(4, '/').collect::<Vec<_>>()[..] {
            [first, agent, id] => Some((first.to_owned(), agent.to_owned(), id.to_owned())),
            _ => None,
        };
        let page = reader.notes_after("event/", &cursor, PAGE).map_err(read_err)?;
        let done = page.len() < PAGE;
        for (k, v) in page {
            let rest = k.strip_prefix("event/").unwrap_or(&k);
            let Some(key) = EventKey::parse(rest) else { continue };
            let at = |id: &str| match EventKey::single(rest) {
                true => rest.to_owned(),
                false => format!("{}/{}/{id}", key.first, key.agent),
            };
            cursor = at(key.last);
            if (!filter.agent_id.is_empty() && key.agent != filter.agent_id)
                || key.last < since.as_str()
            {
                continue;
            }
            let skip_to = within
                .as_ref()
                .filter(|(first, agent, _)| first == key.first && agent == key.agent)
                .map(|(_, _, id)| id.as_str());
            for event in EventKey::events(rest, &v)? {
                if skip_to.is_some_and(|id| event.id.as_str() <= id)
                    || event.at_ms < filter.since_ms
                    || (!filter.kinds.is_empty() && !filter.kinds.contains(&event.kind))
                {
                    continue;
                }
                let here = at(&event.id);
                out.push(StoredEvent { agent_id: key.agent.to_owned(), event, cursor: here });
                if out.len() == limit {
                    let cursor = out.last().map(|e| e.cursor.clone()).unwrap_or_default();
                    return Ok((out, cursor));
                }
            }
        }
        if done {
            return Ok((out, cursor));
        }
    }
}

/// How long and how many agent events the cluster keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_events: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(90 * 24 * 3600), max_events: 1_000_000 }
    }
}

/// The keys of events past `retention` at `now_ms`, oldest first: reports whose events
/// are all older than the age, and the oldest reports while at least `max_events` remain
/// without them (a report goes as a whole, so up to one report's events more than
/// `max_events` may stay). Keys name their first and last ids and their count, so it
/// reads keys only.
pub fn expired_events(
    reader: &Reader,
    retention: Retention,
    now_ms: i64,
) -> Result<Vec<String>, NodeError> {
    let cutoff = format!("{:013}", now_ms - retention.max_age.as_millis() as i64);
    // Each key with its event count and whether all its events are past the age.
    let keys: Vec<(String, usize, bool)> = reader
        .note_keys("event/")
        .map_err(read_err)?
        .into_iter()
        .map(|k| {
            let parsed = EventKey::parse(&k["event/".len()..]);
            let (n, old) = parsed.map_or((0, false), |key| (key.count, key.last < cutoff.as_str()));
            (k, n, old)
        })
        .collect();
    let total: usize = keys.iter().map(|(_, n, _)| n).sum();
    let mut over = total.saturating_sub(retention.max_events);
    Ok(keys
        .into_iter()
        .take_while(|(_, n, old)| {
            let expire = *old || (*n > 0 && *n <= over);
            over = over.saturating_sub(*n);
            expire
        })
        .map(|(k, _, _)| k)
        .collect())
}

/// On the leader, every minute (more often for a retention under two minutes): forgets
/// events past `retention` (each report's events and their index entry, 500 reports per
/// Raft entry). An agent's mark stays, so a report retried after its events expired does
/// not store them again.
pub fn spawn_retention(node: Arc<Node>, retention: Retention) {
    let every = (retention.max_age / 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leader = node.raft.metrics().borrow().current_leader;
            if leader != Some(node.id) {
                continue;
            }
            let expired = match expired_events(&node.reader, retention, now_ms()) {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "event retention: cannot read events");
                    continue;
                }
            };
            let mut events = 0;
            for chunk in expired.chunks(500) {
                let (mut ops, mut n) = (Vec::with_capacity(chunk.len() * 2), 0);
                for key in chunk {
                    if let Some(k) = key.strip_prefix("event/").and_then(EventKey::parse) {
                        ops.push(Command::ForgetNote { key: event_index_key(k.agent, k.first) });
                        n += k.count;
                    }
                    ops.push(Command::ForgetNote { key: key.clone() });
                }
                if let Err(e) = node.write(Command::Txn(ops).into()).await {
                    tracing::warn!(error = %e, "event retention: cannot forget events");
                    break;
                }
                events += n;
            }
            if !expired.is_empty() {
                tracing::info!(forgotten = events, reports = expired.len(), "event retention");
            }
        }
    });
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
