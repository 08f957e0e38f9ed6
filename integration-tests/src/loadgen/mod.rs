//! `bulwark-loadgen`: a fleet of simulated agents in one process against a real 3-node
//! controller cluster on 127.0.0.1, and the fleet-scale scenarios measured with it
//! (rollout, membership, reconnect, events, controller memory per connected agent).
//!
//! Every agent is real from the controller's side: its own key and certificate from the
//! real `Enroll`, its own mTLS connection and `StreamDesiredState` stream, a `Report` after
//! every desired state. Only the host side is left out (nothing is enforced; statuses are
//! reported compliant at once), so the figures are the controllers' and the network's.

pub mod fleet;
pub mod report;
mod scenarios;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

pub use fleet::{Enrollment, Fleet, SimAgent};
pub use report::Summary;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// A policy change reaching N agents (and their reports), for each N of `--agents`;
    /// controller memory per connected agent at each N.
    Rollout,
    /// A new host joining a segment half of the fleet refers to.
    Membership,
    /// Every controller killed and restarted: until every agent streams again.
    Reconnect,
    /// Login events through `Report`: committed events per second and commit latency.
    Events,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Fleet sizes, ascending; the fleet grows to each in turn (the largest is enrolled).
    pub agents: Vec<usize>,
    pub scenarios: Vec<Scenario>,
    /// Enroll calls in flight at once.
    pub enroll_concurrency: usize,
    /// Events per report in the events scenario.
    pub event_batch: usize,
    /// Agents sending events at once (the first ones; at most the fleet).
    pub event_agents: usize,
    /// How long the events scenario sends.
    pub event_duration: Duration,
    /// How long to wait for any one step (all agents received, all streaming...).
    pub step_timeout: Duration,
    /// Print progress lines.
    pub verbose: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agents: vec![1_000, 5_000, 10_000],
            scenarios: vec![
                Scenario::Rollout,
                Scenario::Membership,
                Scenario::Reconnect,
                Scenario::Events,
            ],
            enroll_concurrency: 16,
            event_batch: 100,
            event_agents: 1_000,
            event_duration: Duration::from_secs(10),
            step_timeout: Duration::from_secs(300),
            verbose: true,
        }
    }
}

/// One rollout at one fleet size.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub agents: usize,
    pub revision: u64,
    /// The admin's apply call, start to return.
    pub apply_ms: f64,
    /// Apply returned -> the agent received the new desired state.
    pub received: Summary,
    /// Apply returned -> the agent's report of the new revision was committed (acked).
    pub reported: Summary,
    /// Agents that received it before the apply call had returned (counted as 0 ms).
    pub before_apply_returned: usize,
    /// Reports that failed (and were sent again a second later) during the rollout.
    pub report_failures: u64,
    /// Why one of them failed.
    pub report_error: Option<String>,
}

/// Controller memory at one fleet size.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub agents: usize,
    /// VmRSS of the three controllers, summed: enrolled, no agent connected.
    pub rss_before_kib: u64,
    /// The same with `agents` connected, each with its state received and reported.
    pub rss_after_kib: u64,
    pub per_agent_kib: f64,
    /// The RSS added per agent since the previous (smaller) fleet size; `None` at the
    /// first. Unlike `per_agent_kib`, which is measured from the enrolled fleet's RSS, it
    /// does not count memory the enrollments freed and the first connections reused.
    pub added_per_agent_kib: Option<f64>,
    pub per_node_kib: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    pub connected: usize,
    /// Connected agents whose policy refers to the segment the new host joins.
    pub referring: usize,
    pub new_address: String,
    /// The new host's `Enroll`, start to return.
    pub enroll_ms: f64,
    /// Enroll returned -> each referring agent received a state with the new address.
    pub received: Summary,
    /// Enroll returned -> the last referring agent had it.
    pub all_ms: f64,
    /// Enroll started -> the last referring agent had it.
    pub all_from_start_ms: f64,
    /// Agents not referring to the segment that received a new state anyway (should be 0).
    pub others_woken: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconnect {
    pub agents: usize,
    /// Restart -> the three nodes agree on a leader.
    pub leader_ms: f64,
    /// Restart -> each agent's stream open again.
    pub streaming: Summary,
    pub all_ms: f64,
    /// Agents / all_ms: TLS handshakes and streams per second the cluster took.
    pub handshakes_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Events {
    pub agents: usize,
    pub batch: usize,
    pub seconds: f64,
    /// Events acknowledged as stored (committed).
    pub events: u64,
    pub reports: u64,
    pub events_per_s: f64,
    /// Report sent -> ack (after commit), per report.
    pub commit: Summary,
    /// Events sent but missing from their ack (should be 0).
    pub not_stored: u64,
    /// Reports that failed (and whose events were not counted).
    pub failed_reports: u64,
    /// `login` events the cluster lists afterwards (a linearizable read), when at most
    /// 100,000 were sent (else not counted).
    pub committed_listed: Option<u64>,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub cores: usize,
    pub kernel: String,
    pub enrollment: Option<Enrollment>,
    pub rollout: Vec<Rollout>,
    pub memory: Vec<Memory>,
    pub membership: Option<Membership>,
    pub reconnect: Option<Reconnect>,
    pub events: Option<Events>,
}

/// Raises the soft open-files limit to the hard one (thousands of connections; the
/// controllers started from here inherit it). Returns the new soft limit.
pub fn raise_fd_limit() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard.max(soft))
}

/// Starts a 3-node cluster, enrolls the fleet and runs the scenarios of `config`.
pub async fn run(config: &Config) -> Result<Results> {
    let limit = raise_fd_limit()?;
    let largest = config.agents.iter().copied().max().unwrap_or(0);
    // Each agent holds one connection; each controller about a third of them, and
    // enrollment opens one more per agent for a moment.
    if (largest as u64) + 256 > limit {
        anyhow::bail!(
            "{largest} agents need more than the {limit} open files this process may have (ulimit -Hn)"
        );
    }
    scenarios::run(config).await
}

/// The path of the repository's policy pack.
pub fn pack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")
}
