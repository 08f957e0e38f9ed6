//! Catch-up and restart: a late learner is brought up to date by snapshot install and
//! can be promoted; a whole cluster restarted from disk serves the same state.

use std::time::Duration;

use anyhow::{Result, ensure};
use bulwark_controller::client::{Client, ReadMode};
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;

/// Writes `n` records with up to 32 writes in flight.
async fn write_many(client: &Client, prefix: &str, n: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..32 {
        let client = client.clone();
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            for i in (lane..n).step_by(32) {
                client
                    .put("policy", &format!("{prefix}{i:05}"), vec![(i % 251) as u8; 64], None)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// Node `id`'s full record set once it has applied `revision`.
async fn state_of(cluster: &Cluster, id: u64, revision: u64) -> Result<Vec<pb::Record>> {
    let client = cluster.node_client(id)?;
    eventually(&format!("node {id} at revision {revision}"), Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let list = client.list("", ReadMode::Stale).await?;
            ensure!(list.revision == revision, "at revision {}", list.revision);
            Ok(list.records)
        }
    })
    .await
}

/// Waits until node `id` has a snapshot at log index `index` or later; its status then.
async fn snapshot_at(cluster: &Cluster, id: u64, index: u64) -> Result<pb::NodeStatus> {
    eventually(&format!("a snapshot on node {id}"), Duration::from_secs(20), || async {
        let s = cluster.status(id).await?;
        ensure!(s.snapshot_index >= index, "snapshot at {}", s.snapshot_index);
        Ok(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_catches_up_by_snapshot_and_is_promoted() -> Result<()> {
    // Concurrent writes share Raft entries (the leader's group commit), so 5,000 writes
    // are a few hundred entries: snapshot every 100.
    let options =
        ClusterOptions { snapshot_threshold: 100, snapshot_keep_logs: 10, ..Default::default() };
    let mut cluster = Cluster::start_with(3, options).await?;
    let client = cluster.client()?;
    write_many(&client, "p", 5_000).await?;
    let revision = client.list("", ReadMode::Linearizable).await?.revision;
    ensure!(revision == 5_000, "revision {revision}");
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    // The leader's log no longer starts at 1, so a new node cannot catch up from it.
    let leader_status = snapshot_at(&cluster, leader, 100).await?;

    cluster.spawn(4)?;
    cluster.wait_ready(4).await?;
    let added = client.add_learner(4, &cluster.addr(4)).await?;
    ensure!(added.members.iter().any(|m| m.id == 4 && !m.voter), "{added:?}");
    let expected = state_of(&cluster, leader, revision).await?;
    let learner = state_of(&cluster, 4, revision).await?;
    ensure!(learner == expected, "the learner's records differ from the leader's");
    let log = std::fs::read_to_string(&cluster.nodes[&4].log)?;
    ensure!(
        log.contains("installed snapshot"),
        "node 4 caught up without a snapshot (leader snapshot at {})",
        leader_status.snapshot_index
    );
    let s4 = cluster.status(4).await?;
    ensure!(s4.role == pb::Role::Learner as i32, "node 4 role {}", s4.role);

    // Promoted, it votes: with one original voter down, 3 of 4 voters remain and writes
    // commit only if node 4 counts towards the majority of 3.
    let promoted = client.promote(4).await?;
    ensure!(promoted.members.iter().any(|m| m.id == 4 && m.voter), "{promoted:?}");
    let victim = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap_or(1);
    cluster.kill(victim)?;
    write_many(&client, "q", 100).await?;
    let after = client.list("", ReadMode::Linearizable).await?;
    ensure!(after.revision == revision + 100, "revision {}", after.revision);
    let s4 = cluster.status(4).await?;
    ensure!(s4.role == pb::Role::Follower as i32, "node 4 role {}", s4.role);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restarted_from_disk_serves_the_same_state() -> Result<()> {
    // Low enough that the 500 writes (fewer entries: they share them) build snapshots.
    let options =
        ClusterOptions { snapshot_threshold: 20, snapshot_keep_logs: 5, ..Default::default() };
    let mut cluster = Cluster::start_with(3, options).await?;
    let client = cluster.client()?;
    write_many(&client, "r", 500).await?;
    client.delete("policy", "r00007", None).await?;
    let before = client.list("", ReadMode::Linearizable).await?;
    ensure!(before.revision == 501, "revision {}", before.revision);
    // The restart then loads a snapshot and replays the log after it.
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    snapshot_at(&cluster, leader, 1).await?;

    // One node dies hard, the others stop cleanly; then all come back.
    cluster.kill(1)?;
    cluster.stop(2).await?;
    cluster.stop(3).await?;
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(10)).await?;
    for id in [1, 2, 3] {
        let records = state_of(&cluster, id, before.revision).await?;
        ensure!(records == before.records, "node {id} serves a different state after restart");
    }
    // And the revision sequence continues.
    let next = client.put("policy", "after-restart", b"x".to_vec(), None).await?;
    ensure!(next.revision == 502, "revision {}", next.revision);
    Ok(())
}
