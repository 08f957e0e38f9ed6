//! Running the real `bulwarkctl` as an operator would.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_controller::tls::TlsFiles;

use crate::cluster::workspace_bin;
use crate::netlab::LabHost;

/// What a `bulwarkctl` run printed.
#[derive(Debug)]
pub struct CtlOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bulwarkctl ARGS` against `endpoints` with the identity in `tls` (through the
/// BULWARK_* environment, as an operator's shell would); it must finish within 30 s.
pub async fn bulwarkctl(endpoints: &str, tls: &TlsFiles, args: &[&str]) -> Result<CtlOutput> {
    run(std::process::Command::new(workspace_bin("bulwarkctl")?), endpoints, tls, args).await
}

/// [`bulwarkctl`] run inside lab host `host` (`ip netns exec`), as an operator on that
/// host would: `endpoints` are lab addresses ([`Cluster::controller_urls`]), and leader
/// hints (lab addresses too) work from there. Any lab host may serve, a controller's own
/// included; a host cut off by a partition reaches only itself.
///
/// [`Cluster::controller_urls`]: crate::Cluster::controller_urls
pub async fn bulwarkctl_in(
    host: &LabHost,
    endpoints: &str,
    tls: &TlsFiles,
    args: &[&str],
) -> Result<CtlOutput> {
    run(host.command(workspace_bin("bulwarkctl")?), endpoints, tls, args).await
}

async fn run(
    cmd: std::process::Command,
    endpoints: &str,
    tls: &TlsFiles,
    args: &[&str],
) -> Result<CtlOutput> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.args(args)
        .env("BULWARK_ENDPOINTS", endpoints)
        .env("BULWARK_TLS_CA", &tls.ca)
        .env("BULWARK_TLS_CERT", &tls.cert)
        .env("BULWARK_TLS_KEY", &tls.key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .context("bulwarkctl hung")??;
    Ok(CtlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
