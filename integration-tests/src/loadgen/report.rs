//! Figures: latency summaries, controller memory from /proc, and the tables printed with
//! each figure's target beside it.

use std::time::Duration;

use serde::Serialize;

use super::{Events, Membership, Memory, Reconnect, Rollout};

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let q = bulwark_controller::ctl::bench::quantile_ms;
        Self {
            n: samples.len(),
            p50_ms: q(&samples, 0.50),
            p95_ms: q(&samples, 0.95),
            p99_ms: q(&samples, 0.99),
            max_ms: q(&samples, 1.0),
        }
    }
}

/// The resident set of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The rollout target at `agents`: p99 within 1 s at 5,000, within 2 s at 10,000.
pub fn rollout_target_ms(agents: usize) -> Option<f64> {
    match agents {
        0..=5_000 => Some(1000.0),
        5_001..=10_000 => Some(2000.0),
        _ => None,
    }
}

pub fn print_rollout(rows: &[Rollout]) {
    println!("\n== rollout: policy apply returned -> desired state received / report committed");
    println!(
        "{:>7} {:>9} {:>9} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} | target p99 (received)",
        "agents",
        "revision",
        "apply ms",
        "recv p50",
        "p95",
        "p99",
        "max",
        "rept p50",
        "p95",
        "p99",
        "max"
    );
    for r in rows {
        let target = match rollout_target_ms(r.agents) {
            Some(t) => format!("<= {t:.0} ms {}", mark(r.received.p99_ms <= t)),
            None => "-".into(),
        };
        println!(
            "{:>7} {:>9} {:>9.1} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {target}",
            r.agents,
            r.revision,
            r.apply_ms,
            r.received.p50_ms,
            r.received.p95_ms,
            r.received.p99_ms,
            r.received.max_ms,
            r.reported.p50_ms,
            r.reported.p95_ms,
            r.reported.p99_ms,
            r.reported.max_ms,
        );
    }
}

pub fn print_memory(rows: &[Memory]) {
    println!("\n== controller memory per connected agent (VmRSS of the three controllers)");
    println!(
        "{:>7} {:>14} {:>14} {:>14} {:>16} | target (KiB/agent)",
        "agents", "before KiB", "after KiB", "KiB/agent", "KiB/added agent"
    );
    for m in rows {
        let added = m.added_per_agent_kib.map_or("-".to_owned(), |k| format!("{k:.1}"));
        println!(
            "{:>7} {:>14} {:>14} {:>14.1} {:>16} | <= 20 KiB {}",
            m.agents,
            m.rss_before_kib,
            m.rss_after_kib,
            m.per_agent_kib,
            added,
            mark(m.per_agent_kib <= 20.0)
        );
    }
    println!(
        "KiB/agent: (after - before) / agents, from the enrolled fleet's RSS; KiB/added agent: since the previous size"
    );
}

pub fn print_membership(m: &Membership) {
    println!(
        "\n== membership: a new pacs host enrolls; every agent referring to the segment gets its address"
    );
    println!(
        "{:>11} {:>10} {:>9} {:>9} {:>9} {:>12} {:>7} | target",
        "referring", "enroll ms", "p50 ms", "p99 ms", "all ms", "from start", "others"
    );
    let target = if m.referring >= 5_000 {
        format!("<= 1000 ms {}", mark(m.all_ms <= 1000.0))
    } else {
        "(<= 1000 ms at 5,000)".into()
    };
    println!(
        "{:>11} {:>10.1} {:>9.1} {:>9.1} {:>9.1} {:>12.1} {:>7} | {target}",
        m.referring,
        m.enroll_ms,
        m.received.p50_ms,
        m.received.p99_ms,
        m.all_ms,
        m.all_from_start_ms,
        m.others_woken
    );
}

pub fn print_reconnect(r: &Reconnect) {
    println!(
        "\n== reconnect: all controllers killed and restarted; time until every agent streams again"
    );
    println!(
        "{:>7} {:>10} {:>9} {:>9} {:>9} {:>12} | target",
        "agents", "leader ms", "p50 ms", "p99 ms", "all ms", "handshakes/s"
    );
    let target = if r.agents >= 5_000 {
        format!("<= 5000 ms at 5,000: {}", mark(r.all_ms <= 5000.0))
    } else {
        "(<= 5000 ms at 5,000)".into()
    };
    println!(
        "{:>7} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>12.0} | {target}",
        r.agents, r.leader_ms, r.streaming.p50_ms, r.streaming.p99_ms, r.all_ms, r.handshakes_per_s
    );
}

pub fn print_events(e: &Events) {
    println!("\n== events: login events through Report (the ack comes after the commit)");
    println!(
        "{:>7} {:>6} {:>8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} | target",
        "agents", "batch", "seconds", "events", "reports", "events/s", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "{:>7} {:>6} {:>8.1} {:>9} {:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} | >= 50,000/s {}",
        e.agents,
        e.batch,
        e.seconds,
        e.events,
        e.reports,
        e.events_per_s,
        e.commit.p50_ms,
        e.commit.p99_ms,
        e.commit.max_ms,
        mark(e.events_per_s >= 50_000.0)
    );
}
