//! What an operator sees when something is wrong: one line naming the problem, and exit
//! code 2 for what must be fixed in flags, files or the data dir.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::cluster::{free_port, workspace_bin};
use bulwark_integration_tests::{Cluster, ClusterOptions};

/// Runs `bulwark-controller` with node `id`'s files and `overrides` replacing flags; it
/// must exit within 15 s. Returns (exit code, stderr).
async fn run_controller(
    cluster: &Cluster,
    id: u64,
    overrides: &[(&str, String)],
) -> Result<(i32, String)> {
    let node = &cluster.nodes[&id];
    let mut flags = vec![
        ("--node-id", id.to_string()),
        ("--listen", node.addr.clone()),
        ("--data-dir", node.data_dir.display().to_string()),
        ("--cluster-name", cluster.options.cluster_name.clone()),
        ("--tls-ca", node.tls.ca.display().to_string()),
        ("--tls-cert", node.tls.cert.display().to_string()),
        ("--tls-key", node.tls.key.display().to_string()),
    ];
    for (flag, value) in overrides {
        match flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value.clone(),
            None => flags.push((flag, value.clone())),
        }
    }
    let mut cmd = tokio::process::Command::new(workspace_bin("bulwark-controller")?);
    for (f, v) in &flags {
        cmd.arg(f).arg(v);
    }
    cmd.env("BULWARK_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(15), cmd.output())
        .await
        .context("bulwark-controller kept running instead of refusing to start")??;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_owned()))
}

fn one_line(stderr: &str) -> Result<&str> {
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(lines.len() == 1, "expected one line on stderr, got:\n{stderr}");
    Ok(lines[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_name_the_problem() -> Result<()> {
    let mut cluster = Cluster::empty(ClusterOptions::default())?;
    cluster.spawn(1)?;
    cluster.wait_ready(1).await?;
    let data_dir = cluster.nodes[&1].data_dir.display().to_string();

    // A missing TLS file.
    let free = format!("127.0.0.1:{}", free_port()?);
    let (code, err) = run_controller(
        &cluster,
        1,
        &[("--listen", free.clone()), ("--tls-cert", "/nonexistent/node.pem".into())],
    )
    .await?;
    ensure!(code == 2, "exit code {code}");
    ensure!(
        one_line(&err)?
            == "bulwark-controller: cannot read TLS certificate (--tls-cert) /nonexistent/node.pem: No such file or directory (os error 2)",
        "{err}"
    );

    // A port in use (node 1 holds its own).
    let (code, err) = run_controller(
        &cluster,
        1,
        &[("--data-dir", cluster.dir().join("other").display().to_string())],
    )
    .await?;
    let addr = cluster.addr(1);
    ensure!(code == 2, "exit code {code}: {err}");
    let want = format!(
        "bulwark-controller: cannot listen on {addr}: Address already in use (os error 98)"
    );
    ensure!(one_line(&err)? == want, "{err:?} != {want:?}");

    // A data dir in use by a running node.
    let (code, err) = run_controller(&cluster, 1, &[("--listen", free.clone())]).await?;
    ensure!(code == 2, "exit code {code}: {err}");
    ensure!(
        one_line(&err)?
            == format!(
                "bulwark-controller: data dir {data_dir} is in use by another bulwark-controller process"
            ),
        "{err}"
    );

    // A data dir from another node or cluster.
    cluster.stop(1).await?;
    let (code, err) = run_controller(
        &cluster,
        1,
        &[("--listen", free.clone()), ("--cluster-name", "radiology-east".into())],
    )
    .await?;
    ensure!(code == 2, "exit code {code}");
    ensure!(
        one_line(&err)?
            == format!(
                "bulwark-controller: data dir {data_dir} belongs to node 1 of cluster \"bulwark-lab\", but this is node 1 of cluster \"radiology-east\"; use an empty --data-dir for a new node"
            ),
        "{err}"
    );
    let (code, err) =
        run_controller(&cluster, 1, &[("--listen", free), ("--node-id", "2".into())]).await?;
    ensure!(
        code == 2 && err.contains("belongs to node 1") && err.contains("this is node 2"),
        "{code}: {err}"
    );

    // A missing required flag, and a config file with a typo.
    let config = cluster.dir().join("typo.toml");
    std::fs::write(&config, "node_id = 1\nlisten_addr = \"127.0.0.1:1\"\n")?;
    let (code, err) =
        run_controller(&cluster, 1, &[("--config", config.display().to_string())]).await?;
    let want = format!(
        "bulwark-controller: invalid configuration: {}:2:1: unknown field `listen_addr`",
        config.display()
    );
    ensure!(code == 2 && one_line(&err)?.starts_with(&want), "{code}: {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_errors_name_the_problem() -> Result<()> {
    let mut cluster = Cluster::empty(ClusterOptions::default())?;
    for id in [1, 2] {
        cluster.spawn(id)?;
        cluster.wait_ready(id).await?;
    }
    cluster.init(&[1]).await?;
    let client = cluster.node_client(1)?;

    // A node id already in use.
    let err = client.add_learner(1, &cluster.addr(2)).await.unwrap_err();
    ensure!(
        err.message == format!("node id 1 is already in use by the member at {}", cluster.addr(1)),
        "{err}"
    );
    // The wrong node at an address.
    let err = client.add_learner(7, &cluster.addr(2)).await.unwrap_err();
    ensure!(
        err.message == format!("the controller at {} is node 2, not node 7", cluster.addr(2)),
        "{err}"
    );

    // An unreachable peer fails fast.
    let nowhere = format!("127.0.0.1:{}", free_port()?);
    let started = Instant::now();
    let err = client.add_learner(5, &nowhere).await.unwrap_err();
    ensure!(err.message.starts_with(&format!("cannot reach node 5 at {nowhere}:")), "{err}");
    ensure!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A node with the same CA but another cluster name.
    cluster.spawn_named(3, "radiology-east")?;
    cluster.wait_ready(3).await?;
    let err = client.add_learner(3, &cluster.addr(3)).await.unwrap_err();
    ensure!(
        err.message
            == format!(
                "node 3 at {} belongs to cluster \"radiology-east\", not \"bulwark-lab\"",
                cluster.addr(3)
            ),
        "{err}"
    );
    // A node of another cluster (another CA): TLS refuses it.
    let mut foreign = Cluster::empty(ClusterOptions::default())?;
    foreign.spawn(4)?;
    foreign.wait_ready(4).await?;
    let err = client.add_learner(4, &foreign.addr(4)).await.unwrap_err();
    ensure!(
        err.message.starts_with(&format!(
            "cannot reach node 4 at {}: invalid peer certificate",
            foreign.addr(4)
        )),
        "{err}"
    );
    // A node that already belongs to a cluster of the same name.
    cluster.spawn(6)?;
    cluster.wait_ready(6).await?;
    cluster.node_client(6)?.init(vec![]).await?;
    let err = client.add_learner(6, &cluster.addr(6)).await.unwrap_err();
    ensure!(
        err.message.contains("node 6 at")
            && err.message.contains("already belongs to another cluster"),
        "{err}"
    );

    // Promote and remove of unknown nodes; removing the last voter.
    ensure!(client.promote(9).await.unwrap_err().message.contains("node 9 is not a member"));
    ensure!(client.remove(9).await.unwrap_err().message == "node 9 is not a member");
    ensure!(
        client.remove(1).await.unwrap_err().message
            == "node 1 is the last voter; a cluster needs one"
    );

    // The right node is added, and adding it again is a no-op.
    client.add_learner(2, &cluster.addr(2)).await?;
    let again = client.add_learner(2, &cluster.addr(2)).await?;
    ensure!(again.members.len() == 2, "{again:?}");
    Ok(())
}
