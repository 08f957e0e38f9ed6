//! The password policy as an [`Enforcer`]: keeps the managed keys of `/etc/login.defs`,
//! `/etc/security/pwquality.conf` and `/etc/security/faillock.conf` (under `--root`) at the
//! values of a named, versioned profile plus the policy's overrides.
//!
//! `observe` reads the files (and pwquality.conf.d drop-ins), [`plan::plan`] (pure) judges
//! every key on its effective value and edits only what differs, `apply` writes each
//! changed file atomically after keeping a one-time `<file>.bulwark-orig` backup. A change
//! to a key the enforcer had already put in force is drift: repaired and reported with
//! before/after, unless the policy says audit. Accounts whose password aging is longer
//! than the policy (login.defs only applies to new accounts) are reported, not changed.

pub mod files;
pub mod plan;
pub mod profiles;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bulwark_proto::v1 as pb;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::enforce::{EnforceError, Enforcer, Finding, Pass, Trigger};
use crate::host::Host;
use crate::identity::write_atomically;
use files::{ConfigFile, Warning};
use plan::{FileEdit, Observed, Plan, aging_out_of_policy, effective_values};
use profiles::{Desired, ManagedFile, PWQUALITY_DROPINS};

pub const NAME: &str = "passwords";

/// Suffix of the copy of a managed file as it was before Bulwark first changed it.
pub const BACKUP_SUFFIX: &str = ".bulwark-orig";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("unknown password profile {name:?} (known: {known})")]
    UnknownProfile { name: String, known: String },
    #[error("passwords.{field}: {reason}")]
    InvalidOverride { field: &'static str, reason: String },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("still out of policy after writing: {0}")]
    NotInForce(String),
}

/// Reads the managed files and pwquality.conf.d drop-ins under the host root. A missing
/// file is `None`; an unreadable one is an error naming it. Lines that cannot be parsed
/// come back as warnings.
pub fn observe(host: &Host) -> Result<(Observed, Vec<Warning>), PasswordError> {
    let mut observed = Observed::default();
    let mut warnings = Vec::new();
    for file in ManagedFile::ALL {
        let parsed = read_text(host, file.path())?.map(|text| {
            let (f, w) = ConfigFile::parse(file.path(), file.syntax(), &text);
            warnings.extend(w);
            f
        });
        observed.files.insert(file, parsed);
    }
    let dir = host.path(PWQUALITY_DROPINS);
    let mut names = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_dropin(n))
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(PasswordError::Read { path: PWQUALITY_DROPINS.into(), source }),
    };
    // libpwquality globs `*.conf` and reads the matches in ASCII (byte) order.
    names.sort();
    for name in names {
        let path = format!("{PWQUALITY_DROPINS}/{name}");
        if let Some(text) = read_text(host, &path)? {
            let (f, w) = ConfigFile::parse(path, ManagedFile::Pwquality.syntax(), &text);
            warnings.extend(w);
            observed.pwquality_dropins.push(f);
        }
    }
    Ok((observed, warnings))
}

/// A name libpwquality's `*.conf` glob matches (globs skip dot files).
fn is_dropin(name: &str) -> bool {
    name.ends_with(".conf") && !name.starts_with('.')
}

/// The text of `path` (a host path), or None when it does not exist.
fn read_text(host: &Host, path: &str) -> Result<Option<String>, PasswordError> {
    match std::fs::read(host.path(path)) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| PasswordError::Invalid {
            path: path.to_owned(),
            reason: format!("not UTF-8 (byte {}); not editing it", e.utf8_error().valid_up_to()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PasswordError::Read { path: path.to_owned(), source }),
    }
}

/// Writes one file's new content: the original is copied to `<file>.bulwark-orig` once
/// (never overwritten), then the file is replaced atomically with its mode kept.
pub fn apply(host: &Host, edit: &FileEdit) -> Result<(), PasswordError> {
    let shown = edit.file.path();
    let write_err = |reason: String| PasswordError::Write { path: shown.to_owned(), reason };
    let path = host.path(shown);
    let mut mode = 0o644;
    if !edit.create {
        let meta = std::fs::metadata(&path).map_err(|e| write_err(e.to_string()))?;
        mode = meta.permissions().mode() & 0o7777;
        let backup = backup_path(&path);
        if !backup.exists() {
            let original = std::fs::read(&path).map_err(|e| write_err(e.to_string()))?;
            write_atomically(&backup, &original, mode).map_err(|e| write_err(e.to_string()))?;
        }
    } else if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_err(format!("{}: {e}", dir.display())))?;
    }
    write_atomically(&path, edit.content.as_bytes(), mode).map_err(|e| write_err(e.to_string()))
}

pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(BACKUP_SUFFIX);
    PathBuf::from(name)
}

#[derive(Default)]
struct Memory {
    /// The desired settings last put in force (or found in force): a difference from them
    /// is drift.
    in_force: Option<Desired>,
    /// Drift repaired while on this revision: (revision, what was found).
    repaired: Option<(u64, String)>,
    /// The last difference reported in audit mode (one event per distinct difference).
    audited: Option<String>,
}

struct Inner {
    host: Host,
    dry_run: bool,
    memory: Mutex<Memory>,
}

pub struct PasswordEnforcer {
    inner: Arc<Inner>,
}

impl PasswordEnforcer {
    /// `dry_run`: report what would change (like audit mode), change nothing.
    pub fn new(host: Host, dry_run: bool) -> Self {
        Self { inner: Arc::new(Inner { host, dry_run, memory: Mutex::default() }) }
    }
}

impl Inner {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass (blocking file I/O: run off the async runtime).
    fn pass(
        &self,
        revision: u64,
        state: Option<&pb::PasswordState>,
        trigger: &Trigger,
    ) -> Result<Pass, PasswordError> {
        let Some(state) = state else {
            *self.memory() = Memory::default();
            return Ok(Pass::new(revision, pb::EnforcerState::NotManaged));
        };
        let desired = Desired::from_state(state)?;
        let (observed, warnings) = observe(&self.host)?;
        let plan = plan::plan(&desired, &observed);
        let mut pass = Pass::new(revision, pb::EnforcerState::Compliant);
        if plan.is_empty() {
            let mut memory = self.memory();
            memory.in_force = Some(desired.clone());
            memory.audited = None;
            if let Some((r, what)) = memory.repaired.clone().filter(|(r, _)| *r == revision) {
                pass.state = pb::EnforcerState::DriftedRepaired;
                pass.reason = format!("drift repaired at revision {r}: {what}");
            }
            drop(memory);
            self.report(&mut pass, &desired, &observed, warnings);
            return Ok(pass);
        }
        let summary = plan.summary();
        if state.audit || self.dry_run {
            if self.dry_run {
                println!("--dry-run: the password policy differs ({summary}); would write:");
                for edit in &plan.edits {
                    println!("--- {}\n{}", edit.file.path(), edit.content);
                }
            }
            pass.state = pb::EnforcerState::AuditNoncompliant;
            pass.reason = format!("{summary}; mode audit, nothing changed");
            let mut memory = self.memory();
            if memory.audited.as_deref() != Some(&summary) {
                memory.audited = Some(summary.clone());
                pass.findings.push(Finding {
                    kind: "drift-detected",
                    summary: format!("password policy differs from {}: {summary}", desired.profile),
                    before: plan.changes().map(|c| c.before_text()).collect::<Vec<_>>().join("; "),
                    after: plan.changes().map(|c| c.after_text()).collect::<Vec<_>>().join("; "),
                });
            }
            drop(memory);
            self.report(&mut pass, &desired, &observed, warnings);
            return Ok(pass);
        }
        let drift = self.memory().in_force.as_ref() == Some(&desired);
        for edit in &plan.edits {
            apply(&self.host, edit)?;
        }
        tracing::info!(revision, profile = %desired.profile, ?trigger, changes = %summary, "password policy applied");
        // Judge the result as the libraries will read it.
        let (observed, warnings) = observe(&self.host)?;
        let left = plan::plan(&desired, &observed);
        if !left.is_empty() {
            return Err(PasswordError::NotInForce(left.summary()));
        }
        let mut memory = self.memory();
        memory.in_force = Some(desired.clone());
        memory.audited = None;
        if drift {
            memory.repaired = Some((revision, summary.clone()));
            pass.state = pb::EnforcerState::DriftedRepaired;
            pass.reason = format!("drift repaired: {summary}");
            pass.findings.extend(drift_findings(&plan));
        }
        drop(memory);
        self.report(&mut pass, &desired, &observed, warnings);
        Ok(pass)
    }

    /// Details: the profile, overrides, effective values, warnings, and accounts whose
    /// aging is out of policy (also named in the reason).
    fn report(
        &self,
        pass: &mut Pass,
        desired: &Desired,
        observed: &Observed,
        mut warnings: Vec<Warning>,
    ) {
        pass.details.push(("profile".into(), desired.profile.clone()));
        if !desired.overrides.is_empty() {
            pass.details.push(("overrides".into(), desired.overrides.join(", ")));
        }
        pass.details.extend(effective_values(desired, observed));
        if let Some(max) = desired.max_age_days {
            match read_text(&self.host, "/etc/shadow") {
                Ok(Some(shadow)) => {
                    let accounts = aging_out_of_policy(&shadow, max);
                    if !accounts.is_empty() {
                        let list = accounts.join(", ");
                        let note = format!(
                            "{} account(s) keep a password max age above {max} days (login.defs \
                             applies to new accounts only): {list}",
                            accounts.len()
                        );
                        pass.reason = if pass.reason.is_empty() {
                            note
                        } else {
                            format!("{}; {note}", pass.reason)
                        };
                        pass.details.push(("accounts_aging_out_of_policy".into(), list));
                    }
                }
                Ok(None) => {}
                Err(e) => warnings.push(Warning {
                    path: "/etc/shadow".into(),
                    line: 0,
                    reason: format!("account aging not checked: {e}"),
                }),
            }
        }
        if !warnings.is_empty() {
            for w in &warnings {
                tracing::warn!(path = %w.path, line = w.line, "{}", w.reason);
            }
            let text = warnings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            pass.details.push(("warnings".into(), text));
        }
    }
}

/// One `drift-repaired` finding per key put back.
fn drift_findings(plan: &Plan) -> Vec<Finding> {
    plan.changes()
        .map(|c| Finding {
            kind: "drift-repaired",
            summary: format!("password policy drift repaired: {c}"),
            before: c.before_text(),
            after: c.after_text(),
        })
        .collect()
}

/// The host paths a drift event is about, when they are managed files (or drop-ins).
fn managed_paths(host: &Host, event: &notify::Event) -> Vec<String> {
    use notify::event::{AccessKind, AccessMode};
    let relevant = matches!(
        event.kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    if !relevant {
        return Vec::new();
    }
    let dropins = host.path(PWQUALITY_DROPINS);
    event
        .paths
        .iter()
        .filter(|p| {
            ManagedFile::ALL.iter().any(|f| **p == host.path(f.path()))
                || **p == dropins
                || (p.parent() == Some(dropins.as_path())
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(is_dropin))
        })
        .map(|p| match p.strip_prefix(host.root()) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => p.display().to_string(),
        })
        .collect()
}

/// Adds a watch on each directory of `dirs` that exists and is not watched yet.
fn add_watches(watcher: &mut impl Watcher, dirs: &[PathBuf], watched: &mut HashSet<PathBuf>) {
    for dir in dirs {
        if !watched.contains(dir) && dir.is_dir() {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for password policy drift")
                }
            }
        }
    }
}

#[async_trait]
impl Enforcer for PasswordEnforcer {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Watches the directories (not the files, so editors' and tools' rename-over writes
    /// are seen) /etc, /etc/security and pwquality.conf.d under the root, and reports
    /// changes to the managed files and drop-ins. A directory that appears later is added.
    async fn watch_drift(&self) -> Option<mpsc::Receiver<String>> {
        let host = self.inner.host.clone();
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
        let mut watcher = match notify::recommended_watcher(move |res| {
            // The receiver is gone only when the watch task ended.
            let _ = raw_tx.send(res);
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "no event-driven password drift detection; periodic checks only");
                return None;
            }
        };
        let dirs = [host.path("/etc"), host.path("/etc/security"), host.path(PWQUALITY_DROPINS)];
        let mut watched = HashSet::new();
        add_watches(&mut watcher, &dirs, &mut watched);
        if watched.is_empty() {
            tracing::warn!(root = %host.root().display(), "no /etc to watch; periodic password checks only");
            return None;
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = tx.closed() => return,
                    event = raw_rx.recv() => event,
                };
                match event {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "password drift watch failed");
                        return;
                    }
                    Some(Ok(event)) => {
                        if matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_)) {
                            add_watches(&mut watcher, &dirs, &mut watched);
                        }
                        for path in managed_paths(&host, &event) {
                            match tx.try_send(format!("{path} changed")) {
                                // A pass is pending already; it will see this change too.
                                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                                Err(mpsc::error::TrySendError::Closed(_)) => return,
                            }
                        }
                    }
                }
            }
        });
        Some(rx)
    }

    async fn reconcile(
        &self,
        desired: &pb::DesiredState,
        trigger: &Trigger,
    ) -> Result<Pass, EnforceError> {
        let inner = self.inner.clone();
        let revision = desired.revision;
        let state = desired.passwords.clone();
        let trigger = trigger.clone();
        let pass =
            tokio::task::spawn_blocking(move || inner.pass(revision, state.as_ref(), &trigger))
                .await;
        match pass {
            Ok(result) => Ok(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(e.into()),
        }
    }
}
