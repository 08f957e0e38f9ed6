//! `bulwarkctl` as an operator runs it: the real binary against a real cluster.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::Cluster;
use bulwark_integration_tests::cluster::workspace_bin;
use bulwark_integration_tests::ctl::bulwarkctl;

/// Runs `bulwarkctl ARGS` with the lab's admin identity; returns (success, stdout, stderr).
async fn ctl(cluster: &Cluster, endpoints: &str, args: &[&str]) -> Result<(bool, String, String)> {
    let out = bulwarkctl(endpoints, &cluster.admin, args).await?;
    Ok((out.ok, out.stdout, out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulwarkctl_reports_status_and_reads_and_writes_records() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let all = [1, 2, 3].map(|id| cluster.addr(id)).join(",");

    let (ok, out, err) =
        ctl(&cluster, &all, &["record", "put", "policy", "radiology/base", "v1"]).await?;
    ensure!(ok && out.trim() == "revision 1", "{out}{err}");
    let (ok, out, err) =
        ctl(&cluster, &cluster.addr(3), &["record", "get", "policy", "radiology/base"]).await?;
    ensure!(ok && out.trim() == "v1", "{out}{err}");
    let (ok, _, err) = ctl(&cluster, &all, &["record", "get", "policy", "missing"]).await?;
    ensure!(!ok && err.trim() == "bulwarkctl: policy/missing not found (at revision 1)", "{err}");

    let (ok, out, err) = ctl(&cluster, &all, &["cluster", "status"]).await?;
    ensure!(ok, "{err}");
    let rows: Vec<&str> =
        out.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).collect();
    ensure!(rows.len() == 3, "{out}");
    ensure!(rows.iter().filter(|r| r.contains(" leader ")).count() == 1, "{out}");
    ensure!(rows.iter().all(|r| r.trim_end().ends_with("yes")), "{out}");

    // A member that is down is shown as unreachable, not hidden.
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    let down = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap_or(1);
    cluster.kill(down)?;
    let (ok, out, err) = ctl(&cluster, &cluster.addr(leader), &["cluster", "status"]).await?;
    ensure!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&format!("{down} ")))
        .with_context(|| format!("no row for node {down}:\n{out}"))?;
    ensure!(row.contains(" no ("), "{out}");

    let (ok, out, err) =
        ctl(&cluster, &cluster.addr(leader), &["cluster", "status", "--json"]).await?;
    ensure!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(doc["members"].as_array().map(Vec::len) == Some(3), "{out}");

    // The record write is in the audit log, with who made it.
    let (ok, audit, err) =
        ctl(&cluster, &cluster.addr(leader), &["audit", "--method", "StoreService/Put"]).await?;
    ensure!(ok, "{err}");
    ensure!(
        audit.lines().count() == 1
            && audit.contains("admin/lab")
            && audit.contains("policy/radiology/base"),
        "{audit}"
    );

    // A node that refuses connections is skipped even by calls that are never retried.
    let dead = format!("127.0.0.1:{}", bulwark_integration_tests::cluster::free_port()?);
    let client = bulwark_controller::client::Client::new(
        &cluster.tls()?,
        &[dead, cluster.addr(leader)],
        Duration::ZERO,
    )?;
    client.create_token(Default::default(), Duration::from_secs(60), 1).await?;

    // Unknown endpoints and missing credentials fail with one clear line.
    let (ok, _, err) =
        ctl(&cluster, "127.0.0.1:1", &["--timeout", "1s", "cluster", "status"]).await?;
    ensure!(!ok && err.trim().starts_with("bulwarkctl: 127.0.0.1:1: unreachable"), "{err}");
    let mut cmd = tokio::process::Command::new(workspace_bin("bulwarkctl")?);
    let out = cmd.args(["cluster", "status"]).env_remove("BULWARK_TLS_CA").output().await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.trim() == "bulwarkctl: --tls-ca (or BULWARK_TLS_CA) is required", "{err}");
    Ok(())
}
