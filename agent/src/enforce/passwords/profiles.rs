//! Named, versioned password profiles and the policy's overrides on top of them. A
//! profile is the complete list of keys Bulwark manages in each file; keys a profile does
//! not name are left to the host. Values and their sources are documented in
//! docs/policy-reference.md (passwords); changing a value means a new version.

use std::collections::BTreeMap;
use std::fmt;

use bulwark_proto::v1 as pb;

use super::PasswordError;
use super::files::{Syntax, Wanted};

/// A file the enforcer manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManagedFile {
    LoginDefs,
    Pwquality,
    Faillock,
}

impl ManagedFile {
    pub const ALL: [ManagedFile; 3] =
        [ManagedFile::LoginDefs, ManagedFile::Pwquality, ManagedFile::Faillock];

    /// The path on the host (under `--root`).
    pub fn path(self) -> &'static str {
        match self {
            ManagedFile::LoginDefs => "/etc/login.defs",
            ManagedFile::Pwquality => "/etc/security/pwquality.conf",
            ManagedFile::Faillock => "/etc/security/faillock.conf",
        }
    }

    /// The short name used in findings and details.
    pub fn name(self) -> &'static str {
        match self {
            ManagedFile::LoginDefs => "login.defs",
            ManagedFile::Pwquality => "pwquality.conf",
            ManagedFile::Faillock => "faillock.conf",
        }
    }

    pub fn syntax(self) -> Syntax {
        match self {
            ManagedFile::LoginDefs => Syntax::KeyValue,
            ManagedFile::Pwquality | ManagedFile::Faillock => Syntax::KeyEquals,
        }
    }
}

impl fmt::Display for ManagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// pwquality.conf.d: drop-ins libpwquality reads (ASCII order) before pwquality.conf.
pub const PWQUALITY_DROPINS: &str = "/etc/security/pwquality.conf.d";

/// A profile: name, version, and the keys it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: &'static str,
    pub version: u32,
    pub settings: Vec<(ManagedFile, &'static str, Wanted)>,
}

impl Profile {
    /// `name@version`, as reported.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

use ManagedFile::{Faillock, LoginDefs, Pwquality};

fn v(x: impl ToString) -> Wanted {
    Wanted::value(x)
}

/// CIS Debian Linux 12 Benchmark v1.1.0, sections 5.3.3 (PAM: faillock, pwquality) and
/// 5.4.1 (shadow password suite), plus the default umask (5.4.3.3).
fn cis_debian12() -> Profile {
    Profile {
        name: "cis-debian12",
        version: 1,
        settings: vec![
            (LoginDefs, "PASS_MAX_DAYS", v(365)),
            (LoginDefs, "PASS_MIN_DAYS", v(1)),
            (LoginDefs, "PASS_WARN_AGE", v(7)),
            (LoginDefs, "ENCRYPT_METHOD", v("YESCRYPT")),
            (LoginDefs, "YESCRYPT_COST_FACTOR", v(5)),
            (LoginDefs, "UMASK", v("027")),
            (Pwquality, "minlen", v(14)),
            (Pwquality, "minclass", v(3)),
            (Pwquality, "dcredit", v(0)),
            (Pwquality, "ucredit", v(0)),
            (Pwquality, "lcredit", v(0)),
            (Pwquality, "ocredit", v(0)),
            (Pwquality, "maxrepeat", v(3)),
            (Pwquality, "maxsequence", v(3)),
            (Pwquality, "difok", v(2)),
            (Pwquality, "dictcheck", v(1)),
            (Pwquality, "enforce_for_root", Wanted::Flag),
            (Pwquality, "retry", v(3)),
            (Faillock, "deny", v(5)),
            (Faillock, "unlock_time", v(900)),
            (Faillock, "fail_interval", v(900)),
            (Faillock, "even_deny_root", Wanted::Flag),
            (Faillock, "root_unlock_time", v(60)),
        ],
    }
}

/// NIST SP 800-63B-4 (2025), 3.1.1.2 and 3.2.2: passwords used as a single factor are at
/// least 15 characters, no composition rules, a blocklist check, no periodic expiry, at
/// most 100 consecutive failures before lockout; salted memory-hard hashing.
fn nist_800_63b() -> Profile {
    Profile {
        name: "nist-800-63b",
        version: 1,
        settings: vec![
            (LoginDefs, "PASS_MAX_DAYS", v(99999)),
            (LoginDefs, "PASS_MIN_DAYS", v(0)),
            (LoginDefs, "ENCRYPT_METHOD", v("YESCRYPT")),
            (LoginDefs, "YESCRYPT_COST_FACTOR", v(5)),
            (Pwquality, "minlen", v(15)),
            (Pwquality, "minclass", v(0)),
            (Pwquality, "dcredit", v(0)),
            (Pwquality, "ucredit", v(0)),
            (Pwquality, "lcredit", v(0)),
            (Pwquality, "ocredit", v(0)),
            (Pwquality, "maxrepeat", v(0)),
            (Pwquality, "maxclassrepeat", v(0)),
            (Pwquality, "dictcheck", v(1)),
            (Faillock, "deny", v(100)),
            (Faillock, "unlock_time", v(600)),
            (Faillock, "fail_interval", v(900)),
        ],
    }
}

/// Every profile, newest version of each.
pub fn profiles() -> Vec<Profile> {
    vec![cis_debian12(), nist_800_63b()]
}

/// `name` or `name@version`.
pub fn profile(name: &str) -> Result<Profile, PasswordError> {
    let (base, version) = match name.split_once('@') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    let all = profiles();
    let known = || all.iter().map(Profile::id).collect::<Vec<_>>().join(", ");
    let found =
        all.iter().find(|p| p.name == base && version.is_none_or(|v| v == p.version.to_string()));
    found
        .cloned()
        .ok_or_else(|| PasswordError::UnknownProfile { name: name.to_owned(), known: known() })
}

/// The profile in force with the policy's overrides applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `name@version`.
    pub profile: String,
    /// The policy fields that override the profile, e.g. `minLength=12`.
    pub overrides: Vec<String>,
    pub settings: BTreeMap<ManagedFile, Vec<(&'static str, Wanted)>>,
    /// PASS_MAX_DAYS in force, for the account aging report.
    pub max_age_days: Option<u32>,
}

impl Desired {
    pub fn from_state(state: &pb::PasswordState) -> Result<Self, PasswordError> {
        let profile = profile(&state.profile)?;
        let mut settings: BTreeMap<ManagedFile, Vec<(&'static str, Wanted)>> = BTreeMap::new();
        for (file, key, wanted) in &profile.settings {
            settings.entry(*file).or_default().push((key, wanted.clone()));
        }
        let mut overrides = Vec::new();
        let mut set = |field: &str, value: Option<u32>, file: ManagedFile, key: &'static str| {
            let Some(value) = value else { return };
            overrides.push(format!("{field}={value}"));
            let keys = settings.entry(file).or_default();
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, w)) => *w = Wanted::value(value),
                None => keys.push((key, Wanted::value(value))),
            }
        };
        if let Some(n) = state.min_length
            && n < 6
        {
            return Err(PasswordError::InvalidOverride {
                field: "minLength",
                reason: format!("{n} is below libpwquality's floor of 6"),
            });
        }
        if let (Some(max), Some(min)) = (state.max_age_days, state.min_age_days)
            && min > max
        {
            return Err(PasswordError::InvalidOverride {
                field: "minAgeDays",
                reason: format!("{min} is more than maxAgeDays {max}"),
            });
        }
        set("minLength", state.min_length, Pwquality, "minlen");
        set("minClasses", state.min_classes, Pwquality, "minclass");
        set("maxAgeDays", state.max_age_days, LoginDefs, "PASS_MAX_DAYS");
        set("minAgeDays", state.min_age_days, LoginDefs, "PASS_MIN_DAYS");
        set("warnAgeDays", state.warn_age_days, LoginDefs, "PASS_WARN_AGE");
        set("lockoutAttempts", state.lockout_attempts, Faillock, "deny");
        set("unlockTimeSeconds", state.unlock_time_seconds, Faillock, "unlock_time");
        let max_age_days = settings.get(&LoginDefs).and_then(|keys| {
            keys.iter().find(|(k, _)| *k == "PASS_MAX_DAYS").and_then(|(_, w)| match w {
                Wanted::Value(v) => v.parse().ok(),
                Wanted::Flag => None,
            })
        });
        Ok(Self { profile: profile.id(), overrides, settings, max_age_days })
    }
}
