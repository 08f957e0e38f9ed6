//! Leader loss and minority: acknowledged writes survive a kill -9 of the leader, and of
//! every node at once, and are applied once; without a quorum a write fails fast and
//! clearly and is not applied.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bulwark_controller::client::ReadMode;
use bulwark_integration_tests::{Cluster, eventually};

/// Waits until node `id` has applied `revision` and returns its records by key.
async fn records_at(
    cluster: &Cluster,
    id: u64,
    revision: u64,
) -> Result<BTreeMap<String, (Vec<u8>, u64, u64)>> {
    let client = cluster.node_client(id)?;
    let list =
        eventually(&format!("node {id} at revision {revision}"), Duration::from_secs(20), || {
            let client = client.clone();
            async move {
                let list = client.list("", ReadMode::Stale).await?;
                ensure!(list.revision >= revision, "at revision {}", list.revision);
                Ok(list)
            }
        })
        .await?;
    Ok(list
        .records
        .into_iter()
        .map(|r| (r.key, (r.value, r.create_revision, r.mod_revision)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_leader_kill_and_apply_once() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client()?;

    // A writer that never stops on its own: every acknowledged key is recorded with the
    // time it was acknowledged.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{i:05}");
                match client.put("event", &key, key.clone().into_bytes(), None).await {
                    Ok(_) => acked.lock().unwrap().push((key, Instant::now())),
                    Err(e) => failures.push(e.to_string()),
                }
                i += 1;
            }
            failures
        })
    };
    let count = || acked.lock().unwrap().len();
    eventually("200 writes", Duration::from_secs(30), || async {
        ensure!(count() >= 200, "{} acknowledged", count());
        Ok(())
    })
    .await?;

    let old_leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    cluster.kill(old_leader)?;
    let killed_at = Instant::now();
    let before_kill = count();

    // The surviving two elect a leader that acknowledges writes within 2 s.
    let first_after =
        eventually("a write acknowledged after the kill", Duration::from_secs(10), || async {
            let acked = acked.lock().unwrap();
            match acked.iter().find(|(_, t)| *t > killed_at) {
                Some((_, t)) => Ok(t.duration_since(killed_at)),
                None => anyhow::bail!("none yet"),
            }
        })
        .await?;
    println!("failover: first write acknowledged {first_after:?} after the leader was killed");
    ensure!(
        first_after < Duration::from_secs(2),
        "the new leader acknowledged its first write {first_after:?} after the kill"
    );
    let new_leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    ensure!(new_leader != old_leader, "leader did not change");

    eventually("200 more writes", Duration::from_secs(30), || async {
        ensure!(count() >= before_kill + 200, "{} acknowledged", count());
        Ok(())
    })
    .await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures = writer.await?;
    ensure!(failures.is_empty(), "writes failed outright: {failures:?}");

    // The old leader comes back and catches up.
    cluster.restart(old_leader)?;
    let acked: Vec<String> = acked.lock().unwrap().iter().map(|(k, _)| k.clone()).collect();
    let final_revision = client.list("", ReadMode::Linearizable).await?.revision;
    let mut views = Vec::new();
    for id in [1, 2, 3] {
        views.push(records_at(&cluster, id, final_revision).await?);
    }
    for (i, view) in views.iter().enumerate() {
        ensure!(view == &views[0], "node {} differs from node 1", i + 1);
    }
    let view = &views[0];
    for key in &acked {
        let (value, create, modified) =
            view.get(key).ok_or_else(|| anyhow::anyhow!("acknowledged write {key} is missing"))?;
        ensure!(value == key.as_bytes(), "{key} has the wrong value");
        // A second application would have bumped mod_revision past create_revision.
        ensure!(create == modified, "{key} was applied twice ({create} then {modified})");
    }
    // Every revision is one distinct write: nothing was applied twice.
    ensure!(
        final_revision == view.len() as u64,
        "{} records but revision {final_revision}",
        view.len()
    );
    Ok(())
}

/// Every node killed at once, right after concurrent writes: no node's state machine had
/// synced its newest applies (sled flushes in the background), and each applies them
/// again from the Raft log on restart, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_every_node_killed_at_once() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client()?;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..16 {
        let client = client.clone();
        writers.spawn(async move {
            for i in 0..40 {
                let key = format!("c{w:02}-{i:02}");
                client.put("event", &key, key.clone().into_bytes(), None).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    // All 640 acknowledged; no pause before the kill.
    for id in [1, 2, 3] {
        cluster.kill(id)?;
    }
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(10)).await?;
    for id in [1, 2, 3] {
        let view = records_at(&cluster, id, 640).await?;
        ensure!(view.len() == 640, "node {id} has {} records, not 640", view.len());
        for (key, (value, create, modified)) in &view {
            ensure!(value == key.as_bytes(), "node {id}: {key} has the wrong value");
            ensure!(create == modified, "node {id}: {key} was applied twice");
        }
    }
    // The revision sequence goes on from where it was.
    let reply = client.put("policy", "after", b"1".to_vec(), None).await?;
    ensure!(reply.revision == 641, "revision {} after the restart, not 641", reply.revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_writes_fail_clearly_and_resume_when_a_node_returns() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let client = cluster.client()?;
    client.put("policy", "before", b"1".to_vec(), None).await?;

    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.kill(id)?;
    }
    // The leader notices it lost its majority once its lease (600 ms) runs out.
    eventually("the leader to lose its quorum", Duration::from_secs(10), || async {
        let s = cluster.status(leader).await?;
        let age = s.quorum_ack_age_ms.unwrap_or(0);
        ensure!(age > 600, "quorum acknowledged {age} ms ago");
        Ok(())
    })
    .await?;

    let survivor = cluster.node_client(leader)?.with_retry_for(Duration::ZERO);
    let started = Instant::now();
    let err = survivor.put("policy", "lost", b"x".to_vec(), None).await.unwrap_err();
    let took = started.elapsed();
    ensure!(err.is_no_quorum(), "expected a no-quorum error, got: {err}");
    ensure!(err.message.contains("no quorum"), "unclear message: {err}");
    ensure!(took < Duration::from_secs(5), "the write took {took:?} to fail");
    let seen = survivor.get("policy", "lost", ReadMode::Stale).await?;
    ensure!(seen.record.is_none(), "the refused write was applied");

    // A retrying client keeps failing with the same clear error until its budget ends.
    let err = cluster
        .node_client(leader)?
        .with_retry_for(Duration::from_secs(2))
        .put("policy", "lost2", b"x".to_vec(), None)
        .await
        .unwrap_err();
    ensure!(err.is_no_quorum(), "expected a no-quorum error, got: {err}");

    // One node returns: a majority again, and writes resume.
    cluster.restart(followers[0])?;
    let reply = client.put("policy", "after", b"2".to_vec(), None).await?;
    ensure!(reply.revision == 2, "revision {} after recovery", reply.revision);
    for key in ["lost", "lost2"] {
        let got = client.get("policy", key, ReadMode::Linearizable).await?;
        ensure!(got.record.is_none(), "{key} was applied after the quorum returned");
    }
    Ok(())
}
