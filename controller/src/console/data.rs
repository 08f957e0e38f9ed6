//! The console's data layer: the controller's own gRPC services through [`Client`] (with
//! the admin's certificate, so the controller enforces the admin's role), a ring buffer of
//! fleet snapshots for the chart, and the pollers and event follower whose changes are
//! broadcast to the browsers' server-sent-event streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use tokio::sync::{broadcast, watch};

use crate::client::Client;
use crate::fleet::now_ms;

/// How a host stands, for the overview (one state per host, the worst that applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostState {
    Compliant,
    Drifted,
    Failed,
    Offline,
    /// Online, but no enforcer has reported against a desired state yet.
    Pending,
    Revoked,
}

impl HostState {
    pub const CHARTED: [HostState; 4] =
        [HostState::Compliant, HostState::Drifted, HostState::Failed, HostState::Offline];
    pub const ALL: [HostState; 6] = [
        HostState::Compliant,
        HostState::Drifted,
        HostState::Failed,
        HostState::Offline,
        HostState::Pending,
        HostState::Revoked,
    ];

    /// The word used in URLs and CSS classes.
    pub fn key(self) -> &'static str {
        match self {
            HostState::Compliant => "compliant",
            HostState::Drifted => "drifted",
            HostState::Failed => "failed",
            HostState::Offline => "offline",
            HostState::Pending => "pending",
            HostState::Revoked => "revoked",
        }
    }

    /// The words shown to people.
    pub fn label(self) -> &'static str {
        match self {
            HostState::Compliant => "Compliant",
            HostState::Drifted => "Drifted and repaired",
            HostState::Failed => "Failed",
            HostState::Offline => "Offline",
            HostState::Pending => "Pending",
            HostState::Revoked => "Revoked",
        }
    }

    pub fn from_key(s: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|h| h.key() == s)
    }
}

/// One host's state: revoked, offline, then the worst managed enforcer.
pub fn classify(a: &pb::Agent) -> HostState {
    if a.revoked {
        return HostState::Revoked;
    }
    if !a.online {
        return HostState::Offline;
    }
    let states: Vec<i32> = a
        .enforcers
        .iter()
        .map(|e| e.state)
        .filter(|s| {
            *s != pb::EnforcerState::NotManaged as i32
                && *s != pb::EnforcerState::Unspecified as i32
        })
        .collect();
    if states.contains(&(pb::EnforcerState::Failed as i32)) {
        HostState::Failed
    } else if states.iter().any(|s| {
        *s == pb::EnforcerState::DriftedRepaired as i32
            || *s == pb::EnforcerState::AuditNoncompliant as i32
    }) {
        HostState::Drifted
    } else if states.is_empty() {
        HostState::Pending
    } else {
        HostState::Compliant
    }
}

/// Hosts per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u32; 6]);

impl Counts {
    pub fn of<'a>(agents: impl IntoIterator<Item = &'a pb::Agent>) -> Counts {
        let mut c = Counts::default();
        for a in agents {
            c.add(classify(a));
        }
        c
    }

    pub fn add(&mut self, s: HostState) {
        self.0[s as usize] += 1;
    }

    pub fn get(&self, s: HostState) -> u32 {
        self.0[s as usize]
    }

    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
}

/// One point of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub counts: Counts,
}

/// The newest fleet listing.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub agents: Vec<pb::Agent>,
    pub revision: u64,
    pub at_ms: i64,
}

impl Fleet {
    /// Agent id → hostname (or the id when the host sent none).
    pub fn names(&self) -> BTreeMap<String, String> {
        self.agents
            .iter()
            .map(|a| {
                let name = if a.hostname.is_empty() { a.id.clone() } else { a.hostname.clone() };
                (a.id.clone(), name)
            })
            .collect()
    }
}

/// What changed, for the browsers: `topic` is the SSE event name, `data` one JSON line.
#[derive(Debug, Clone)]
pub struct Update {
    pub topic: &'static str,
    pub data: String,
}

/// How often the console polls and samples.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Fleet, rollout and cluster polls.
    pub poll: Duration,
    /// A chart point at least this often (and whenever the counts change).
    pub sample_every: Duration,
    /// Points kept (the ring buffer's size).
    pub samples: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Self { poll: Duration::from_secs(2), sample_every: Duration::from_secs(10), samples: 720 }
    }
}

/// The shared state behind every request.
pub struct Data {
    pub client: Client,
    timing: Timing,
    fleet: Mutex<Option<Fleet>>,
    history: Mutex<VecDeque<Sample>>,
    updates: broadcast::Sender<Update>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What of an agent the overview shows: a change here is worth a browser refresh.
fn fingerprint(agents: &[pb::Agent]) -> Vec<String> {
    agents
        .iter()
        .map(|a| {
            let enforcers: Vec<String> = a
                .enforcers
                .iter()
                .map(|e| format!("{}={}:{}", e.enforcer, e.state, e.revision))
                .collect();
            format!(
                "{} {} {} {} {} {}/{} {:?} {:?} {}",
                a.id,
                a.hostname,
                a.online,
                a.revoked,
                a.node,
                a.applied_revision,
                a.desired_revision,
                a.labels.iter().collect::<BTreeMap<_, _>>(),
                a.addresses,
                enforcers.join(",")
            )
        })
        .collect()
}

impl Data {
    pub fn new(client: Client, timing: Timing) -> Self {
        let (updates, _) = broadcast::channel(256);
        Self {
            client,
            timing,
            fleet: Mutex::new(None),
            history: Mutex::new(VecDeque::new()),
            updates,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn publish(&self, topic: &'static str, data: serde_json::Value) {
        // No receivers (no browser open) is fine.
        let _ = self.updates.send(Update { topic, data: data.to_string() });
    }

    /// The chart's points, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        lock(&self.history).iter().copied().collect()
    }

    /// The newest fleet listing: the poller's, or a fresh one when it has none yet.
    pub async fn fleet(&self) -> Result<Fleet, crate::client::ClientError> {
        if let Some(f) = lock(&self.fleet).clone() {
            return Ok(f);
        }
        self.poll_fleet().await
    }

    /// Lists the agents, keeps the listing, adds a chart point when due; publishes `fleet`
    /// when anything shown changed.
    pub async fn poll_fleet(&self) -> Result<Fleet, crate::client::ClientError> {
        let reply = self.client.list_agents().await?;
        let fleet = Fleet { agents: reply.agents, revision: reply.revision, at_ms: now_ms() };
        let changed = {
            let mut slot = lock(&self.fleet);
            let changed = slot
                .as_ref()
                .is_none_or(|old| fingerprint(&old.agents) != fingerprint(&fleet.agents));
            *slot = Some(fleet.clone());
            changed
        };
        let sampled = self.sample(Counts::of(&fleet.agents), fleet.at_ms);
        if changed || sampled {
            self.publish("fleet", serde_json::json!({ "agents": fleet.agents.len() }));
        }
        Ok(fleet)
    }

    /// Adds a point when the counts changed or `sample_every` passed; true if it did.
    fn sample(&self, counts: Counts, at_ms: i64) -> bool {
        let mut h = lock(&self.history);
        let due = match h.back() {
            None => true,
            Some(last) => {
                last.counts != counts
                    || at_ms - last.at_ms >= self.timing.sample_every.as_millis() as i64
            }
        };
        if due {
            h.push_back(Sample { at_ms, counts });
            while h.len() > self.timing.samples.max(2) {
                h.pop_front();
            }
        }
        due
    }

    /// Runs the pollers and the event follower until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let fleet = async {
            let mut tick = tokio::time::interval(self.timing.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.poll_fleet().await {
                    tracing::warn!(error = %e, "console: listing the fleet failed");
                }
            }
        };
        let rollout = async {
            let mut last: Option<pb::RolloutStatus> = None;
            let mut tick = tokio::time::interval(self.timing.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.client.rollout("status").await {
                    Ok(s) if last.as_ref() != Some(&s) => {
                        self.publish("rollout", serde_json::json!({ "phase": s.phase }));
                        last = Some(s);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "console: rollout status failed"),
                }
            }
        };
        let cluster = async {
            let mut last = String::new();
            let mut tick = tokio::time::interval(self.timing.poll.max(Duration::from_secs(2)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.client.member_statuses(Duration::from_secs(2)).await {
                    Ok((_, members)) => {
                        let now: Vec<String> = members
                            .iter()
                            .map(|(m, s)| match s {
                                Ok(s) => format!(
                                    "{} {} {} {} {} {}",
                                    m.id,
                                    s.role,
                                    s.term,
                                    s.leader_id,
                                    s.last_log_index,
                                    s.applied_index
                                ),
                                Err(e) => format!("{} unreachable {}", m.id, e.message),
                            })
                            .collect();
                        let now = now.join("\n");
                        if now != last {
                            self.publish("cluster", serde_json::json!({}));
                            last = now;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "console: cluster status failed"),
                }
            }
        };
        tokio::select! {
            _ = fleet => {}
            _ = rollout => {}
            _ = cluster => {}
            _ = self.follow_events() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    /// Follows the events committed from now on, reconnecting after the last one seen.
    async fn follow_events(&self) {
        let mut req = pb::ListEventsRequest { since_ms: now_ms(), ..Default::default() };
        loop {
            match self.client.follow_events(req.clone()).await {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(e)) => {
                            req.after = e.cursor.clone();
                            let ev = e.event.unwrap_or_default();
                            self.publish(
                                "events",
                                serde_json::json!({
                                    "kind": ev.kind, "agent_id": e.agent_id, "hostname": e.hostname,
                                }),
                            );
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "console: event stream ended");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, "console: following events failed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(online: bool, states: &[pb::EnforcerState]) -> pb::Agent {
        pb::Agent {
            online,
            enforcers: states
                .iter()
                .map(|s| pb::EnforcerStatus { state: (*s).into(), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_host_takes_its_worst_state() {
        use pb::EnforcerState::*;
        let check = |a: pb::Agent, want: HostState| assert_eq!(classify(&a), want, "{a:?}");
        check(agent(true, &[Compliant, NotManaged]), HostState::Compliant);
        check(agent(true, &[Compliant, DriftedRepaired]), HostState::Drifted);
        check(agent(true, &[AuditNoncompliant]), HostState::Drifted);
        check(agent(true, &[DriftedRepaired, Failed]), HostState::Failed);
        check(agent(false, &[Failed]), HostState::Offline);
        check(agent(true, &[NotManaged]), HostState::Pending);
        check(pb::Agent { revoked: true, ..agent(true, &[Compliant]) }, HostState::Revoked);
    }

    #[test]
    fn the_ring_buffer_keeps_the_newest_points() {
        // No connection is made: the client is only carried along.
        let client = Client::anonymous(b"", &["127.0.0.1:1".into()], Duration::ZERO).unwrap();
        let data = Data::new(
            client,
            Timing {
                poll: Duration::from_secs(1),
                sample_every: Duration::from_secs(10),
                samples: 3,
            },
        );
        let mut c = Counts::default();
        assert!(data.sample(c, 0));
        assert!(!data.sample(c, 5_000), "same counts, too soon");
        assert!(data.sample(c, 10_000), "due");
        c.add(HostState::Failed);
        assert!(data.sample(c, 10_500), "counts changed");
        assert!(data.sample(c, 30_000));
        let h = data.history();
        assert_eq!(h.iter().map(|s| s.at_ms).collect::<Vec<_>>(), [10_000, 10_500, 30_000]);
    }
}
