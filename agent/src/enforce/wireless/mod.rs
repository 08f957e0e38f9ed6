//! Wireless access control as an [`Enforcer`].
//!
//! - `off` (`radios_off`): every rfkill radio of type `wlan` is soft-blocked and kept so
//!   (through `/sys/class/rfkill`, see [`rfkill`]), and NetworkManager, when present, is
//!   told to leave Wi-Fi alone twice over: `WirelessEnabled=false` in the `[main]` section
//!   of its state file (`/var/lib/NetworkManager/NetworkManager.state`, the radio switch it
//!   restores at start and that `nmcli radio wifi off` persists), and the conf.d snippet
//!   [`NM_SNIPPET`] adding `type:wifi` to `[keyfile] unmanaged-devices` (documented in
//!   NetworkManager.conf(5) as strictly unmanaged, not overridable over D-Bus; `+=` appends
//!   to the key's other values). The snippet is Bulwark's and goes away when the policy no
//!   longer says `off`; radios are not unblocked then (an operator does that).
//! - `allowlist`: NetworkManager keyfiles in `/etc/NetworkManager/system-connections/` and
//!   `network={}` blocks of `/etc/wpa_supplicant/wpa_supplicant.conf` and
//!   `wpa_supplicant-*.conf` whose SSID is not listed, or whose security ranks below the
//!   listed minimum ([`Security`]), are moved to the [`quarantine`] in the state dir, never
//!   deleted; a block leaves its file by a minimal edit. Kept keyfiles are made root-owned
//!   and 0600 (NetworkManager ignores others).
//! - `audit`: the same judgement, reported as audit-noncompliant; nothing changes.
//!
//! Drift: inotify (`notify`) on the keyfile, wpa_supplicant and NetworkManager folders and
//! on the rfkill class folder. sysfs attributes raise no inotify events on a real host, so
//! a radio unblocked there is caught by the periodic full check.

pub mod keyfile;
pub mod quarantine;
pub mod rfkill;
pub mod security;
pub mod supplicant;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use bulwark_proto::v1 as pb;
use tokio::sync::mpsc;

use crate::enforce::reconcile::now_ms;
use crate::enforce::{EnforceError, Enforcer, Finding, Pass, Trigger};
use crate::host::Host;
use crate::identity::{IdentityError, write_atomically};
pub use quarantine::{Quarantine, Record, list, list_text, restore};
pub use security::{Network, Security};

pub const NAME: &str = "wireless";
pub const KEYFILE_DIR: &str = "/etc/NetworkManager/system-connections";
pub const SUPPLICANT_DIR: &str = "/etc/wpa_supplicant";
pub const NM_CONF_DIR: &str = "/etc/NetworkManager/conf.d";
pub const NM_SNIPPET: &str = "/etc/NetworkManager/conf.d/90-bulwark-wifi.conf";
pub const NM_STATE_DIR: &str = "/var/lib/NetworkManager";
pub const NM_STATE: &str = "/var/lib/NetworkManager/NetworkManager.state";

/// The conf.d snippet of mode `off`.
pub const NM_SNIPPET_TEXT: &str = "\
# Written by Bulwark (wireless mode off): NetworkManager leaves Wi-Fi devices alone.
# Removed by Bulwark when the policy no longer turns wireless off.
[keyfile]
unmanaged-devices+=type:wifi
";

#[derive(Debug, thiserror::Error)]
pub enum WirelessError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Write(#[from] IdentityError),
    #[error("quarantine record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
    #[error("no quarantined network with id {0:?} (bulwark-agent wireless quarantine list)")]
    NotQuarantined(String),
    #[error("{} exists again; not overwritten (move it away, then restore)", .0.display())]
    Exists(PathBuf),
    #[error("policy {policy}: SSID {ssid:?} has unknown minimum security {min:?}")]
    Policy { policy: String, ssid: String, min: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WirelessError + '_ {
    move |source| WirelessError::Io { path: path.to_owned(), source }
}

/// A keyfile found on the host.
#[derive(Debug, Clone)]
pub struct KeyfileSeen {
    /// As on the host (`/etc/NetworkManager/system-connections/x.nmconnection`).
    pub source: PathBuf,
    pub text: String,
    pub network: Network,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A wpa_supplicant configuration file found on the host.
#[derive(Debug, Clone)]
pub struct SupplicantSeen {
    pub source: PathBuf,
    pub text: String,
    pub mode: u32,
    /// Its blocks, or why the file is left alone.
    pub blocks: Result<Vec<supplicant::Block>, String>,
}

/// What the host has, read under the root.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub interfaces: Vec<String>,
    pub radios: Vec<rfkill::Radio>,
    pub keyfiles: Vec<KeyfileSeen>,
    pub supplicant: Vec<SupplicantSeen>,
    /// NetworkManager is installed (`/etc/NetworkManager` or its state folder exists).
    pub nm_present: bool,
    pub nm_state: Option<String>,
    pub nm_snippet: Option<String>,
}

/// One change the host needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    BlockRadio { id: String, name: String },
    NmWifiDisabled,
    NmSnippet,
    RemoveNmSnippet,
    QuarantineKeyfile { index: usize, reason: String },
    QuarantineBlock { file: usize, block: usize, reason: String },
    FixKeyfileMode { index: usize },
}

/// What a pass would do, and what stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Labels of the networks that stay.
    pub kept: Vec<String>,
}

impl Change {
    /// One line for reasons and findings.
    pub fn describe(&self, o: &Observed) -> String {
        match self {
            Change::BlockRadio { id, name } => format!("radio {id} ({name}) is not soft-blocked"),
            Change::NmWifiDisabled => format!("{NM_STATE} does not say WirelessEnabled=false"),
            Change::NmSnippet => format!("{NM_SNIPPET} is missing or differs"),
            Change::RemoveNmSnippet => format!("{NM_SNIPPET} is left from mode off"),
            Change::QuarantineKeyfile { index, reason } => {
                let k = &o.keyfiles[*index];
                format!("{} {}: {reason}", k.source.display(), k.network.label())
            }
            Change::QuarantineBlock { file, block, reason } => {
                let f = &o.supplicant[*file];
                let b = f.blocks.as_ref().ok().and_then(|b| b.get(*block));
                let label = b.map(|b| b.network.label()).unwrap_or_default();
                let line = b.map_or(0, |b| b.start + 1);
                format!("{}:{line} {label}: {reason}", f.source.display())
            }
            Change::FixKeyfileMode { index } => {
                let k = &o.keyfiles[*index];
                format!(
                    "{} is mode {:04o} owner {}:{}, NetworkManager needs root 0600",
                    k.source.display(),
                    k.mode,
                    k.uid,
                    k.gid
                )
            }
        }
    }

    /// The finding kind when the host had not drifted (first enforcement).
    fn first_kind(&self) -> &'static str {
        match self {
            Change::BlockRadio { .. } => "radio-blocked",
            Change::QuarantineKeyfile { .. } | Change::QuarantineBlock { .. } => "quarantined",
            Change::FixKeyfileMode { .. } => "permissions-fixed",
            Change::NmWifiDisabled | Change::NmSnippet | Change::RemoveNmSnippet => {
                "networkmanager-configured"
            }
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, WirelessError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Files of `dir` (on the host), sorted; a missing folder has none.
fn files(host: &Host, dir: &str) -> Result<Vec<(PathBuf, String)>, WirelessError> {
    let real = host.path(dir);
    let entries = match std::fs::read_dir(&real) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&real)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&real))?;
        if !entry.file_type().map_err(io(&real))?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((Path::new(dir).join(&name), name));
    }
    out.sort();
    Ok(out)
}

/// Files NetworkManager's keyfile plugin skips (hidden, editor and package backups).
fn nm_ignores(name: &str) -> bool {
    const SUFFIXES: [&str; 9] =
        ["~", ".bak", ".tmp", ".swp", ".swpx", ".orig", ".rej", ".rpmnew", ".rpmsave"];
    name.starts_with('.')
        || SUFFIXES.iter().any(|s| name.ends_with(s))
        || name.contains(".dpkg-")
        || name.ends_with(".nmmeta")
}

/// Reads what the wireless enforcer judges, under the host root.
pub fn observe(host: &Host) -> Result<Observed, WirelessError> {
    let interfaces =
        crate::enforce::firewall::wireless_interfaces(host).map_err(|e| WirelessError::Io {
            path: host.path("/sys/class/net"),
            source: std::io::Error::other(e.to_string()),
        })?;
    let radios = rfkill::wlan_radios(host).map_err(io(&host.path(rfkill::DIR)))?;
    let mut keyfiles = Vec::new();
    for (source, name) in files(host, KEYFILE_DIR)? {
        if nm_ignores(&name) {
            continue;
        }
        let real = host.path(&source);
        let text = std::fs::read_to_string(&real).map_err(io(&real))?;
        let Some(network) = keyfile::wifi_network(&text) else { continue };
        let meta = std::fs::metadata(&real).map_err(io(&real))?;
        keyfiles.push(KeyfileSeen {
            source,
            text,
            network,
            mode: meta.permissions().mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        });
    }
    let mut supplicant = Vec::new();
    for (source, name) in files(host, SUPPLICANT_DIR)? {
        let ours = name == "wpa_supplicant.conf"
            || (name.starts_with("wpa_supplicant-") && name.ends_with(".conf"));
        if !ours {
            continue;
        }
        let real = host.path(&source);
        let text = std::fs::read_to_string(&real).map_err(io(&real))?;
        let mode = std::fs::metadata(&real).map_err(io(&real))?.permissions().mode() & 0o7777;
        let blocks = supplicant::blocks(&text);
        supplicant.push(SupplicantSeen { source, text, mode, blocks });
    }
    Ok(Observed {
        interfaces,
        radios,
        keyfiles,
        supplicant,
        nm_present: host.path("/etc/NetworkManager").is_dir() || host.path(NM_STATE_DIR).is_dir(),
        nm_state: read_optional(&host.path(NM_STATE))?,
        nm_snippet: read_optional(&host.path(NM_SNIPPET))?,
    })
}

fn wifi_disabled(state: Option<&str>) -> bool {
    state.is_some_and(|s| {
        keyfile::entries(s)
            .iter()
            .rev()
            .find(|(sec, k, _)| sec == "main" && k == "WirelessEnabled")
            .is_some_and(|(_, _, v)| v == "false")
    })
}

/// Why a network is refused under `allowed` (SSID → the weakest accepted security), or
/// `None` when it stays.
fn refusal(network: &Network, allowed: &BTreeMap<String, Security>) -> Option<String> {
    let Some(ssid) = &network.ssid else {
        return Some("names no SSID".into());
    };
    let Some(min) = allowed.get(ssid) else {
        return Some(format!("SSID {ssid:?} is not allowed"));
    };
    if network.security < *min {
        let why = network.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
        return Some(format!("security {}{why} is weaker than {min} required", network.security));
    }
    None
}

/// The allowlist as SSID → the weakest security any entry accepts.
pub fn allowlist(state: &pb::WirelessState) -> Result<BTreeMap<String, Security>, WirelessError> {
    let mut out = BTreeMap::new();
    for a in &state.allowed {
        let min = Security::from_policy(&a.min_security).ok_or_else(|| WirelessError::Policy {
            policy: state.policy.clone(),
            ssid: a.ssid.clone(),
            min: a.min_security.clone(),
        })?;
        let e = out.entry(a.ssid.clone()).or_insert(min);
        *e = (*e).min(min);
    }
    Ok(out)
}

/// Pure: the changes that bring `observed` to `wanted`.
pub fn plan(wanted: &pb::WirelessState, observed: &Observed) -> Result<Plan, WirelessError> {
    let mut plan = Plan::default();
    if wanted.radios_off {
        for r in observed.radios.iter().filter(|r| !r.soft_blocked) {
            plan.changes.push(Change::BlockRadio { id: r.id.clone(), name: r.name.clone() });
        }
        if observed.nm_present {
            if !wifi_disabled(observed.nm_state.as_deref()) {
                plan.changes.push(Change::NmWifiDisabled);
            }
            if observed.nm_snippet.as_deref() != Some(NM_SNIPPET_TEXT) {
                plan.changes.push(Change::NmSnippet);
            }
        }
        plan.kept = observed.keyfiles.iter().map(|k| k.network.label()).collect();
        for f in &observed.supplicant {
            for b in f.blocks.iter().flatten() {
                plan.kept.push(b.network.label());
            }
        }
        return Ok(plan);
    }
    if observed.nm_snippet.is_some() {
        plan.changes.push(Change::RemoveNmSnippet);
    }
    let allowed = allowlist(wanted)?;
    for (index, k) in observed.keyfiles.iter().enumerate() {
        match refusal(&k.network, &allowed) {
            Some(reason) => plan.changes.push(Change::QuarantineKeyfile { index, reason }),
            None => {
                plan.kept.push(k.network.label());
                if k.mode != 0o600 || k.uid != 0 {
                    plan.changes.push(Change::FixKeyfileMode { index });
                }
            }
        }
    }
    for (file, f) in observed.supplicant.iter().enumerate() {
        // An unreadable file (unterminated block) is left alone; the pass fails on it.
        for (block, b) in f.blocks.iter().flatten().enumerate() {
            match refusal(&b.network, &allowed) {
                Some(reason) => plan.changes.push(Change::QuarantineBlock { file, block, reason }),
                None => plan.kept.push(b.network.label()),
            }
        }
    }
    Ok(plan)
}

#[derive(Default)]
struct Memory {
    /// The wireless state last enforced completely: a change needed under the same state
    /// is drift.
    enforced: Option<pb::WirelessState>,
    /// Drift repaired while on this revision: (revision, what was found).
    repaired: Option<(u64, String)>,
    /// The last difference reported in audit mode (one event per distinct difference).
    audited: Option<String>,
}

pub struct WirelessEnforcer {
    host: Host,
    quarantine: Quarantine,
    dry_run: bool,
    memory: Mutex<Memory>,
}

impl WirelessEnforcer {
    /// `state_dir` holds the quarantine.
    pub fn new(host: Host, state_dir: &Path, dry_run: bool) -> Self {
        Self { host, quarantine: Quarantine::new(state_dir), dry_run, memory: Mutex::default() }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(
        &self,
        source: &Path,
        content: &str,
        network: &Network,
        reason: &str,
        mode: u32,
        kind: quarantine::Kind,
    ) -> Record {
        Record {
            id: quarantine::id_for(source, content),
            kind,
            source: source.to_owned(),
            ssid: network.ssid.clone(),
            security: network.security.name().to_owned(),
            reason: reason.to_owned(),
            quarantined_at_ms: now_ms(),
            mode,
        }
    }

    /// Applies `plan`; returns the changes made, each with what it did.
    fn apply(&self, plan: &Plan, o: &Observed) -> Result<Vec<(Change, String)>, WirelessError> {
        let mut done = Vec::new();
        let mut blocks_by_file: BTreeMap<usize, Vec<(usize, String)>> = BTreeMap::new();
        for change in &plan.changes {
            let what = change.describe(o);
            match change {
                Change::BlockRadio { id, .. } => {
                    if let Some(r) = o.radios.iter().find(|r| &r.id == id) {
                        rfkill::soft_block(r).map_err(io(&r.dir))?;
                    }
                    done.push((change.clone(), format!("{what}; soft-blocked")));
                }
                Change::NmWifiDisabled => {
                    let path = self.host.path(NM_STATE);
                    let old = o.nm_state.clone().unwrap_or_default();
                    let new = keyfile::set_key(&old, "main", "WirelessEnabled", "false");
                    self.write_file(
                        &path,
                        Path::new(NM_STATE),
                        o.nm_state.as_deref(),
                        &new,
                        0o644,
                    )?;
                    done.push((change.clone(), format!("{what}; set")));
                }
                Change::NmSnippet => {
                    let path = self.host.path(NM_SNIPPET);
                    self.write_file(
                        &path,
                        Path::new(NM_SNIPPET),
                        o.nm_snippet.as_deref(),
                        NM_SNIPPET_TEXT,
                        0o644,
                    )?;
                    done.push((change.clone(), format!("{what}; written")));
                }
                Change::RemoveNmSnippet => {
                    let path = self.host.path(NM_SNIPPET);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&path)(e)),
                    }
                    done.push((change.clone(), format!("{what}; removed")));
                }
                Change::QuarantineKeyfile { index, reason } => {
                    let k = &o.keyfiles[*index];
                    let record = self.record(
                        &k.source,
                        &k.text,
                        &k.network,
                        reason,
                        k.mode,
                        quarantine::Kind::Keyfile,
                    );
                    self.quarantine.put(&record, &k.text)?;
                    let real = self.host.path(&k.source);
                    std::fs::remove_file(&real).map_err(io(&real))?;
                    sync_dir(&real);
                    done.push((change.clone(), format!("{what}; quarantined as {}", record.id)));
                }
                Change::QuarantineBlock { file, block, reason } => {
                    blocks_by_file.entry(*file).or_default().push((*block, reason.clone()));
                }
                Change::FixKeyfileMode { index } => {
                    let k = &o.keyfiles[*index];
                    let real = self.host.path(&k.source);
                    if k.uid != 0 || k.gid != 0 {
                        std::os::unix::fs::chown(&real, Some(0), Some(0)).map_err(io(&real))?;
                    }
                    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600))
                        .map_err(io(&real))?;
                    done.push((change.clone(), format!("{what}; now root 0600")));
                }
            }
        }
        for (file, refused) in blocks_by_file {
            let f = &o.supplicant[file];
            let Ok(blocks) = &f.blocks else { continue };
            let mut removed = Vec::new();
            for (block, reason) in &refused {
                let b = &blocks[*block];
                let record = self.record(
                    &f.source,
                    &b.text,
                    &b.network,
                    reason,
                    f.mode,
                    quarantine::Kind::SupplicantBlock,
                );
                self.quarantine.put(&record, &b.text)?;
                removed.push((b, record.id));
            }
            let list: Vec<&supplicant::Block> = removed.iter().map(|(b, _)| *b).collect();
            let new = supplicant::remove(&f.text, &list);
            self.write_file(&self.host.path(&f.source), &f.source, Some(&f.text), &new, f.mode)?;
            for ((block, reason), (_, id)) in refused.iter().zip(&removed) {
                let change =
                    Change::QuarantineBlock { file, block: *block, reason: reason.clone() };
                let what = change.describe(o);
                done.push((change, format!("{what}; quarantined as {id}")));
            }
        }
        Ok(done)
    }

    /// Writes `new` atomically, keeping a backup of the first version Bulwark changed.
    fn write_file(
        &self,
        real: &Path,
        source: &Path,
        old: Option<&str>,
        new: &str,
        mode: u32,
    ) -> Result<(), WirelessError> {
        if let Some(old) = old {
            self.quarantine.backup_once(source, old)?;
        }
        if let Some(parent) = real.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        write_atomically(real, new.as_bytes(), mode)?;
        Ok(())
    }

    /// Tells running daemons to read their files again (best effort; only on a host where
    /// they run: `/run/NetworkManager`, `/run/wpa_supplicant` under the root).
    async fn reload_daemons(&self, done: &[(Change, String)]) {
        let nm_running = self.host.path("/run/NetworkManager").is_dir();
        let touched = |f: fn(&Change) -> bool| done.iter().any(|(c, _)| f(c));
        let mut commands: Vec<(&str, Vec<&str>)> = Vec::new();
        if nm_running {
            if touched(|c| {
                matches!(c, Change::QuarantineKeyfile { .. } | Change::FixKeyfileMode { .. })
            }) {
                commands.push(("nmcli", vec!["connection", "reload"]));
            }
            if touched(|c| matches!(c, Change::NmSnippet | Change::RemoveNmSnippet)) {
                commands.push(("nmcli", vec!["general", "reload", "conf"]));
            }
            if touched(|c| matches!(c, Change::NmWifiDisabled)) {
                commands.push(("nmcli", vec!["radio", "wifi", "off"]));
            }
        }
        if self.host.path("/run/wpa_supplicant").is_dir()
            && touched(|c| matches!(c, Change::QuarantineBlock { .. }))
        {
            commands.push(("wpa_cli", vec!["reconfigure"]));
        }
        for (program, args) in commands {
            if let Err(e) = self.host.run(program, &args, None).await {
                tracing::warn!(error = %e, "could not tell the daemon to reload; it reads the files at its next start");
            }
        }
    }

    fn details(
        &self,
        wanted: &pb::WirelessState,
        o: &Observed,
        plan: &Plan,
    ) -> Vec<(String, String)> {
        let list = |v: Vec<String>| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
        let mode = if wanted.radios_off { "off" } else { "allowlist" };
        let radios = o
            .radios
            .iter()
            .map(|r| format!("{} {}{}", r.id, r.name, if r.soft_blocked { " blocked" } else { "" }))
            .collect();
        let quarantined = self.quarantine.list().map_or(0, |l| l.len());
        vec![
            ("mode".into(), if wanted.audit { format!("{mode} (audit)") } else { mode.into() }),
            ("interfaces".into(), list(o.interfaces.clone())),
            ("radios".into(), list(radios)),
            ("networks".into(), list(plan.kept.clone())),
            ("quarantined".into(), quarantined.to_string()),
        ]
    }
}

/// fsyncs the folder of `path` after a removal (best effort: the quarantine copy is
/// already durable).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
}

/// The folders whose changes are wireless drift, as real paths under the root: the
/// keyfile, wpa_supplicant, NetworkManager conf.d and state folders, the rfkill class
/// folder and each radio's folder. Only those that exist.
fn watched_dirs(host: &Host) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        [KEYFILE_DIR, SUPPLICANT_DIR, NM_CONF_DIR, NM_STATE_DIR, rfkill::DIR]
            .iter()
            .map(|d| host.path(d))
            .collect();
    if let Ok(radios) = rfkill::wlan_radios(host) {
        dirs.extend(radios.into_iter().map(|r| r.dir));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Whether a notify event is a change worth a pass (not a read, not NetworkManager's other
/// state files such as leases and timestamps).
fn is_drift(event: &notify::Event, host: &Host) -> bool {
    use notify::EventKind;
    let change = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    let state_dir = host.path(NM_STATE_DIR);
    let state_file = host.path(NM_STATE);
    change
        && event.paths.iter().any(|p| {
            let in_state_dir = p.parent() == Some(state_dir.as_path());
            !in_state_dir || p == &state_file
        })
}

#[async_trait]
impl Enforcer for WirelessEnforcer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn watch_drift(&self) -> Option<mpsc::Receiver<String>> {
        use notify::Watcher;
        let dirs = watched_dirs(&self.host);
        if dirs.is_empty() {
            tracing::info!("no wireless configuration folders to watch; periodic checks only");
            return None;
        }
        let (tx, rx) = mpsc::channel(16);
        let sender = tx.clone();
        let host = self.host.clone();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) if is_drift(&event, &host) => {
                let what = event.paths.first().map(|p| p.display().to_string()).unwrap_or_default();
                // A full channel already holds a pending pass: dropping is fine.
                let _ = sender.try_send(format!("{:?} {what}", event.kind));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "wireless drift watch error"),
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "no event-driven wireless drift detection; periodic checks only");
                return None;
            }
        };
        for dir in &dirs {
            if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for wireless drift");
            }
        }
        // The watcher lives as long as someone listens.
        tokio::spawn(async move {
            tx.closed().await;
            drop(watcher);
        });
        Some(rx)
    }

    async fn reconcile(
        &self,
        desired: &pb::DesiredState,
        trigger: &Trigger,
    ) -> Result<Pass, EnforceError> {
        let revision = desired.revision;
        let observed = observe(&self.host)?;
        let Some(wanted) = desired.wireless.as_ref() else {
            // Nothing manages wireless here: Bulwark's NetworkManager snippet goes away;
            // quarantined networks stay restorable.
            if observed.nm_snippet.is_some() && !self.dry_run {
                let path = self.host.path(NM_SNIPPET);
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
            *self.memory() = Memory::default();
            let mut pass = Pass::new(revision, pb::EnforcerState::NotManaged);
            pass.details = vec![("interfaces".into(), observed.interfaces.join(", "))];
            return Ok(pass);
        };
        let plan = plan(wanted, &observed)?;
        let mut pass = Pass::new(revision, pb::EnforcerState::Compliant);
        let broken: Vec<String> = observed
            .supplicant
            .iter()
            .filter_map(|f| f.blocks.as_ref().err().map(|e| format!("{}: {e}", f.source.display())))
            .collect();
        if plan.changes.is_empty() {
            pass.details = self.details(wanted, &observed, &plan);
            if !broken.is_empty() {
                pass.state = pb::EnforcerState::Failed;
                pass.reason = format!("left alone, cannot be read safely: {}", broken.join("; "));
                return Ok(pass);
            }
            self.memory().audited = None;
            if !wanted.audit && !self.dry_run {
                self.memory().enforced = Some(wanted.clone());
            }
            let repaired = self.memory().repaired.clone().filter(|(r, _)| *r == revision);
            if let Some((r, what)) = repaired {
                pass.state = pb::EnforcerState::DriftedRepaired;
                pass.reason = format!("drift repaired at revision {r}: {what}");
            }
            return Ok(pass);
        }
        let lines: Vec<String> = plan.changes.iter().map(|c| c.describe(&observed)).collect();
        if wanted.audit || self.dry_run {
            if self.dry_run {
                println!(
                    "--dry-run: wireless differs from the policy; would change:\n  {}",
                    lines.join("\n  ")
                );
            }
            let summary = lines.join("; ");
            pass.state = pb::EnforcerState::AuditNoncompliant;
            pass.reason = format!("{summary}; mode audit, nothing changed");
            pass.details = self.details(wanted, &observed, &plan);
            let mut memory = self.memory();
            if memory.audited.as_deref() != Some(&summary) {
                memory.audited = Some(summary.clone());
                pass.findings.push(Finding {
                    kind: "drift-detected",
                    summary: format!("wireless differs from the policy: {summary}"),
                    before: summary,
                    after: "as the policy says".into(),
                });
            }
            return Ok(pass);
        }
        let drifted = self.memory().enforced.as_ref() == Some(wanted);
        let done = self.apply(&plan, &observed)?;
        self.reload_daemons(&done).await;
        tracing::info!(revision, changes = done.len(), ?trigger, "wireless enforced");
        for (change, what) in &done {
            pass.findings.push(Finding {
                kind: if drifted { "drift-repaired" } else { change.first_kind() },
                summary: format!("wireless: {what}"),
                before: change.describe(&observed),
                after: what.clone(),
            });
        }
        let after = observe(&self.host)?;
        pass.details = self.details(wanted, &after, &plan);
        if !broken.is_empty() {
            pass.state = pb::EnforcerState::Failed;
            pass.reason = format!("left alone, cannot be read safely: {}", broken.join("; "));
            return Ok(pass);
        }
        let mut memory = self.memory();
        memory.enforced = Some(wanted.clone());
        memory.audited = None;
        if drifted {
            let what = lines.join("; ");
            memory.repaired = Some((revision, what.clone()));
            pass.state = pb::EnforcerState::DriftedRepaired;
            pass.reason = format!("drift repaired: {what}");
        }
        Ok(pass)
    }
}
