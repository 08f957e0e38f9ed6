//! The simulated fleet: agents enrolled through the real `Enroll` (a key and CSR each,
//! one bulk token per role), each with its own mTLS connection and `StreamDesiredState`
//! stream, acknowledging every desired state with a `Report` the way `bulwark-agent`'s
//! reporter does (enforcer statuses judged at the new revision), and reconnecting with
//! the agent's failover and backoff when a stream breaks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulwark_controller::client::{Client, ClientError};
use bulwark_proto::v1 as pb;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

use crate::Cluster;
use crate::agents::LabAgent;

/// Odd indexes that get a server role; every even index is a modality and every other odd
/// one an `office` host (covered by the baseline only). So the first N agents hold N/2
/// modalities, which refer to the `pacs` segment, and nobody else refers to it.
const SERVERS: [(usize, &str); 5] =
    [(1, "pacs"), (3, "pacs"), (5, "ris"), (7, "print-server"), (9, "jump-host")];

/// The `role` label of agent `index`.
pub fn role_of(index: usize) -> &'static str {
    if index.is_multiple_of(2) {
        return "modality";
    }
    SERVERS.iter().find(|(i, _)| *i == index).map_or("office", |(_, role)| role)
}

/// The host address agent `index` reports (10.1.0.0 upwards, one per agent).
pub fn address_of(index: usize) -> String {
    format!("10.{}.{}.{}", 1 + index / 65_536, index / 256 % 256, index % 256)
}

/// What one simulated agent has seen, with the instants it saw it.
#[derive(Debug, Default)]
pub struct Progress {
    /// Each time a `StreamDesiredState` call was answered (the stream is open).
    pub opened: Vec<Instant>,
    /// Each desired state received: its revision and when.
    pub received: Vec<(u64, Instant)>,
    /// Each report acknowledged (committed): the revision it reported and when.
    pub reported: Vec<(u64, Instant)>,
    /// The newest desired state.
    pub last: Option<Arc<pb::DesiredState>>,
    pub stream_failures: u64,
    pub report_failures: u64,
    /// Why the latest failed report failed.
    pub report_error: Option<String>,
}

impl Progress {
    /// When the first desired state of at least `revision` arrived.
    pub fn received_at(&self, revision: u64) -> Option<Instant> {
        self.received.iter().find(|(r, _)| *r >= revision).map(|(_, at)| *at)
    }

    /// When the controller acknowledged the first report of at least `revision`.
    pub fn reported_at(&self, revision: u64) -> Option<Instant> {
        self.reported.iter().find(|(r, _)| *r >= revision).map(|(_, at)| *at)
    }

    /// When the first stream opened at or after `since`.
    pub fn opened_since(&self, since: Instant) -> Option<Instant> {
        self.opened.iter().find(|at| **at >= since).copied()
    }

    /// The revision the agent holds.
    pub fn have(&self) -> u64 {
        self.last.as_ref().map_or(0, |s| s.revision)
    }
}

/// One simulated agent.
pub struct SimAgent {
    pub index: usize,
    pub role: &'static str,
    pub address: String,
    pub lab: LabAgent,
    /// Its own connections (one per node it has used), presenting its certificate.
    pub client: Client,
    progress: Mutex<Progress>,
}

impl SimAgent {
    pub fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `events` in one report (the enforcer statuses stay as last reported); returns
    /// the ids the controller acknowledged as stored. The ack comes after the commit.
    pub async fn report_events(&self, events: Vec<pb::AgentEvent>) -> Result<Vec<String>> {
        let report = pb::AgentReport {
            desired_revision: self.progress().have(),
            events,
            agent_version: AGENT_VERSION.into(),
            ..Default::default()
        };
        Ok(self.client.report(report).await?.stored)
    }
}

const AGENT_VERSION: &str = "bulwark-loadgen";

/// The enforcer statuses a compliant agent reports for `revision`.
fn compliant(revision: u64) -> Vec<pb::EnforcerStatus> {
    let now = crate::loadgen::now_ms();
    ["firewall", "passwords", "wireless", "users", "logins"]
        .into_iter()
        .map(|enforcer| pb::EnforcerStatus {
            enforcer: enforcer.into(),
            revision,
            state: pb::EnforcerState::Compliant as i32,
            reason: String::new(),
            checked_at_ms: now,
            details: Default::default(),
        })
        .collect()
}

/// Aborts the task when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Delay before reconnect attempt `n` (from 1), as `bulwark-agent` does it: every
/// controller once after 100 ms, then 250 ms doubling to 30 s, times a jitter in [0.5, 1).
fn backoff(n: u32, controllers: u32) -> Duration {
    if n < controllers {
        return Duration::from_millis(100);
    }
    let k = n - controllers;
    let base = Duration::from_millis(250 * (1u64 << k.min(7)));
    base.min(Duration::from_secs(30)).mul_f64(rand::thread_rng().gen_range(0.5..1.0))
}

/// The stream loop of one agent: open, receive, hand revisions to the reporter; on a
/// break, fail over with backoff. Runs until aborted.
async fn stream_loop(agent: Arc<SimAgent>, revisions: watch::Sender<u64>, controllers: u32) {
    let mut attempt = 0u32;
    loop {
        let have = agent.progress().have();
        match agent.client.stream_desired_state(have).await {
            Ok(mut stream) => {
                attempt = 0;
                agent.progress().opened.push(Instant::now());
                while let Ok(Some(state)) = stream.message().await {
                    let at = Instant::now();
                    let revision = state.revision;
                    {
                        let mut p = agent.progress();
                        p.received.push((revision, at));
                        p.last = Some(Arc::new(state));
                    }
                    revisions.send_replace(revision);
                }
                // The stream ended or broke.
                agent.progress().stream_failures += 1;
            }
            Err(_) => agent.progress().stream_failures += 1,
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt, controllers)).await;
    }
}

/// The reporter of one agent: after every new desired state, one report of the enforcer
/// statuses at that revision (retried every second until acknowledged).
async fn report_loop(agent: Arc<SimAgent>, mut revisions: watch::Receiver<u64>) {
    while revisions.changed().await.is_ok() {
        let revision = *revisions.borrow_and_update();
        let report = pb::AgentReport {
            desired_revision: revision,
            enforcers: compliant(revision),
            agent_version: AGENT_VERSION.into(),
            ..Default::default()
        };
        match agent.client.report(report).await {
            Ok(_) => agent.progress().reported.push((revision, Instant::now())),
            Err(e) => {
                {
                    let mut p = agent.progress();
                    p.report_failures += 1;
                    p.report_error = Some(e.to_string());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                // Report again (the newest revision) on the next turn.
                revisions.mark_changed();
            }
        }
    }
}

/// How enrollment went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrollment {
    pub agents: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Enroll calls refused as retryable (the token's use count raced) and sent again.
    pub retries: u64,
}

/// Every simulated agent, and the tasks of the connected ones.
pub struct Fleet {
    pub agents: Vec<Arc<SimAgent>>,
    tasks: Vec<(Task, Task)>,
    controllers: u32,
}

impl Fleet {
    /// Enrolls `n` agents through the real `Enroll` (`concurrency` at a time, spread over
    /// the nodes), with one bulk token per role. Nothing connects yet.
    pub async fn enroll(
        cluster: &Cluster,
        admin: &Client,
        n: usize,
        concurrency: usize,
    ) -> Result<(Self, Enrollment)> {
        let mut per_role: BTreeMap<&str, u32> = BTreeMap::new();
        for i in 0..n {
            *per_role.entry(role_of(i)).or_default() += 1;
        }
        let mut tokens = BTreeMap::new();
        for (role, uses) in per_role {
            let labels = [("role".to_owned(), role.to_owned())].into_iter().collect();
            let token = admin.create_token(labels, Duration::from_secs(24 * 3600), uses).await?;
            tokens.insert(role, token.token);
        }
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        let controllers = ids.len() as u32;
        let started = Instant::now();
        let retries = AtomicU64::new(0);
        let retries = &retries;
        let tokens = &tokens;
        let ids = &ids;
        // Enrollment borrows the cluster (its CA file and PKI directory), so the calls run
        // as futures of this task, `concurrency` at a time.
        let agents: Vec<Arc<SimAgent>> = futures::stream::iter(0..n)
            .map(|i| async move {
                let role = role_of(i);
                let token = tokens.get(role).context("a token per role")?;
                let node = ids[i % ids.len()];
                let (address, hostname) = (address_of(i), format!("sim-{role}-{i:05}"));
                let lab =
                    enroll_one(cluster, &cluster.addr(node), token, &hostname, &address, retries)
                        .await
                        .with_context(|| format!("enrolling agent {i}"))?;
                let client = lab.client_from(cluster, node, Duration::ZERO)?;
                anyhow::Ok(Arc::new(SimAgent {
                    index: i,
                    role,
                    address,
                    lab,
                    client,
                    progress: Mutex::default(),
                }))
            })
            .buffered(concurrency.max(1))
            .try_collect()
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let enrollment = Enrollment {
            agents: n,
            seconds,
            per_second: n as f64 / seconds.max(1e-9),
            retries: retries.load(Ordering::Relaxed),
        };
        Ok((Self { agents, tasks: Vec::new(), controllers }, enrollment))
    }

    /// How many agents have running tasks (the first ones).
    pub fn connected(&self) -> usize {
        self.tasks.len()
    }

    /// The connected agents.
    pub fn live(&self) -> &[Arc<SimAgent>] {
        &self.agents[..self.tasks.len()]
    }

    /// Starts the stream and reporter of agents up to `upto` (the first ones).
    pub fn connect(&mut self, upto: usize) {
        for agent in &self.agents[self.tasks.len()..upto.min(self.agents.len())] {
            let (tx, rx) = watch::channel(0u64);
            let stream = tokio::spawn(stream_loop(agent.clone(), tx, self.controllers));
            let report = tokio::spawn(report_loop(agent.clone(), rx));
            self.tasks.push((Task(stream), Task(report)));
        }
    }

    /// Stops every agent (streams and connections close).
    pub fn disconnect(&mut self) {
        self.tasks.clear();
    }
}

/// One enrollment, sent again while the controller says to retry (the token's use count
/// raced with another enrollment).
async fn enroll_one(
    cluster: &Cluster,
    endpoint: &str,
    token: &str,
    hostname: &str,
    address: &str,
    retries: &AtomicU64,
) -> Result<LabAgent> {
    let mut last = None;
    for _ in 0..50 {
        match LabAgent::enroll_at(cluster, endpoint, token, hostname, address).await {
            Ok(agent) => return Ok(agent),
            Err(e) => {
                let retryable = e.downcast_ref::<ClientError>().is_some_and(|c| {
                    matches!(c.code, tonic::Code::Unavailable | tonic::Code::ResourceExhausted)
                });
                if !retryable {
                    return Err(e);
                }
                retries.fetch_add(1, Ordering::Relaxed);
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    match last {
        Some(e) => Err(e.context("still refused after 50 tries")),
        None => bail!("no enrollment attempt was made"),
    }
}
