//! The pure half of the enforcer: desired profile + observed files -> the edits to make,
//! judged on the *effective* value of every key (what the reading library ends up with),
//! and the account aging report from /etc/shadow.

use std::collections::BTreeMap;
use std::fmt;

use super::files::{ConfigFile, Occurrence, Wanted, effective};
use super::profiles::{Desired, ManagedFile};

/// The managed files as found on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// None: the file does not exist.
    pub files: BTreeMap<ManagedFile, Option<ConfigFile>>,
    /// pwquality.conf.d/*.conf in the order libpwquality reads them (ASCII order, all
    /// before pwquality.conf, so pwquality.conf overrides them).
    pub pwquality_dropins: Vec<ConfigFile>,
}

impl Observed {
    /// The files `file`'s settings are read from, in reading order.
    pub fn sources(&self, file: ManagedFile) -> Vec<&ConfigFile> {
        let mut sources = Vec::new();
        if file == ManagedFile::Pwquality {
            sources.extend(self.pwquality_dropins.iter());
        }
        if let Some(Some(f)) = self.files.get(&file) {
            sources.push(f);
        }
        sources
    }

    /// The occurrence of `key` in force, if any.
    pub fn effective(&self, file: ManagedFile, key: &str) -> Option<Occurrence> {
        effective(self.sources(file), key)
    }
}

/// One managed key that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub file: ManagedFile,
    pub key: &'static str,
    /// The occurrence in force now (None: unset, the library default applies).
    pub before: Option<Occurrence>,
    pub after: Wanted,
}

impl Change {
    /// `pwquality.conf minlen=8` (`unset` when the key is not set anywhere).
    pub fn before_text(&self) -> String {
        match &self.before {
            Some(o) if o.path == self.file.path() => format!("{} {}", self.file, o.show(self.key)),
            Some(o) => format!("{} {} (from {}:{})", self.file, o.show(self.key), o.path, o.line),
            None => format!("{} {} unset", self.file, self.key),
        }
    }

    pub fn after_text(&self) -> String {
        match &self.after {
            Wanted::Value(v) => format!("{} {}={v}", self.file, self.key),
            Wanted::Flag => format!("{} {}", self.file, self.key),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.before_text(), self.after_text())
    }
}

/// What to write to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEdit {
    pub file: ManagedFile,
    /// The file does not exist yet.
    pub create: bool,
    pub changes: Vec<Change>,
    /// The whole new content.
    pub content: String,
}

/// Every edit a pass would make; empty when the host is in policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub edits: Vec<FileEdit>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.edits.iter().flat_map(|e| e.changes.iter())
    }

    /// One line per change, for reasons and findings.
    pub fn summary(&self) -> String {
        self.changes().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }
}

/// The edits that bring every managed key's effective value to the desired one. Only the
/// main file of each kind is edited: pwquality.conf is read after its drop-ins, so a value
/// set there wins over theirs.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    let mut edits = Vec::new();
    for (file, keys) in &desired.settings {
        let changes: Vec<Change> = keys
            .iter()
            .filter_map(|(key, wanted)| {
                let before = observed.effective(*file, key);
                let ok = before.as_ref().is_some_and(|o| wanted.satisfied_by(o.value.as_deref()));
                (!ok).then(|| Change { file: *file, key, before, after: wanted.clone() })
            })
            .collect();
        if changes.is_empty() {
            continue;
        }
        let existing = observed.files.get(file).and_then(Option::as_ref);
        let mut model =
            existing.cloned().unwrap_or_else(|| ConfigFile::created(file.path(), file.syntax()));
        for c in &changes {
            model.set(c.key, &c.after);
        }
        edits.push(FileEdit {
            file: *file,
            create: existing.is_none(),
            changes,
            content: model.render(),
        });
    }
    Plan { edits }
}

/// The effective value of every managed key, as reported (`pwquality.conf minlen` ->
/// `14`; `unset` when nothing sets it).
pub fn effective_values(desired: &Desired, observed: &Observed) -> Vec<(String, String)> {
    desired
        .settings
        .iter()
        .flat_map(|(file, keys)| {
            keys.iter().map(move |(key, _)| {
                let value = match observed.effective(*file, key) {
                    Some(Occurrence { value: Some(v), .. }) => v,
                    Some(Occurrence { value: None, .. }) => "set".to_owned(),
                    None => "unset".to_owned(),
                };
                (format!("{file} {key}"), value)
            })
        })
        .collect()
}

/// Accounts in `shadow` (the text of /etc/shadow) that have a usable password whose
/// maximum age exceeds `max_days` (an empty maximum never expires), as `name (max N)`.
/// login.defs only applies to accounts created later, so these are reported, not changed.
pub fn aging_out_of_policy(shadow: &str, max_days: u32) -> Vec<String> {
    shadow
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?.trim();
            let hash = fields.next()?;
            let max = fields.nth(2)?;
            let usable = !hash.is_empty() && !hash.starts_with('!') && !hash.starts_with('*');
            if name.is_empty() || name.starts_with('#') || !usable {
                return None;
            }
            match max.trim().parse::<u64>() {
                Ok(days) if days > u64::from(max_days) => Some(format!("{name} (max {days})")),
                Ok(_) => None,
                // No maximum: never expires.
                Err(_) if max_days < 99999 => Some(format!("{name} (no max)")),
                Err(_) => None,
            }
        })
        .collect()
}
