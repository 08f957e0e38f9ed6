//! The accounts of a host as the user monitor sees them (read from passwd, shadow, group and
//! the sudoers files under the root), and the pure comparison of two such snapshots into
//! the changes worth an alert. No password hash is kept: only whether it is set, locked or
//! empty.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::monitor::fields;

/// Groups whose members can become root (plus the policy's `privileged_groups`).
pub const DEFAULT_PRIVILEGED: [&str; 5] = ["sudo", "wheel", "admin", "adm", "root"];

/// System accounts have uids below this (Debian's and Red Hat's `UID_MIN`).
pub const UID_MIN: u32 = 1000;

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: String,
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Password {
    Set,
    /// `!` or `*` first: no password login.
    Locked,
    /// Anyone may log in without a password.
    Empty,
    /// Shadowed (`x`) but no shadow entry.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub shell: String,
    pub password: Password,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub gid: u32,
    /// Listed members (not users whose primary group it is).
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub users: BTreeMap<String, Account>,
    pub groups: BTreeMap<String, Group>,
    /// Host path of each sudoers file → the first 16 hex digits of its SHA-256.
    pub sudoers: BTreeMap<String, String>,
}

/// What the policy asks of the monitor.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub alert_new_users: bool,
    pub privileged: BTreeSet<String>,
    pub allowed: BTreeSet<String>,
}

impl Rules {
    pub fn from_state(s: &bulwark_proto::v1::UserState) -> Self {
        Self {
            alert_new_users: s.alert_new_users,
            privileged: DEFAULT_PRIVILEGED
                .iter()
                .map(|g| (*g).to_owned())
                .chain(s.privileged_groups.iter().cloned())
                .collect(),
            allowed: s.allowed_accounts.iter().cloned().collect(),
        }
    }
}

/// One change worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: &'static str,
    pub summary: String,
    pub fields: HashMap<String, String>,
}

fn read_optional(path: &Path) -> Result<String, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ReadError { path: path.display().to_string(), source }),
    }
}

/// `name:field1:field2...` lines, skipping comments and NIS `+`/`-` entries.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

fn password_state(hash: &str) -> Password {
    if hash.is_empty() {
        Password::Empty
    } else if hash.starts_with(['!', '*']) {
        Password::Locked
    } else {
        Password::Set
    }
}

/// Parses the four account files' texts.
pub fn parse(passwd: &str, shadow: &str, group: &str) -> Snapshot {
    let hashes: HashMap<&str, &str> =
        records(shadow).filter(|r| r.len() >= 2).map(|r| (r[0], r[1])).collect();
    let mut snap = Snapshot::default();
    for r in records(passwd) {
        let (Some(name), Some(pw), Some(uid), Some(gid)) = (
            r.first(),
            r.get(1),
            r.get(2).and_then(|u| u.parse().ok()),
            r.get(3).and_then(|g| g.parse().ok()),
        ) else {
            continue;
        };
        let password = match *pw {
            "x" => hashes.get(name).map_or(Password::Missing, |h| password_state(h)),
            other => password_state(other),
        };
        let shell = r.get(6).map_or(String::new(), |s| (*s).to_owned());
        snap.users.insert((*name).to_owned(), Account { uid, gid, shell, password });
    }
    for r in records(group) {
        let (Some(name), Some(gid)) = (r.first(), r.get(2).and_then(|g| g.parse().ok())) else {
            continue;
        };
        let members = r
            .get(3)
            .map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned))
            .into_iter()
            .flatten()
            .collect();
        snap.groups.insert((*name).to_owned(), Group { gid, members });
    }
    snap
}

fn digest(bytes: &[u8]) -> String {
    let d = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes));
    d[..16].to_owned()
}

/// Reads the host's accounts and sudoers files.
pub fn read(host: &Host) -> Result<Snapshot, ReadError> {
    let passwd_path = host.path("/etc/passwd");
    let passwd = std::fs::read(&passwd_path)
        .map_err(|source| ReadError { path: passwd_path.display().to_string(), source })?;
    let mut snap = parse(
        &String::from_utf8_lossy(&passwd),
        &read_optional(&host.path("/etc/shadow"))?,
        &read_optional(&host.path("/etc/group"))?,
    );
    let mut files: Vec<(String, PathBuf)> =
        vec![("/etc/sudoers".into(), host.path("/etc/sudoers"))];
    if let Ok(dir) = std::fs::read_dir(host.path("/etc/sudoers.d")) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((format!("/etc/sudoers.d/{name}"), entry.path()));
        }
    }
    for (shown, path) in files {
        match std::fs::read(&path) {
            Ok(bytes) => {
                snap.sudoers.insert(shown, digest(&bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory or unreadable entry in sudoers.d: sudo skips it too.
            Err(e) if path != host.path("/etc/sudoers") => {
                tracing::debug!(path = %path.display(), error = %e, "skipping sudoers entry")
            }
            Err(source) => return Err(ReadError { path: path.display().to_string(), source }),
        }
    }
    Ok(snap)
}

impl Snapshot {
    /// Everyone in `group`: listed members and users whose primary group it is.
    pub fn members(&self, group: &str) -> BTreeSet<String> {
        let Some(g) = self.groups.get(group) else { return BTreeSet::new() };
        let mut all = g.members.clone();
        all.extend(self.users.iter().filter(|(_, a)| a.gid == g.gid).map(|(n, _)| n.clone()));
        all
    }
}

fn login_shell(shell: &str) -> bool {
    !(shell.is_empty() || shell.ends_with("/nologin") || shell.ends_with("/false"))
}

/// The changes from `before` to `after` worth an alert under `rules`, in a stable order.
pub fn diff(before: &Snapshot, after: &Snapshot, rules: &Rules) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |kind, summary: String, f| out.push(Change { kind, summary, fields: f });
    for (name, a) in &after.users {
        let uid = a.uid.to_string();
        match before.users.get(name) {
            None => {
                if rules.alert_new_users && !rules.allowed.contains(name) {
                    push(
                        "user-added",
                        format!("new account {name} (uid {uid}, shell {})", a.shell),
                        fields([
                            ("user", name.clone()),
                            ("uid", uid.clone()),
                            ("gid", a.gid.to_string()),
                            ("shell", a.shell.clone()),
                        ]),
                    );
                }
            }
            Some(b) => {
                if b.uid != a.uid {
                    push(
                        "uid-changed",
                        format!("account {name}: uid {} -> {uid}", b.uid),
                        fields([
                            ("user", name.clone()),
                            ("uid", uid.clone()),
                            ("before", b.uid.to_string()),
                            ("after", uid.clone()),
                        ]),
                    );
                }
                if b.gid != a.gid {
                    push(
                        "gid-changed",
                        format!("account {name}: primary gid {} -> {}", b.gid, a.gid),
                        fields([
                            ("user", name.clone()),
                            ("uid", uid.clone()),
                            ("before", b.gid.to_string()),
                            ("after", a.gid.to_string()),
                        ]),
                    );
                }
            }
        }
        let was = before.users.get(name);
        if a.uid == 0 && name != "root" && was.is_none_or(|b| b.uid != 0) {
            push(
                "uid0-duplicate",
                format!("account {name} has uid 0 (a second root)"),
                fields([("user", name.clone()), ("uid", uid.clone())]),
            );
        }
        if a.password == Password::Empty && was.is_none_or(|b| b.password != Password::Empty) {
            push(
                "password-emptied",
                format!("account {name} has an empty password: anyone may log in as it"),
                fields([
                    ("user", name.clone()),
                    ("uid", uid.clone()),
                    ("before", was.map_or("none".into(), |b| format!("{:?}", b.password))),
                    ("after", "empty".into()),
                ]),
            );
        }
        let system = a.uid != 0 && a.uid < UID_MIN;
        if system && login_shell(&a.shell) && was.is_none_or(|b| !login_shell(&b.shell)) {
            push(
                "system-account-shell",
                format!("system account {name} (uid {uid}) got login shell {}", a.shell),
                fields([
                    ("user", name.clone()),
                    ("uid", uid.clone()),
                    ("before", was.map(|b| b.shell.clone()).unwrap_or_default()),
                    ("after", a.shell.clone()),
                ]),
            );
        }
    }
    for (name, b) in &before.users {
        if !after.users.contains_key(name) {
            push(
                "user-removed",
                format!("account {name} (uid {}) removed", b.uid),
                fields([("user", name.clone()), ("uid", b.uid.to_string())]),
            );
        }
    }
    for group in &rules.privileged {
        let (was, now) = (before.members(group), after.members(group));
        for user in now.difference(&was) {
            push(
                "privileged-group-added",
                format!("{user} added to privileged group {group}"),
                fields([("user", user.clone()), ("group", group.clone())]),
            );
        }
        for user in was.difference(&now) {
            push(
                "privileged-group-removed",
                format!("{user} removed from privileged group {group}"),
                fields([("user", user.clone()), ("group", group.clone())]),
            );
        }
    }
    let files: BTreeSet<&String> = before.sudoers.keys().chain(after.sudoers.keys()).collect();
    for file in files {
        let (b, a) = (before.sudoers.get(file), after.sudoers.get(file));
        if b != a {
            push(
                "sudoers-changed",
                format!(
                    "{file} {}",
                    match (b, a) {
                        (None, _) => "created",
                        (_, None) => "removed",
                        _ => "changed",
                    }
                ),
                fields([
                    ("file", file.clone()),
                    ("before", b.cloned().unwrap_or_default()),
                    ("after", a.cloned().unwrap_or_default()),
                ]),
            );
        }
    }
    out
}
