//! The README's first command keeps working: the demo runs through and cleans up.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::cluster::workspace_bin;

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
    ensure!(!std::path::Path::new(dir).exists(), "demo left {dir} behind");
    // The demo's lab namespaces carry its process id; none may be left.
    let namespaces = std::process::Command::new("ip").args(["netns", "list"]).output()?.stdout;
    let prefix = format!("bwl-{pid}-");
    let leftover: Vec<String> = String::from_utf8_lossy(&namespaces)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    ensure!(leftover.is_empty(), "the demo left namespaces behind: {leftover:?}");
    Ok(())
}
