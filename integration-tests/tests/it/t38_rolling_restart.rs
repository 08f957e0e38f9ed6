//! A rolling restart: the three nodes restart one by one (SIGTERM, start, ready) while
//! agents stream their desired state and an admin keeps changing a policy. No write is
//! lost and every agent ends on the latest revision.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, ensure};
use bulwark_controller::client::{Client, ReadMode};
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::http::get;
use bulwark_integration_tests::{Cluster, eventually};

fn policy(round: u64) -> (String, String) {
    let doc = format!(
        "apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {{name: rolling}}\nspec:\n  selector: {{}}\n  priority: 50\n  annotations: {{checklist: [round {round}]}}\n  passwords: {{profile: cis-debian12, minLength: {}}}\n",
        12 + round % 20
    );
    ("rolling.yaml".into(), doc)
}

/// Follows the agent's desired state across node restarts, resuming from what it has;
/// records the newest revision received.
async fn follow(client: Client, newest: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let have = newest.load(Ordering::Relaxed);
        let Ok(mut stream) = client.stream_desired_state(have).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while let Ok(Some(state)) = stream.message().await {
            newest.fetch_max(state.revision, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_write_and_agents_end_current() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(vec![policy(0)], false).await?;
    let token = admin.create_token(Default::default(), Duration::from_secs(600), 3).await?.token;
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    for (i, node) in [1u64, 2, 3].into_iter().enumerate() {
        let addr = format!("198.18.30.{}", 10 + i);
        let agent =
            LabAgent::enroll_at(&cluster, &cluster.addr(node), &token, &format!("ws-{i}"), &addr)
                .await?;
        let newest = Arc::new(AtomicU64::new(0));
        // Each agent starts on a different node and fails over to the others.
        tokio::spawn(follow(agent.client(&cluster)?, newest.clone(), stop.clone()));
        agents.push((agent, newest));
    }

    // The admin writes throughout: records (counted) and policy changes (streamed).
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let admin = admin.clone();
        let stop = stop_writing.clone();
        tokio::spawn(async move {
            let (mut written, mut failed) = (0u64, 0u64);
            let mut round = 1;
            while !stop.load(Ordering::Relaxed) {
                // A write that fails (its node restarting) is retried under the same key
                // until acknowledged: the key exists once whatever happened to the first try.
                let key = format!("w{written:05}");
                if admin.put("asset", &key, b"x".to_vec(), None).await.is_err() {
                    failed += 1;
                    continue;
                }
                written += 1;
                if written % 10 == 0 {
                    while admin.apply_policies(vec![policy(round)], false).await.is_err() {
                        failed += 1;
                    }
                    round += 1;
                }
            }
            anyhow::Ok((written, failed))
        })
    };
    for id in 1..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.stop(id).await?;
        cluster.restart(id)?;
        let http = cluster.http_addr(id);
        eventually("the restarted node ready", Duration::from_secs(20), || async {
            let (code, body) = get(&http, "/readyz").await?;
            ensure!(code == 200, "node {id}: {code} {body}");
            Ok(())
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_writing.store(true, Ordering::Relaxed);
    let (written, failed) = writer.await??;
    eprintln!(
        "{written} writes acknowledged during the rolling restart ({failed} attempts retried)"
    );
    ensure!(written > 20, "only {written} writes during the restart");

    // Every acknowledged write is there.
    let list = admin.list("asset", ReadMode::Linearizable).await?;
    ensure!(list.records.len() as u64 == written, "{} of {written} writes", list.records.len());

    // One more change: every agent receives it, whichever node it streams from now.
    let applied = admin.apply_policies(vec![policy(999)], false).await?;
    for (agent, newest) in &agents {
        eventually("the agent on the latest revision", Duration::from_secs(20), || async {
            let have = newest.load(Ordering::Relaxed);
            ensure!(
                have >= applied.revision,
                "agent {} at {have} < {}",
                agent.id,
                applied.revision
            );
            Ok(())
        })
        .await?;
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}
