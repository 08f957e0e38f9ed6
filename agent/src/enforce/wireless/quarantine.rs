//! The quarantine: network profiles the allowlist refused, kept in the state dir
//! (`wireless-quarantine/<id>/{record.json,content}`) so that they can be put back. Nothing
//! is ever deleted: a profile is written here before it leaves its file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::WirelessError;
use super::supplicant;
use crate::host::Host;
use crate::identity::write_atomically;

pub const DIR: &str = "wireless-quarantine";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A whole NetworkManager keyfile.
    Keyfile,
    /// One `network={...}` block of a wpa_supplicant configuration file.
    SupplicantBlock,
}

/// What was quarantined, from where and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub kind: Kind,
    /// The file it came from, as a path on the host (not under `--root`).
    pub source: PathBuf,
    pub ssid: Option<String>,
    pub security: String,
    pub reason: String,
    pub quarantined_at_ms: i64,
    /// The source file's permission bits.
    pub mode: u32,
}

/// The quarantine folder of a state dir.
#[derive(Debug, Clone)]
pub struct Quarantine {
    dir: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WirelessError + '_ {
    move |source| WirelessError::Io { path: path.to_owned(), source }
}

/// A stable id for `content` from `source`: the same profile quarantined again (after a
/// restore) gets the same id.
pub fn id_for(source: &Path, content: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(source.as_os_str().as_encoded_bytes());
    ctx.update(b"\0");
    ctx.update(content.as_bytes());
    hex::encode(&ctx.finish().as_ref()[..6])
}

impl Quarantine {
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join(DIR) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `content` and its record (0700 folder, 0600 files: profiles hold secrets).
    pub fn put(&self, record: &Record, content: &str) -> Result<(), WirelessError> {
        let dir = self.dir.join(&record.id);
        for d in [&self.dir, &dir] {
            std::fs::create_dir_all(d).map_err(io(d))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(io(d))?;
        }
        write_atomically(&dir.join("content"), content.as_bytes(), 0o600)?;
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| WirelessError::Record { path: dir.clone(), reason: e.to_string() })?;
        write_atomically(&dir.join("record.json"), &json, 0o600)?;
        Ok(())
    }

    /// Keeps the first version of a file Bulwark edits (`backups/<path with / as %>`).
    pub fn backup_once(&self, source: &Path, content: &str) -> Result<(), WirelessError> {
        let dir = self.dir.join("backups");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = source.to_string_lossy().trim_start_matches('/').replace('/', "%");
        let path = dir.join(name);
        if !path.exists() {
            write_atomically(&path, content.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, WirelessError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(io(&self.dir))?.path().join("record.json");
            if !path.exists() {
                continue;
            }
            out.push(self.read_record(&path)?);
        }
        out.sort_by(|a, b| (a.quarantined_at_ms, &a.id).cmp(&(b.quarantined_at_ms, &b.id)));
        Ok(out)
    }

    fn read_record(&self, path: &Path) -> Result<Record, WirelessError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| WirelessError::Record { path: path.to_owned(), reason: e.to_string() })
    }

    /// Puts quarantined profile `id` back where it came from under `host`'s root and
    /// removes it from the quarantine. A keyfile comes back as it was (mode 0600); a
    /// network block is appended to its file (created 0600 when it is gone). A keyfile
    /// whose path is taken again is not overwritten.
    ///
    /// While the policy still refuses the profile, the next pass quarantines it again
    /// (under the same id): restore after changing the policy, or under `mode: audit`.
    pub fn restore(&self, host: &Host, id: &str) -> Result<Record, WirelessError> {
        let dir = self.dir.join(id);
        let record_path = dir.join("record.json");
        if id.contains('/') || id.is_empty() || !record_path.exists() {
            return Err(WirelessError::NotQuarantined(id.to_owned()));
        }
        let record = self.read_record(&record_path)?;
        let content_path = dir.join("content");
        let content = std::fs::read_to_string(&content_path).map_err(io(&content_path))?;
        let target = host.path(&record.source);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match record.kind {
            Kind::Keyfile => {
                if target.exists() {
                    return Err(WirelessError::Exists(target));
                }
                write_atomically(&target, content.as_bytes(), 0o600)?;
            }
            Kind::SupplicantBlock => {
                let (text, mode) = match std::fs::read_to_string(&target) {
                    Ok(t) => {
                        let mode = std::fs::metadata(&target).map_err(io(&target))?.mode_bits();
                        (t, mode)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
                    Err(e) => return Err(io(&target)(e)),
                };
                write_atomically(&target, supplicant::append(&text, &content).as_bytes(), mode)?;
            }
        }
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        tracing::info!(id, source = %record.source.display(), "quarantined network restored");
        Ok(record)
    }
}

trait ModeBits {
    fn mode_bits(&self) -> u32;
}

impl ModeBits for std::fs::Metadata {
    fn mode_bits(&self) -> u32 {
        self.permissions().mode() & 0o7777
    }
}

/// Puts quarantined network `id` back (see [`Quarantine::restore`]).
pub fn restore(state_dir: &Path, root: &Path, id: &str) -> Result<Record, WirelessError> {
    Quarantine::new(state_dir).restore(&Host::new(root), id)
}

/// What the quarantine of `state_dir` holds.
pub fn list(state_dir: &Path) -> Result<Vec<Record>, WirelessError> {
    Quarantine::new(state_dir).list()
}

/// `bulwark-agent wireless quarantine list`: one line per quarantined network.
pub fn list_text(state_dir: &Path) -> Result<String, WirelessError> {
    let records = list(state_dir)?;
    if records.is_empty() {
        return Ok("no quarantined wireless networks\n".into());
    }
    let mut out = String::new();
    for r in records {
        let kind = match r.kind {
            Kind::Keyfile => "keyfile",
            Kind::SupplicantBlock => "network block",
        };
        let ssid = r.ssid.as_deref().unwrap_or("<no ssid>");
        out.push_str(&format!(
            "{}  {ssid:?} ({})  {kind} from {}: {}\n",
            r.id,
            r.security,
            r.source.display(),
            r.reason
        ));
    }
    Ok(out)
}
