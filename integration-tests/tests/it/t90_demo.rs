//! The README's first command keeps working: the demo runs through and cleans up, and
//! stopped with SIGTERM while it waits (as `kill`, `timeout` or systemd stop it), it cleans
//! up like after Ctrl-C. Needs root (the demo's lab namespaces); fails saying so otherwise.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::cluster::workspace_bin;
use bulwark_integration_tests::netlab::{self, namespaces_of, remove_namespaces_of};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_through_and_leaves_nothing_behind() -> Result<()> {
    let mut cmd = tokio::process::Command::new(workspace_bin("bulwark-demo")?);
    cmd.arg("--no-wait")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn()?;
    let pid = child.id().context("the demo has no pid")?;
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .context("demo hung")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "was elected leader",
        "1,000 durable writes",
        "leads now",
        "like the others",
        "documents stored at revision",
        "all 5 compliant",
        "(DICOM)        Accepted",
        "(SSH)     TimedOut",
        "(IPP)         Accepted",
        "(JetDirect)   TimedOut",
        "repaired in",
        "drift-repaired",
        "user-added",
        "service-tech",
        "pacs-2:104 Accepted",
        "SecurityService/CreateToken",
        "(5 hosts: 4 met, 1 repaired, 0 not met, 0 unknown",
        "cluster status",
    ] {
        ensure!(stdout.contains(expected), "demo output lacks {expected:?}:\n{stdout}");
    }
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("in "))
        .context("demo did not print its directory")?;
    ensure!(!Path::new(dir).exists(), "demo left {dir} behind");
    let leftover = namespaces_of(pid);
    ensure!(leftover.is_empty(), "the demo left namespaces behind: {leftover:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_waiting_demo_and_it_leaves_nothing_behind() -> Result<()> {
    // The demo creates its lab namespaces only as root.
    netlab::ensure_root()?;
    // Every temp dir the demo and the processes it starts create goes in here (tempfile
    // honours TMPDIR), so what is left in it is exactly what this run left.
    let tmp = tempfile::Builder::new().prefix("bwt-demo-").tempdir()?;
    let mut child = tokio::process::Command::new(workspace_bin("bulwark-demo")?)
        .env("TMPDIR", tmp.path())
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id().context("the demo has no pid")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut stdout = String::new();
    let waiting = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(line) = lines.next_line().await? {
            let press = line.starts_with("Press Ctrl-C");
            stdout.push_str(&line);
            stdout.push('\n');
            if press {
                return anyhow::Ok(true);
            }
        }
        Ok(false)
    })
    .await;
    let waiting = match waiting {
        Ok(w) => w?,
        Err(_) => false,
    };
    if !waiting {
        let _ = child.kill().await;
        let leftover = remove_namespaces_of(pid);
        anyhow::bail!(
            "the demo never said it waits (namespaces removed after it: {leftover:?}):\n{stdout}\n{}",
            stderr.await.unwrap_or_default()
        );
    }

    // What this run made, seen before the signal, so the checks after it are not vacuous.
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("in "))
        .context("demo did not print its directory")?
        .to_owned();
    ensure!(
        Path::new(&dir).starts_with(tmp.path()) && Path::new(&dir).exists(),
        "the demo's directory {dir} is not in its TMPDIR {}",
        tmp.path().display()
    );
    let namespaces = namespaces_of(pid);
    ensure!(
        namespaces.len() >= 6,
        "the waiting demo should hold its lab (bridge, c1-c3, agent hosts): {namespaces:?}"
    );

    let kill = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    ensure!(kill.success(), "kill -TERM {pid} failed");
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        anyhow::Ok(child.wait().await?)
    })
    .await;
    let status = match status {
        Ok(s) => s?,
        Err(_) => {
            let _ = child.kill().await;
            anyhow::bail!("the demo did not exit within 60 s of SIGTERM:\n{stdout}")
        }
    };
    let stderr = stderr.await.unwrap_or_default();
    // Checked before the exit status, and removed if left, so a failing run cleans up too.
    let leftover_ns = remove_namespaces_of(pid);
    ensure!(
        status.success(),
        "the demo stopped with SIGTERM exited with {status} (namespaces left: {leftover_ns:?}):\n{stdout}\n{stderr}"
    );
    ensure!(
        stdout.contains("SIGTERM: stopping the agents and the cluster"),
        "the demo did not say it got SIGTERM:\n{stdout}"
    );
    ensure!(leftover_ns.is_empty(), "the demo left namespaces behind: {leftover_ns:?}");
    let leftover_files: Vec<String> = std::fs::read_dir(tmp.path())?
        .map(|e| Ok(e?.path().display().to_string()))
        .collect::<Result<_>>()?;
    ensure!(leftover_files.is_empty(), "the demo left files behind: {leftover_files:?}");
    Ok(())
}
