//! Every OS touchpoint of the agent: the host root every path hangs off (`--root`), and
//! the runner for host commands (`nft`, ...). Enforcers reach the host only through
//! [`Host`], so tests point them at a temporary tree and a lab network namespace.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} {args} failed ({status}): {stderr}")]
    Failed { program: String, args: String, status: String, stderr: String },
}

/// The output of a host command that succeeded.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
    /// Prepended to every command, e.g. `ip netns exec lab-host` in tests.
    wrapper: Vec<String>,
}

impl Host {
    /// The host at `root` (`/` in production).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), wrapper: Vec::new() }
    }

    /// Runs every command through `wrapper` (e.g. `["ip", "netns", "exec", "ns1"]`).
    pub fn with_command_wrapper(mut self, wrapper: Vec<String>) -> Self {
        self.wrapper = wrapper;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (absolute, as on the host) under the host root.
    pub fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// A command for `program`, through the wrapper if there is one.
    pub fn command(&self, program: &str) -> Command {
        match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// Runs `program args` with `stdin`, and fails with its stderr unless it exits 0.
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<Output, HostError> {
        let spawn_err = |source| HostError::Spawn { program: program.to_owned(), source };
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(spawn_err)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).await.map_err(spawn_err)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(HostError::Failed {
                program: program.to_owned(),
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(Output { stdout: out.stdout, stderr: out.stderr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_hang_off_the_root() {
        let host = Host::new("/tmp/lab-root");
        assert_eq!(host.path("/etc/login.defs"), PathBuf::from("/tmp/lab-root/etc/login.defs"));
        assert_eq!(Host::new("/").path("/etc/passwd"), PathBuf::from("/etc/passwd"));
    }

    #[tokio::test]
    async fn a_failing_command_names_itself_and_its_stderr() {
        let host = Host::new("/");
        let err = host.run("sh", &["-c", "echo nope >&2; exit 3"], None).await;
        let msg = err.map(|_| ()).unwrap_err().to_string();
        assert!(msg.contains("sh -c") && msg.contains("nope"), "{msg}");
        let out = host.run("cat", &[], Some(b"hello")).await.unwrap();
        assert_eq!(out.stdout, b"hello");
    }
}
