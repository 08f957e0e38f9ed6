//! Locking an account's password as `usermod -L` does (a `!` before the shadow hash), and
//! undoing it. The shadow file is rewritten atomically (temp, fsync, rename, fsync dir)
//! under shadow-utils' `shadow.lock`, keeping its mode and owner. Every lock Bulwark made is
//! recorded in a file of the state dir (`locked-users.json`), so `bulwark-agent users
//! unlock NAME` can reverse exactly those, even while the agent runs; an account so
//! released is not locked again.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::identity::write_atomically;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: held by another tool (shadow.lock) for over 5 s")]
    Busy { path: String },
    #[error("{0}")]
    Write(#[from] crate::identity::IdentityError),
    #[error("no account {user} in {path}")]
    NoAccount { user: String, path: String },
    #[error("{user} was not locked by Bulwark (nothing recorded in {record})")]
    NotRecorded { user: String, record: String },
    #[error("{path}: {reason}")]
    Record { path: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io { path: path.display().to_string(), source }
}

/// Holds shadow-utils' lock file (`<file>.lock` with our pid) until dropped.
struct FileLock(PathBuf);

impl FileLock {
    fn take(file: &Path) -> Result<Self, LockError> {
        let lock = PathBuf::from(format!("{}.lock", file.display()));
        for _ in 0..50 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(std::process::id().to_string().as_bytes()).map_err(io(&lock))?;
                    return Ok(Self(lock));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(io(&lock)(e)),
            }
        }
        Err(LockError::Busy { path: file.display().to_string() })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rewrites `user`'s shadow hash with `edit` (which returns `None` for no change).
fn edit_hash(
    host: &Host,
    user: &str,
    edit: impl Fn(&str) -> Option<String>,
) -> Result<bool, LockError> {
    let path = host.path("/etc/shadow");
    let _lock = FileLock::take(&path)?;
    let meta = std::fs::metadata(&path).map_err(io(&path))?;
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let mut found = false;
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 1);
    for line in text.split_inclusive('\n') {
        let mut parts: Vec<&str> = line.splitn(3, ':').collect();
        if parts.len() == 3 && parts[0] == user {
            found = true;
            if let Some(new) = edit(parts[1]) {
                changed = true;
                parts[1] = &new;
                out.push_str(&parts.join(":"));
                continue;
            }
        }
        out.push_str(line);
    }
    if !found {
        return Err(LockError::NoAccount { user: user.into(), path: path.display().to_string() });
    }
    if changed {
        write_atomically(&path, out.as_bytes(), meta.mode() & 0o7777)?;
        std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).map_err(io(&path))?;
    }
    Ok(changed)
}

/// Locks `user`'s password (`!` before the hash) unless it is locked already.
pub fn lock_password(host: &Host, user: &str) -> Result<bool, LockError> {
    edit_hash(host, user, |hash| (!hash.starts_with('!')).then(|| format!("!{hash}")))
}

/// What `locked-users.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locks {
    /// Accounts Bulwark locked → when (ms since the epoch).
    #[serde(default)]
    pub locked: BTreeMap<String, i64>,
    /// Accounts an operator unlocked: never locked again by the monitor.
    #[serde(default)]
    pub released: BTreeSet<String>,
}

/// The record of Bulwark's locks, in the state dir (not the cache, so the CLI can change
/// it while the agent runs).
#[derive(Debug, Clone)]
pub struct LockRecord(PathBuf);

impl LockRecord {
    pub fn new(state_dir: &Path) -> Self {
        Self(state_dir.join("locked-users.json"))
    }

    pub fn load(&self) -> Result<Locks, LockError> {
        match std::fs::read(&self.0) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LockError::Record {
                path: self.0.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Locks::default()),
            Err(e) => Err(io(&self.0)(e)),
        }
    }

    fn store(&self, all: &Locks) -> Result<(), LockError> {
        let json = serde_json::to_vec_pretty(all).map_err(|e| LockError::Record {
            path: self.0.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(write_atomically(&self.0, &json, 0o600)?)
    }

    /// Locks `user` and records it, unless an operator released it. `Ok(false)`: released,
    /// or locked already (then not recorded, so an unlock never opens an account Bulwark
    /// did not close).
    pub fn lock(&self, host: &Host, user: &str, at_ms: i64) -> Result<bool, LockError> {
        let mut all = self.load()?;
        if all.released.contains(user) {
            return Ok(false);
        }
        let changed = lock_password(host, user)?;
        if changed {
            all.locked.insert(user.to_owned(), at_ms);
            self.store(&all)?;
        }
        Ok(changed)
    }

    /// Releases `user` for good: reverses Bulwark's lock if it made one (`Ok(true)`), and
    /// records the account as released so it is never locked (`Ok(false)`: no lock to
    /// remove). A lock Bulwark did not make stays.
    pub fn release(&self, host: &Host, user: &str) -> Result<bool, LockError> {
        let mut all = self.load()?;
        if all.locked.contains_key(user) {
            self.unlock(host, user)?;
            return Ok(true);
        }
        if all.released.insert(user.to_owned()) {
            self.store(&all)?;
        }
        Ok(false)
    }

    /// Reverses a lock Bulwark made: removes the one `!` it added, and marks the account
    /// released so the monitor leaves it alone from now on.
    pub fn unlock(&self, host: &Host, user: &str) -> Result<(), LockError> {
        let mut all = self.load()?;
        if !all.locked.contains_key(user) {
            return Err(LockError::NotRecorded {
                user: user.into(),
                record: self.0.display().to_string(),
            });
        }
        edit_hash(host, user, |hash| hash.strip_prefix('!').map(str::to_owned))?;
        all.locked.remove(user);
        all.released.insert(user.to_owned());
        self.store(&all)
    }
}
