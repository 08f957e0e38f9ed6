//! The user monitor: compares the host's accounts (passwd, shadow, group, sudoers and
//! sudoers.d under the root) with a baseline taken the first time a `users` section applied
//! (kept in the agent cache) and raises an event per change: `user-added`, `user-removed`,
//! `uid-changed`, `gid-changed`, `uid0-duplicate`, `privileged-group-added`,
//! `privileged-group-removed`, `password-emptied`, `system-account-shell`,
//! `sudoers-changed`, and `user-locked` when the policy's action is `lock`. It scans when
//! inotify reports a change in `/etc` or `/etc/sudoers.d` (the directories, so rename-over
//! writes by useradd are seen), and on the periodic full check.

pub mod accounts;
pub mod lock;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::accounts::{Password, Rules, Snapshot};
use self::lock::LockRecord;
use super::{EventSink, fields};
use crate::enforce::reconcile::now_ms;
use crate::host::Host;

pub const NAME: &str = "users";
const BASELINE: &str = "users.baseline";
/// The files of /etc whose change triggers a scan.
const WATCHED: [&str; 5] = ["passwd", "shadow", "group", "gshadow", "sudoers"];

pub struct UsersMonitor {
    pub host: Host,
    pub sink: EventSink,
    pub locks: LockRecord,
    /// The periodic full rescan.
    pub period: Duration,
    pub dry_run: bool,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub events: usize,
    pub accounts: usize,
}

impl UsersMonitor {
    pub fn new(host: Host, sink: EventSink, state_dir: &Path, period: Duration) -> Self {
        Self { host, sink, locks: LockRecord::new(state_dir), period, dry_run: false }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(
        self,
        mut desired: watch::Receiver<Option<Arc<pb::DesiredState>>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut changes: Option<mpsc::Receiver<()>> = None;
        let mut failures = 0u32;
        loop {
            let state = desired.borrow_and_update().clone();
            let revision = state.as_ref().map_or(0, |d| d.revision);
            let users = state.as_ref().and_then(|d| d.users.clone());
            let mut next = Instant::now() + self.period;
            match &users {
                None => {
                    changes = None;
                    self.sink.status(
                        NAME,
                        revision,
                        pb::EnforcerState::NotManaged,
                        "no users section in the policies".into(),
                        Vec::new(),
                    );
                }
                Some(policy) => {
                    if changes.is_none() {
                        changes = watch_etc(&self.host);
                    }
                    match self.scan(policy, revision).await {
                        Ok(scan) => {
                            failures = 0;
                            self.sink.status(
                                NAME,
                                revision,
                                pb::EnforcerState::Compliant,
                                String::new(),
                                vec![
                                    ("accounts".into(), scan.accounts.to_string()),
                                    (
                                        "watch".into(),
                                        if changes.is_some() { "inotify" } else { "periodic" }
                                            .into(),
                                    ),
                                ],
                            );
                        }
                        Err(reason) => {
                            failures += 1;
                            tracing::warn!(monitor = NAME, %reason, "scan failed");
                            self.sink.status(
                                NAME,
                                revision,
                                pb::EnforcerState::Failed,
                                reason,
                                Vec::new(),
                            );
                            next = Instant::now() + Duration::from_secs(1 << failures.min(6));
                        }
                    }
                }
            }
            let change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                c = desired.changed() => if c.is_err() { return },
                c = change => match c {
                    Some(()) => {
                        // useradd writes four files in a row: one scan for the burst.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Some(rx) = changes.as_mut() {
                            while rx.try_recv().is_ok() {}
                        }
                    }
                    None => changes = None,
                },
                () = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reads the accounts, compares them with the baseline, locks unexpected accounts if
    /// the policy says so, and spools the events with the new baseline.
    pub async fn scan(&self, policy: &pb::UserState, revision: u64) -> Result<Scan, String> {
        let host = self.host.clone();
        let now = tokio::task::spawn_blocking(move || accounts::read(&host))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let stored = match self.sink.mark(BASELINE).map_err(|e| e.to_string())? {
            Some(bytes) => Some(serde_json::from_slice::<Baseline>(&bytes).map_err(|e| {
                format!("the stored account baseline is unreadable ({e}); remove the agent cache to take a new one")
            })?),
            None => None,
        };
        let mut scan = Scan { events: 0, accounts: now.users.len() };
        let Some(stored) = stored else {
            tracing::info!(monitor = NAME, accounts = now.users.len(), "account baseline taken");
            let json = serde_json::to_vec(&Baseline { accounts: now, unexpected: BTreeSet::new() })
                .map_err(|e| e.to_string())?;
            self.sink.emit(&[], Some((BASELINE, &json))).await.map_err(|e| e.to_string())?;
            return Ok(scan);
        };
        let rules = Rules::from_state(policy);
        // Accounts that appeared since the baseline and the policy does not expect.
        let unexpected: BTreeSet<String> = now
            .users
            .keys()
            .filter(|n| !rules.allowed.contains(*n))
            .filter(|n| stored.unexpected.contains(*n) || !stored.accounts.users.contains_key(*n))
            .cloned()
            .collect();
        let mut changes = accounts::diff(&stored.accounts, &now, &rules);
        if !self.dry_run {
            changes.extend(self.release(&policy.released_accounts).await);
        }
        if policy.lock_unexpected && !policy.audit && !self.dry_run {
            changes.extend(self.lock(&now, &unexpected).await);
        }
        if changes.is_empty() && stored.accounts == now && stored.unexpected == unexpected {
            return Ok(scan);
        }
        let mut events = Vec::with_capacity(changes.len());
        for c in changes {
            events.push(
                self.sink
                    .event(NAME, c.kind, revision, c.summary, c.fields)
                    .map_err(|e| e.to_string())?,
            );
        }
        let json = serde_json::to_vec(&Baseline { accounts: now, unexpected })
            .map_err(|e| e.to_string())?;
        self.sink.emit(&events, Some((BASELINE, &json))).await.map_err(|e| e.to_string())?;
        scan.events = events.len();
        Ok(scan)
    }

    /// Releases the accounts an operator released through the controller: removes
    /// Bulwark's lock where there is one, and records them so they are never locked.
    async fn release(&self, released: &[String]) -> Vec<accounts::Change> {
        let mut out = Vec::new();
        for name in released {
            let (host, locks, user) = (self.host.clone(), self.locks.clone(), name.clone());
            match tokio::task::spawn_blocking(move || locks.release(&host, &user)).await {
                Ok(Ok(true)) => out.push(accounts::Change {
                    kind: "user-unlocked",
                    summary: format!("account {name} unlocked: released by an operator"),
                    fields: fields([("user", name.clone()), ("by", "controller".into())]),
                }),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => out.push(accounts::Change {
                    kind: "unlock-failed",
                    summary: format!("cannot unlock released account {name}: {e}"),
                    fields: fields([("user", name.clone()), ("reason", e.to_string())]),
                }),
                Err(e) => tracing::error!(monitor = NAME, error = %e, "unlock task failed"),
            }
        }
        out
    }

    /// Locks each unexpected account whose password is usable (set or empty), unless an
    /// operator released it: also one whose password is set after it appeared.
    async fn lock(&self, now: &Snapshot, unexpected: &BTreeSet<String>) -> Vec<accounts::Change> {
        let mut out = Vec::new();
        for name in unexpected {
            let usable = now
                .users
                .get(name)
                .is_some_and(|a| matches!(a.password, Password::Set | Password::Empty));
            if !usable {
                continue;
            }
            let (host, locks, user) = (self.host.clone(), self.locks.clone(), name.clone());
            let locked =
                tokio::task::spawn_blocking(move || locks.lock(&host, &user, now_ms())).await;
            match locked {
                Ok(Ok(true)) => out.push(accounts::Change {
                    kind: "user-locked",
                    summary: format!("unexpected account {name} locked (password disabled)"),
                    fields: fields([("user", name.clone()), ("action", "lock".into())]),
                }),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => out.push(accounts::Change {
                    kind: "lock-failed",
                    summary: format!("cannot lock unexpected account {name}: {e}"),
                    fields: fields([("user", name.clone()), ("reason", e.to_string())]),
                }),
                Err(e) => tracing::error!(monitor = NAME, error = %e, "lock task failed"),
            }
        }
        out
    }
}

/// What the monitor keeps in the cache: the accounts last seen, and the accounts that
/// appeared since monitoring began without the policy expecting them (lock candidates).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Baseline {
    accounts: Snapshot,
    #[serde(default)]
    unexpected: BTreeSet<String>,
}

/// Watches `<root>/etc` and `<root>/etc/sudoers.d` (directories, so renames are seen);
/// each message means an account or sudoers file changed. `None`: periodic scans only.
fn watch_etc(host: &Host) -> Option<mpsc::Receiver<()>> {
    let etc = host.path("/etc");
    let sudoers_d = host.path("/etc/sudoers.d");
    let (tx, rx) = mpsc::channel(1);
    let relevant = {
        let (etc, sudoers_d) = (etc.clone(), sudoers_d.clone());
        move |p: &PathBuf| {
            p == &sudoers_d
                || p.parent() == Some(sudoers_d.as_path())
                || (p.parent() == Some(etc.as_path())
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| WATCHED.contains(&n)))
        }
    };
    let mut watcher = match notify::recommended_watcher(
        move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if event.paths.iter().any(&relevant) {
                // Full: a scan is pending already and will see this change too.
                let _ = tx.try_send(());
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(monitor = NAME, error = %e, "no inotify; periodic account scans only");
            return None;
        }
    };
    let mut watching = 0;
    for dir in [&etc, &sudoers_d] {
        if dir.is_dir() {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => watching += 1,
                Err(e) => {
                    tracing::warn!(monitor = NAME, dir = %dir.display(), error = %e, "cannot watch")
                }
            }
        }
    }
    if watching == 0 {
        return None;
    }
    // The watcher lives as long as someone listens: a task holds it until then.
    let (fwd_tx, fwd_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut rx = rx;
        loop {
            tokio::select! {
                () = fwd_tx.closed() => return,
                got = rx.recv() => match got {
                    // Full: a scan is pending already.
                    Some(()) => { let _ = fwd_tx.try_send(()); }
                    None => return,
                },
            }
        }
    });
    Some(fwd_rx)
}
