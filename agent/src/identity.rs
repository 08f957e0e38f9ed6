//! The agent's identity in its state dir: `key.pem` (0600, made on this host and never
//! sent anywhere), `cert.pem`, `ca.pem` and `agent.json` (id, controllers, labels, when the
//! certificate expires). Every file is written atomically (temp, fsync, rename, fsync dir).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{dir} holds no agent identity ({reason}); enroll first: bulwark-agent enroll --state-dir {dir} --controller URL --ca FILE --token TOKEN"
    )]
    NotEnrolled { dir: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.display().to_string(), source }
}

/// What the agent knows about itself, besides its key and certificates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentInfo {
    pub agent_id: String,
    /// Controller URLs, tried in order (then round-robin).
    pub controllers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the Unix epoch.
    pub cert_issued_at: i64,
    pub cert_not_after: i64,
}

impl AgentInfo {
    /// When to renew: two thirds into the certificate's life.
    pub fn renew_at(&self) -> i64 {
        self.cert_issued_at + (self.cert_not_after - self.cert_issued_at) * 2 / 3
    }
}

/// The agent's state dir (default /var/lib/bulwark).
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the dir (0700) if needed.
    pub fn create(&self) -> Result<(), IdentityError> {
        std::fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&self.path))
    }

    pub fn info(&self) -> Result<AgentInfo, IdentityError> {
        let path = self.file("agent.json");
        let bytes = std::fs::read(&path).map_err(|e| IdentityError::NotEnrolled {
            dir: self.path.display().to_string(),
            reason: format!("{}: {e}", path.display()),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| IdentityError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Writes a new identity; the key is written first and only readable by root.
    pub fn store(
        &self,
        info: &AgentInfo,
        key_pem: &str,
        cert_pem: &str,
        ca_pem: &str,
    ) -> Result<(), IdentityError> {
        self.create()?;
        write_atomically(&self.file("key.pem"), key_pem.as_bytes(), 0o600)?;
        write_atomically(&self.file("cert.pem"), cert_pem.as_bytes(), 0o644)?;
        write_atomically(&self.file("ca.pem"), ca_pem.as_bytes(), 0o644)?;
        self.store_info(info)
    }

    pub fn store_info(&self, info: &AgentInfo) -> Result<(), IdentityError> {
        let json = serde_json::to_vec_pretty(info).map_err(|e| IdentityError::Invalid {
            path: self.file("agent.json").display().to_string(),
            reason: e.to_string(),
        })?;
        write_atomically(&self.file("agent.json"), &json, 0o644)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, IdentityError> {
        let path = self.file(name);
        std::fs::read(&path).map_err(|e| IdentityError::NotEnrolled {
            dir: self.path.display().to_string(),
            reason: format!("{}: {e}", path.display()),
        })
    }

    pub fn ca_pem(&self) -> Result<Vec<u8>, IdentityError> {
        self.read("ca.pem")
    }

    /// Client TLS with the agent's certificate, verifying controllers against the CA.
    pub fn client_tls(&self) -> Result<ClientTlsConfig, IdentityError> {
        let key = self.file("key.pem");
        let mode = std::fs::metadata(&key).map_err(io(&key))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(IdentityError::Invalid {
                path: key.display().to_string(),
                reason: format!(
                    "the private key is readable by others (mode {:o}); chmod 600 it",
                    mode & 0o777
                ),
            });
        }
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()?))
            .identity(Identity::from_pem(self.read("cert.pem")?, self.read("key.pem")?))
            .timeout(Duration::from_secs(10)))
    }
}

/// Writes `bytes` to `path` with `mode`: temp file, fsync, rename, fsync the dir.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_roundtrip_and_key_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let err = state.info().unwrap_err().to_string();
        assert!(err.contains("enroll first"), "{err}");
        let info = AgentInfo {
            agent_id: "a-1".into(),
            controllers: vec!["https://198.18.0.1:7000".into()],
            labels: [("role".to_owned(), "pacs".to_owned())].into(),
            cert_issued_at: 1000,
            cert_not_after: 4000,
        };
        state.store(&info, "KEY", "CERT", "CA").unwrap();
        assert_eq!(state.info().unwrap(), info);
        assert_eq!(info.renew_at(), 3000);
        let mode = std::fs::metadata(state.file("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(state.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
