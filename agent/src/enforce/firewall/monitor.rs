//! Event-driven drift detection: `nft monitor`, filtered to lines about `inet bulwark`.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{FirewallError, TABLE};
use crate::host::Host;

/// What the monitor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// The table changed (the first line of a burst; later lines are coalesced until this
    /// event is received). The agent's own applies show up too: re-observe and compare.
    Changed { line: String },
    /// `nft monitor` ended (why, with its stderr); no more events. Spawn a new monitor and
    /// re-observe, since changes in between were not seen.
    Exited { reason: String },
}

/// A running `nft monitor`. Dropping it kills the process.
#[derive(Debug)]
pub struct Monitor {
    pid: Option<u32>,
    rx: mpsc::Receiver<MonitorEvent>,
    task: JoinHandle<()>,
}

impl Monitor {
    pub(super) fn spawn(host: &Host) -> Result<Monitor, FirewallError> {
        let mut cmd = host.command("nft");
        cmd.arg("monitor")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(FirewallError::Monitor)?;
        let pid = child.id();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // Capacity 1 + try_send: a burst of lines (an apply of 10,000 elements prints one
        // line each) becomes one pending notification.
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let reason = match stdout {
                Some(out) => {
                    let mut lines = BufReader::new(out).lines();
                    loop {
                        match lines.next_line().await {
                            Ok(Some(line)) if concerns_table(&line) => {
                                let _ = tx.try_send(MonitorEvent::Changed { line });
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break "nft monitor closed its output".to_owned(),
                            Err(e) => break format!("cannot read nft monitor output: {e}"),
                        }
                    }
                }
                None => "nft monitor has no output pipe".to_owned(),
            };
            let status = child.wait().await;
            let mut err = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut err).await;
            }
            let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
            let reason = format!("{reason} ({status}) {}", err.trim()).trim().to_owned();
            let _ = tx.send(MonitorEvent::Exited { reason }).await;
        });
        Ok(Monitor { pid, rx, task })
    }

    /// The process id of `nft monitor` (of its wrapper, which execs it).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The next event; `None` after [`MonitorEvent::Exited`] was delivered.
    pub async fn next(&mut self) -> Option<MonitorEvent> {
        self.rx.recv().await
    }

    /// An event if one is pending, without waiting.
    pub fn try_next(&mut self) -> Option<MonitorEvent> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The task owns the child (kill_on_drop): aborting it ends `nft monitor`.
        self.task.abort();
    }
}

/// True for monitor lines about `inet bulwark`: `add rule inet bulwark input ...`,
/// `delete table inet bulwark`, `add element inet bulwark r2_h4 { ... }`, ...
pub(super) fn concerns_table(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let mut prev = match words.next() {
        Some(w) if !w.starts_with('#') => w,
        _ => return false,
    };
    for w in words.take(4) {
        if prev == "inet" && w == TABLE {
            return true;
        }
        prev = w;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::concerns_table;

    #[test]
    fn lines_about_the_table() {
        for line in [
            "delete table inet bulwark",
            "add rule inet bulwark input handle 7 ct state established,related counter accept",
            "add element inet bulwark r0_h4 { 1.2.3.4 }",
            "delete set inet bulwark __set0",
            "flush table inet bulwark",
        ] {
            assert!(concerns_table(line), "{line}");
        }
        for line in [
            "# new generation 5 by process 27606 (nft)",
            "add table inet bulwark2",
            "add rule ip nat POSTROUTING oifname \"eth0\" masquerade",
            "add chain inet firewalld filter_INPUT",
            "",
        ] {
            assert!(!concerns_table(line), "{line}");
        }
    }
}
