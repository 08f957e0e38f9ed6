//! `bulwark-loadgen`'s scenarios at a tiny fleet (20 agents, then 24) against its own real
//! 3-node cluster, so the bench keeps working. Correctness only, never timing: every agent
//! got each rollout and reported it, the new pacs address reached every modality and no
//! one else, every agent streams again after all controllers restarted, every event sent
//! was acknowledged as stored, and the cluster holds them.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::loadgen::{self, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_scenarios_at_a_tiny_fleet() -> Result<()> {
    let config = Config {
        agents: vec![20, 24],
        event_batch: 5,
        event_duration: Duration::from_secs(1),
        enroll_concurrency: 4,
        step_timeout: Duration::from_secs(60),
        verbose: false,
        ..Default::default()
    };
    let r = loadgen::run(&config).await?;

    let enrolled = r.enrollment.context("no enrollment figures")?;
    ensure!(enrolled.agents == 24, "{enrolled:?}");

    ensure!(r.rollout.len() == 2, "{:?}", r.rollout);
    for (rollout, n) in r.rollout.iter().zip([20, 24]) {
        ensure!(rollout.agents == n, "{rollout:?}");
        ensure!(rollout.received.n == n && rollout.reported.n == n, "{rollout:?}");
    }
    ensure!(r.rollout[1].revision > r.rollout[0].revision, "{:?}", r.rollout);
    ensure!(r.memory.len() == 2 && r.memory.iter().all(|m| m.rss_after_kib > 0), "{:?}", r.memory);

    let m = r.membership.context("no membership figures")?;
    // Even indexes are modalities: 12 of 24, the only ones referring to the pacs segment.
    ensure!(m.referring == 12 && m.received.n == 12, "{m:?}");
    ensure!(m.others_woken == 0, "agents not referring to pacs got a new state: {m:?}");

    let re = r.reconnect.context("no reconnect figures")?;
    ensure!(re.agents == 24 && re.streaming.n == 24, "{re:?}");

    let e = r.events.context("no event figures")?;
    ensure!(e.agents == 24 && e.reports > 0, "{e:?}");
    ensure!(e.events == e.reports * 5, "every acknowledged report stores its 5 events: {e:?}");
    ensure!(e.not_stored == 0, "{e:?}");
    // Every acknowledged event is stored (a report whose ack was lost may be stored too).
    ensure!(
        e.committed_listed.is_some_and(|n| n >= e.events),
        "the cluster lists what was acknowledged: {e:?}"
    );
    Ok(())
}
