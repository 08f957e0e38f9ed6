//! The scenarios, run in order on one cluster and one fleet: rollouts (and memory) at each
//! fleet size, then membership, reconnect and events at the largest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bulwark_controller::client::Client;
use bulwark_proto::v1 as pb;
use futures::StreamExt;

use super::fleet::{Fleet, SimAgent};
use super::report::{self, Summary, rss_kib};
use super::{Config, Events, Membership, Memory, Reconnect, Results, Rollout, Scenario};
use crate::agents::LabAgent;
use crate::{Cluster, ClusterOptions};

/// The cluster, the admin client, the fleet, and the policy pack as applied.
struct Bench<'c> {
    config: &'c Config,
    cluster: Cluster,
    admin: Client,
    fleet: Fleet,
    pack: Vec<(String, String)>,
    /// The pack's baseline log rate; each rollout changes it.
    log_rate: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Bench<'_> {
    fn say(&self, text: &str) {
        if self.config.verbose {
            println!("-- {text}");
        }
    }

    fn controllers_rss(&self) -> Vec<u64> {
        self.cluster
            .nodes
            .keys()
            .map(|&id| self.cluster.pid(id).and_then(rss_kib).unwrap_or(0))
            .collect()
    }

    /// Polls every 20 ms until `done` holds for every connected agent, or fails after the
    /// step timeout naming how many did not get there.
    async fn until_all(&self, what: &str, done: impl Fn(&SimAgent) -> bool) -> Result<()> {
        let deadline = Instant::now() + self.config.step_timeout;
        loop {
            let missing = self.fleet.live().iter().filter(|a| !done(a)).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let example = self.fleet.live().iter().find(|a| !done(a)).map(|a| {
                    let p = a.progress();
                    format!(
                        "agent {} ({}, {}): have {}, {} streams opened, {} stream failures, {} report failures",
                        a.index,
                        a.lab.id,
                        a.role,
                        p.have(),
                        p.opened.len(),
                        p.stream_failures,
                        p.report_failures
                    )
                });
                bail!(
                    "{what}: {missing} of {} agents not there after {:?}; e.g. {}",
                    self.fleet.connected(),
                    self.config.step_timeout,
                    example.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pack with the baseline's log rate set to `rate` (a change every agent gets).
    fn pack_with_rate(&self, rate: u32) -> Result<Vec<(String, String)>> {
        let mut files = self.pack.clone();
        let baseline = files
            .iter_mut()
            .find(|(name, _)| name.ends_with("baseline.yaml"))
            .context("the pack has no baseline.yaml")?;
        let from = "logRatePerMinute: 60";
        ensure!(baseline.1.contains(from), "baseline.yaml no longer says {from:?}");
        baseline.1 = baseline.1.replace(from, &format!("logRatePerMinute: {rate}"));
        Ok(files)
    }

    /// Connects agents up to `n` and waits until each streams, holds the current
    /// revision and has reported it.
    async fn grow_to(&mut self, n: usize, revision: u64) -> Result<Duration> {
        let started = Instant::now();
        self.fleet.connect(n);
        self.until_all("connecting", |a| {
            let p = a.progress();
            p.received_at(revision).is_some() && p.reported_at(revision).is_some()
        })
        .await?;
        Ok(started.elapsed())
    }

    async fn rollout(&mut self) -> Result<Rollout> {
        self.log_rate += 1;
        let files = self.pack_with_rate(self.log_rate)?;
        let failures_before: u64 =
            self.fleet.live().iter().map(|a| a.progress().report_failures).sum();
        let started = Instant::now();
        let reply = self.admin.apply_policies(files, false).await?;
        let t0 = Instant::now();
        let revision = reply.revision;
        self.until_all("the rollout received and reported", |a| {
            let p = a.progress();
            p.received_at(revision).is_some() && p.reported_at(revision).is_some()
        })
        .await?;
        let mut received = Vec::new();
        let mut reported = Vec::new();
        let mut early = 0;
        let (mut failures, mut report_error) = (0, None);
        for a in self.fleet.live() {
            let p = a.progress();
            failures += p.report_failures;
            if report_error.is_none() {
                report_error.clone_from(&p.report_error);
            }
            let (Some(r), Some(c)) = (p.received_at(revision), p.reported_at(revision)) else {
                bail!("agent {} lost its progress", a.index);
            };
            if r < t0 {
                early += 1;
            }
            received.push(r.saturating_duration_since(t0));
            reported.push(c.saturating_duration_since(t0));
        }
        Ok(Rollout {
            agents: self.fleet.connected(),
            revision,
            apply_ms: ms(t0 - started),
            received: Summary::of(received),
            reported: Summary::of(reported),
            before_apply_returned: early,
            report_failures: failures - failures_before,
            report_error: if failures > failures_before { report_error } else { None },
        })
    }

    async fn membership(&mut self) -> Result<Membership> {
        let referring: Vec<usize> =
            self.fleet.live().iter().filter(|a| a.role == "modality").map(|a| a.index).collect();
        let before: Vec<usize> =
            self.fleet.live().iter().map(|a| a.progress().received.len()).collect();
        let token = self
            .admin
            .create_token(
                [("role".to_owned(), "pacs".to_owned())].into_iter().collect(),
                Duration::from_secs(600),
                1,
            )
            .await?
            .token;
        let address = "10.250.0.1".to_owned();
        let started = Instant::now();
        let endpoint = self.cluster.addr(1);
        let _new =
            LabAgent::enroll_at(&self.cluster, &endpoint, &token, "sim-pacs-new", &address).await?;
        let t0 = Instant::now();
        let has =
            |a: &SimAgent| a.progress().last.as_ref().is_some_and(|s| holds_address(s, &address));
        let fleet = &self.fleet;
        self.until_all("the new address received", |a| a.role != "modality" || has(a)).await?;
        let mut received = Vec::new();
        for &i in &referring {
            let agent = &fleet.agents[i];
            let p = agent.progress();
            // The quiet bench sends nothing else meanwhile: the last state is the one.
            let at = p.received.last().map(|(_, at)| *at).context("no state")?;
            received.push(at.saturating_duration_since(t0));
        }
        let summary = Summary::of(received);
        let others_woken = fleet
            .live()
            .iter()
            .zip(&before)
            .filter(|(a, n)| a.role != "modality" && a.progress().received.len() > **n)
            .count();
        Ok(Membership {
            connected: fleet.connected(),
            referring: referring.len(),
            new_address: address,
            enroll_ms: ms(t0 - started),
            all_ms: summary.max_ms,
            all_from_start_ms: summary.max_ms + ms(t0 - started),
            received: summary,
            others_woken,
        })
    }

    async fn reconnect(&mut self) -> Result<Reconnect> {
        let ids: Vec<u64> = self.cluster.nodes.keys().copied().collect();
        for &id in &ids {
            self.cluster.kill(id)?;
        }
        let t0 = Instant::now();
        for &id in &ids {
            self.cluster.restart(id)?;
        }
        let leader = self.cluster.wait_for_leader(Duration::from_secs(60)).await?;
        let leader_ms = ms(t0.elapsed());
        self.say(&format!("node {leader} leads after the restart ({leader_ms:.0} ms)"));
        self.until_all("streaming again", |a| a.progress().opened_since(t0).is_some()).await?;
        let times: Vec<Duration> = self
            .fleet
            .live()
            .iter()
            .filter_map(|a| a.progress().opened_since(t0))
            .map(|at| at - t0)
            .collect();
        let summary = Summary::of(times);
        let agents = self.fleet.connected();
        Ok(Reconnect {
            agents,
            leader_ms,
            all_ms: summary.max_ms,
            handshakes_per_s: agents as f64 / (summary.max_ms / 1e3).max(1e-9),
            streaming: summary,
        })
    }

    async fn events(&mut self) -> Result<Events> {
        let batch = self.config.event_batch.max(1);
        let duration = self.config.event_duration;
        let live = self.fleet.live();
        let agents: Vec<Arc<SimAgent>> = live[..self.config.event_agents.min(live.len())].to_vec();
        let started = Instant::now();
        let until = started + duration;
        let results = futures::stream::iter(agents.iter().cloned())
            .map(|agent| tokio::spawn(send_events(agent, batch, until)))
            .buffer_unordered(agents.len().max(1))
            .collect::<Vec<_>>()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut e = Events {
            agents: agents.len(),
            batch,
            seconds,
            events: 0,
            reports: 0,
            events_per_s: 0.0,
            commit: Summary::default(),
            not_stored: 0,
            failed_reports: 0,
            committed_listed: None,
        };
        let mut latencies = Vec::new();
        for r in results {
            let s = r.context("an event sender panicked")?;
            e.events += s.stored;
            e.reports += s.latencies.len() as u64;
            e.not_stored += s.not_stored;
            e.failed_reports += s.failed;
            latencies.extend(s.latencies);
        }
        e.events_per_s = e.events as f64 / seconds.max(1e-9);
        e.commit = Summary::of(latencies);
        if e.events <= 100_000 {
            // A cross-check, not a figure: a cluster still recovering from the load may
            // not answer it, which must not lose the figures.
            match self.count_logins().await {
                Ok(n) => e.committed_listed = Some(n),
                Err(err) => println!("-- events stored, not counted: {err:#}"),
            }
        }
        Ok(e)
    }

    /// The `login` events the cluster has stored.
    async fn count_logins(&self) -> Result<u64> {
        let mut count = 0;
        let mut after = String::new();
        loop {
            let req = pb::ListEventsRequest {
                kinds: vec!["login".into()],
                after: after.clone(),
                limit: 2_000,
                ..Default::default()
            };
            let page = self.admin.list_events(req).await?;
            count += page.events.len() as u64;
            if page.events.is_empty() || page.next.is_empty() {
                return Ok(count);
            }
            after = page.next;
        }
    }
}

/// True when `state` has a firewall rule naming `address`.
pub fn holds_address(state: &pb::DesiredState, address: &str) -> bool {
    let exact = format!("{address}/32");
    state.firewall.as_ref().is_some_and(|fw| {
        fw.rules.iter().any(|r| r.addresses.iter().any(|a| a == address || *a == exact))
    })
}

#[derive(Default)]
struct Sent {
    stored: u64,
    not_stored: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

/// One agent's login events, `batch` per report, one report after another until `until`.
async fn send_events(agent: Arc<SimAgent>, batch: usize, until: Instant) -> Sent {
    let mut sent = Sent::default();
    let mut seq = 0u64;
    while Instant::now() < until {
        let now = super::now_ms();
        let events: Vec<pb::AgentEvent> = (0..batch)
            .map(|k| {
                seq += 1;
                login_event(&agent, now, seq, k)
            })
            .collect();
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let started = Instant::now();
        match agent.report_events(events).await {
            Ok(stored) => {
                sent.latencies.push(started.elapsed());
                let stored: std::collections::HashSet<&String> = stored.iter().collect();
                let ok = ids.iter().filter(|id| stored.contains(id)).count() as u64;
                sent.stored += ok;
                sent.not_stored += ids.len() as u64 - ok;
            }
            Err(_) => {
                sent.failed += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    sent
}

fn login_event(agent: &SimAgent, now_ms: i64, seq: u64, k: usize) -> pb::AgentEvent {
    let user = format!("rad{:02}", k % 40);
    let fields = [
        ("user".to_owned(), user.clone()),
        ("source".to_owned(), format!("10.200.{}.{}", k % 250, seq % 250)),
        ("method".to_owned(), "password".to_owned()),
        ("result".to_owned(), "accepted".to_owned()),
        ("service".to_owned(), "sshd".to_owned()),
    ];
    pb::AgentEvent {
        id: format!("{now_ms:013}-{seq:08}"),
        kind: "login".into(),
        enforcer: "logins".into(),
        at_ms: now_ms,
        revision: agent.progress().have(),
        summary: format!("Accepted password for {user} from 10.200.{}.{}", k % 250, seq % 250),
        before: String::new(),
        after: String::new(),
        fields: fields.into_iter().collect(),
    }
}

pub(super) async fn run(config: &Config) -> Result<Results> {
    let mut results = Results {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        enrollment: None,
        rollout: Vec::new(),
        memory: Vec::new(),
        membership: None,
        reconnect: None,
        events: None,
    };
    let mut sizes = config.agents.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = *sizes.last().context("no fleet size (--agents)")?;

    let options = ClusterOptions {
        log: "warn,openraft=error",
        quorum_timeout: "5s",
        // Every agent enrolls from 127.0.0.1.
        extra_args: vec!["--enroll-rate".into(), "10000000".into()],
        ..Default::default()
    };
    let cluster = Cluster::start_with(3, options).await?;
    let admin = cluster.client()?.with_retry_for(Duration::from_secs(30));
    let pack =
        bulwark_controller::policy::read_paths(&[super::pack_dir()]).map_err(anyhow::Error::msg)?;
    let applied = admin.apply_policies(pack.clone(), false).await?;
    if config.verbose {
        println!(
            "-- cluster of 3 on 127.0.0.1 ({}); policy pack applied at revision {}",
            cluster.dir().display(),
            applied.revision
        );
        println!(
            "-- enrolling {largest} agents through Enroll ({} at a time)",
            config.enroll_concurrency
        );
    }
    let (fleet, enrollment) =
        Fleet::enroll(&cluster, &admin, largest, config.enroll_concurrency).await?;
    if config.verbose {
        println!(
            "-- enrolled {} agents in {:.1} s ({:.0}/s, {} retried calls)",
            enrollment.agents, enrollment.seconds, enrollment.per_second, enrollment.retries
        );
    }
    results.enrollment = Some(enrollment);
    let mut bench = Bench { config, cluster, admin, fleet, pack, log_rate: 60 };
    // Every node has applied the enrollments before the first stream.
    let revision =
        bench.admin.list("", bulwark_controller::client::ReadMode::Linearizable).await?.revision;
    for id in bench.cluster.nodes.keys().copied().collect::<Vec<_>>() {
        let c = bench.cluster.node_client(id)?;
        crate::eventually("the node caught up", Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                let r = c.list("", bulwark_controller::client::ReadMode::Stale).await?.revision;
                ensure!(r >= revision, "at {r} of {revision}");
                Ok(())
            }
        })
        .await?;
    }
    let rss_before = bench.controllers_rss();
    let mut current = applied.revision;

    for &n in &sizes {
        let took = bench.grow_to(n, current).await?;
        bench.say(&format!(
            "{n} agents streaming, each with its state received and reported ({:.1} s)",
            took.as_secs_f64()
        ));
        let after = bench.controllers_rss();
        let (b, a): (u64, u64) = (rss_before.iter().sum(), after.iter().sum());
        results.memory.push(Memory {
            agents: n,
            rss_before_kib: b,
            rss_after_kib: a,
            per_agent_kib: a.saturating_sub(b) as f64 / n as f64,
            added_per_agent_kib: results.memory.last().map(|prev: &Memory| {
                a.saturating_sub(prev.rss_after_kib) as f64
                    / n.saturating_sub(prev.agents).max(1) as f64
            }),
            per_node_kib: after,
        });
        if config.scenarios.contains(&Scenario::Rollout) {
            let r = bench.rollout().await?;
            current = r.revision;
            bench.say(&format!(
                "rollout to {n}: received p99 {:.1} ms, reported p99 {:.1} ms; {} failed reports{}",
                r.received.p99_ms,
                r.reported.p99_ms,
                r.report_failures,
                r.report_error.as_deref().map(|e| format!(" (e.g. {e})")).unwrap_or_default()
            ));
            results.rollout.push(r);
        }
    }
    if config.scenarios.contains(&Scenario::Rollout) {
        report::print_rollout(&results.rollout);
        report::print_memory(&results.memory);
    }
    if config.scenarios.contains(&Scenario::Membership) {
        let m = bench.membership().await?;
        report::print_membership(&m);
        results.membership = Some(m);
    }
    if config.scenarios.contains(&Scenario::Reconnect) {
        let r = bench.reconnect().await?;
        report::print_reconnect(&r);
        results.reconnect = Some(r);
    }
    if config.scenarios.contains(&Scenario::Events) {
        let e = bench.events().await?;
        report::print_events(&e);
        results.events = Some(e);
    }
    bench.fleet.disconnect();
    Ok(results)
}
