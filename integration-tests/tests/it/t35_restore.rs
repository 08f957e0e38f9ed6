//! Backups: `bulwarkctl snapshot save` writes a checksummed file; `bulwark-controller
//! restore` refuses a corrupted or truncated one with a clear error, and seeds a new
//! cluster from a good one that holds every record, revision and audit entry; nodes that
//! join it later get the restored state.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::{Client, ReadMode};
use bulwark_controller::policy::read_paths;
use bulwark_integration_tests::cluster::workspace_bin;
use bulwark_integration_tests::ctl::bulwarkctl;
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;

/// Every record as (kind, key) -> (value, create revision, mod revision), and the revision.
async fn records(
    client: &Client,
    mode: ReadMode,
) -> Result<(HashMap<(String, String), (Vec<u8>, u64, u64)>, u64)> {
    let list = client.list("", mode).await?;
    let map = list
        .records
        .into_iter()
        .map(|r| ((r.kind, r.key), (r.value, r.create_revision, r.mod_revision)))
        .collect();
    Ok((map, list.revision))
}

fn restore(args: &[&str]) -> Result<std::process::Output> {
    Ok(std::process::Command::new(workspace_bin("bulwark-controller")?)
        .arg("restore")
        .args(args)
        .output()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_restores_into_a_new_cluster_and_bad_files_are_refused() -> Result<()> {
    let original = Cluster::start(3).await?;
    let admin = original.client()?;
    for i in 0..200 {
        admin
            .put("asset", &format!("ct-{i:03}"), format!("scanner {i}").into_bytes(), None)
            .await?;
    }
    let pack = read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)?;
    admin.apply_policies(pack, false).await?;
    admin.create_token(Default::default(), Duration::from_secs(600), 3).await?;
    let (before, revision) = records(&admin, ReadMode::Linearizable).await?;
    let audit_before = admin.list_audit(pb::ListAuditRequest::default()).await?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bulwark.snapshot");
    let file_arg = file.display().to_string();
    let endpoints = [1, 2, 3].map(|id| original.addr(id)).join(",");
    let saved = bulwarkctl(&endpoints, &original.admin, &["snapshot", "save", &file_arg]).await?;
    ensure!(saved.ok && saved.stdout.contains("SHA-256"), "{saved:?}");
    drop(admin);
    drop(original);

    // A flipped byte and a cut-off file are refused, naming the problem; nothing is created.
    let bytes = std::fs::read(&file)?;
    let corrupt = dir.path().join("corrupt.snapshot");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x40;
    std::fs::write(&corrupt, &flipped)?;
    let truncated = dir.path().join("truncated.snapshot");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2])?;
    let garbage = dir.path().join("garbage.snapshot");
    std::fs::write(&garbage, b"hello\nworld")?;
    for (path, expected) in [
        (&corrupt, "corrupted: SHA-256 of the data is"),
        (&truncated, "truncated: the header promises"),
        (&garbage, "not a Bulwark snapshot file"),
    ] {
        let target = dir.path().join("refused");
        let out = restore(&[
            "--from",
            &path.display().to_string(),
            "--data-dir",
            &target.display().to_string(),
            "--advertise",
            "127.0.0.1:1",
        ])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.code() == Some(2), "exit {:?}: {stderr}", out.status);
        ensure!(stderr.contains(expected), "{path:?}: {stderr}");
        ensure!(!target.exists(), "a refused restore created {}", target.display());
    }

    // A new cluster from the good file: one restored voter, then two nodes that join.
    let options = ClusterOptions { cluster_name: "restored".into(), ..Default::default() };
    let mut restored = Cluster::empty(options)?;
    restored.spawn_restored(1, &file)?;
    restored.wait_for_leader(Duration::from_secs(10)).await?;
    let client = restored.client()?;
    let (after, after_revision) = records(&client, ReadMode::Linearizable).await?;
    ensure!(after_revision == revision, "revision {after_revision}, saved at {revision}");
    ensure!(after.len() == before.len(), "{} records, saved {}", after.len(), before.len());
    for (k, v) in &before {
        ensure!(after.get(k) == Some(v), "record {k:?} differs after restore");
    }
    let audit_after = client.list_audit(pb::ListAuditRequest::default()).await?;
    ensure!(
        audit_before.iter().all(|e| audit_after.contains(e)),
        "audit entries were lost in the restore"
    );
    for id in [2, 3] {
        restored.spawn(id)?;
        restored.wait_ready(id).await?;
        client.add_learner(id, &restored.member_addr(id)).await?;
        client.promote(id).await?;
    }
    let node3 = restored.node_client(3)?;
    eventually("node 3 holds the restored state", Duration::from_secs(20), || async {
        let (three, rev) = records(&node3, ReadMode::Stale).await?;
        ensure!(rev >= revision && three.len() >= before.len(), "at revision {rev}");
        for (k, v) in &before {
            ensure!(three.get(k) == Some(v), "record {k:?} differs on node 3");
        }
        Ok(())
    })
    .await?;
    // The restored cluster takes writes with the next revisions.
    let put = client.put("asset", "after-restore", b"ok".to_vec(), None).await?;
    ensure!(put.revision == revision + 1, "{put:?}");
    let status = restored.status(1).await?;
    ensure!(status.members.len() == 3, "{status:?}");
    let _ = status.members.iter().find(|m| m.id == 3).context("node 3 not a member")?;
    Ok(())
}
