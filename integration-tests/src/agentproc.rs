//! Real `bulwark-agent` processes inside lab hosts: each with its own temporary host root
//! (`--root`) and state dir, enrolled with a bootstrap token through the real `enroll`
//! command, then run as the daemon. Dropping an [`AgentProc`] kills the agent and removes
//! its files (printing its log when the test panicked, or with `BULWARK_LAB_LOGS=1`).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::{Cluster, workspace_bin};
use crate::netlab::LabHost;
use crate::wait::eventually;

pub struct AgentProc {
    pub host: LabHost,
    pub id: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    log: PathBuf,
    run_args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl AgentProc {
    /// Enrolls an agent in `host` with `token` (CA verified by file) and starts it with
    /// `run_args` (e.g. `--confirm-within 3s`; `{root}` in an argument becomes the agent's
    /// host root, e.g. `--auth-log={root}/var/log/auth.log`).
    pub async fn start(
        cluster: &Cluster,
        host: &LabHost,
        token: &str,
        run_args: &[&str],
    ) -> Result<Self> {
        Self::start_with(cluster, host, token, run_args, |_| Ok(())).await
    }

    /// [`start`](Self::start) on a host root that holds a small Debian-like set of account
    /// files (root, daemon, nobody; groups root, adm, sudo, users), as a real host has: the
    /// users monitor takes its baseline from them and `useradd --prefix` works on them.
    pub async fn start_on_host_with_accounts(
        cluster: &Cluster,
        host: &LabHost,
        token: &str,
        run_args: &[&str],
    ) -> Result<Self> {
        Self::start_with(cluster, host, token, run_args, seed_accounts).await
    }

    async fn start_with(
        cluster: &Cluster,
        host: &LabHost,
        token: &str,
        run_args: &[&str],
        seed: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("bulwark-agent-").tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc"))?;
        seed(&root)?;
        std::fs::write(root.join("etc/hostname"), format!("{}\n", host.name()))?;
        std::fs::write(
            root.join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
        )?;
        let state_dir = dir.path().join("state");
        let urls = cluster.controller_urls().join(",");
        let ca = cluster.admin.ca.display().to_string();
        let out = host
            .command(workspace_bin("bulwark-agent")?)
            .args(["--state-dir", &state_dir.display().to_string()])
            .args(["--root", &root.display().to_string()])
            .args(["enroll", "--controller", &urls, "--ca", &ca, "--token", token])
            .output()
            .context("running bulwark-agent enroll")?;
        ensure!(
            out.status.success(),
            "bulwark-agent enroll in {} failed: {}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state_dir.join("agent.json"))?)?;
        let id = info["agent_id"].as_str().context("agent.json has no agent_id")?.to_owned();
        let mut agent = Self {
            host: host.clone(),
            id,
            root,
            state_dir,
            log: dir.path().join("agent.log"),
            run_args: run_args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            dir,
        };
        agent.run()?;
        Ok(agent)
    }

    /// Starts (again) the daemon.
    pub fn run(&mut self) -> Result<()> {
        ensure!(self.child.is_none(), "agent {} is already running", self.id);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = self
            .host
            .command(workspace_bin("bulwark-agent")?)
            .env("BULWARK_LOG", "info,bulwark_agent=debug")
            .env("BULWARK_LOG_FORMAT", "plain")
            .env("NO_COLOR", "1")
            .args(["--state-dir", &self.state_dir.display().to_string()])
            .args(["--root", &self.root.display().to_string()])
            .arg("run")
            .args(
                self.run_args.iter().map(|a| a.replace("{root}", &self.root.display().to_string())),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting bulwark-agent run")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = eventually("the agent to exit", Duration::from_secs(10), || {
            let status = child.try_wait();
            async move {
                match status? {
                    Some(s) => Ok(s),
                    None => bail!("still running"),
                }
            }
        })
        .await?;
        ensure!(status.success(), "agent exited with {status} after SIGTERM");
        Ok(())
    }

    /// `nft args` inside the agent's host.
    pub fn nft(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.host.exec("nft", args)?.stdout).into_owned())
    }

    /// Rules in table `inet bulwark` (0 when it is absent).
    pub fn bulwark_rules(&self) -> usize {
        self.nft(&["-a", "list", "table", "inet", "bulwark"]).map_or(0, |t| {
            t.lines()
                .filter(|l| l.contains("# handle") && !l.contains("chain ") && !l.contains("set "))
                .count()
        })
    }

    /// When the agent's current certificate expires (seconds since the epoch).
    pub fn cert_not_after(&self) -> Result<i64> {
        let info: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state_dir.join("agent.json"))?)?;
        info["cert_not_after"].as_i64().context("agent.json has no cert_not_after")
    }

    /// The daemon's `status.json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let path = self.state_dir.join("status.json");
        Ok(serde_json::from_slice(
            &std::fs::read(&path).with_context(|| path.display().to_string())?,
        )?)
    }

    /// The firewall enforcer's state in `status.json` (e.g. "compliant").
    pub fn firewall_state(&self) -> String {
        self.status()
            .ok()
            .and_then(|s| {
                s["enforcers"]
                    .as_array()?
                    .iter()
                    .find(|e| e["enforcer"] == "firewall")
                    .map(|e| format!("{} r{}", e["state"].as_str().unwrap_or(""), e["revision"]))
            })
            .unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Minimal account files under `root/etc` (no copy of this machine's).
pub fn seed_accounts(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    std::fs::write(
        etc.join("group"),
        "root:x:0:\nadm:x:4:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n",
    )?;
    std::fs::write(
        etc.join("shadow"),
        "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nnobody:*:20000:0:99999:7:::\n",
    )?;
    std::fs::write(etc.join("gshadow"), "root:*::\nadm:*::\nsudo:*::\nusers:*::\nnogroup:*::\n")?;
    for secret in ["shadow", "gshadow"] {
        std::fs::set_permissions(etc.join(secret), std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(())
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("BULWARK_LAB_LOGS").is_some() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- agent {} in {} (last lines) ---", self.id, self.host.name());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
