//! The README's first command keeps working: the demo runs through and cleans up.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::cluster::workspace_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_through_and_leaves_nothing_behind() -> Result<()> {
    let mut cmd = tokio::process::Command::new(workspace_bin("bulwark-demo")?);
    cmd.arg("--no-wait").kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
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
        "radios off",
        "198.18.20.5/32,198.18.20.6/32",
        "SecurityService/CreateToken",
        "cluster status",
    ] {
        ensure!(stdout.contains(expected), "demo output lacks {expected:?}:\n{stdout}");
    }
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("in "))
        .context("demo did not print its directory")?;
    ensure!(!std::path::Path::new(dir).exists(), "demo left {dir} behind");
    Ok(())
}
