//! Every controller serves /healthz, /readyz and Prometheus /metrics over plain HTTP:
//! ready means a member of a cluster with a leader, caught up to the leader's commit.

use std::time::Duration;

use anyhow::{Result, ensure};
use bulwark_integration_tests::http::get;
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() -> Result<()> {
    let mut cluster = Cluster::empty(ClusterOptions::default())?;
    for id in 1..=3 {
        cluster.spawn(id)?;
    }
    // Up, but not a member of any cluster yet: alive, not ready.
    let http1 = cluster.http_addr(1);
    let (code, body) =
        eventually("/healthz", Duration::from_secs(10), || get(&http1, "/healthz")).await?;
    ensure!(code == 200 && body == "ok\n", "{code} {body:?}");
    let (code, body) = get(&http1, "/readyz").await?;
    ensure!(code == 503 && body.contains("not a member"), "{code} {body:?}");

    let leader = cluster.init(&[1, 2, 3]).await?;
    for id in 1..=3 {
        let addr = cluster.http_addr(id);
        eventually("ready", Duration::from_secs(10), || async {
            let (code, body) = get(&addr, "/readyz").await?;
            ensure!(code == 200, "node {id}: {code} {body}");
            Ok(())
        })
        .await?;
    }
    let client = cluster.client()?;
    for i in 0..10 {
        client.put("asset", &format!("k{i}"), b"v".to_vec(), None).await?;
    }
    let (code, metrics) = get(&cluster.http_addr(leader), "/metrics").await?;
    ensure!(code == 200, "{code}");
    for expected in [
        "bulwark_raft_is_leader 1",
        "bulwark_revision 10",
        "bulwark_raft_has_leader 1",
        "bulwark_raft_members 3",
        "bulwark_rollout{state=\"none\"} 1",
        "bulwark_grpc_request_duration_seconds_count{method=\"Put\"}",
        "bulwark_raft_leader_changes_total",
    ] {
        ensure!(metrics.contains(expected), "/metrics lacks {expected:?}:\n{metrics}");
    }
    let (code, _) = get(&cluster.http_addr(leader), "/nope").await?;
    ensure!(code == 404, "{code}");

    // The leader dies: the others are ready again once a new leader leads them.
    cluster.kill(leader)?;
    let other = if leader == 1 { 2 } else { 1 };
    let addr = cluster.http_addr(other);
    eventually("ready under a new leader", Duration::from_secs(15), || async {
        let (code, body) = get(&addr, "/readyz").await?;
        ensure!(code == 200, "{code} {body}");
        Ok(())
    })
    .await?;
    let (_, metrics) = get(&addr, "/metrics").await?;
    ensure!(!metrics.contains("bulwark_raft_leader_changes_total 0"), "{metrics}");
    Ok(())
}
