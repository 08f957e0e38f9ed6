//! TLS material from files named by flags: the cluster CA, and this process's certificate
//! and key. Until the PKI issue issues them itself, operators (or the test lab) provide
//! the files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Paths of the PEM files a controller or admin presents.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM); peers and clients must chain to it.
    #[arg(long = "tls-ca", env = "BULWARK_TLS_CA", value_name = "FILE")]
    pub ca: PathBuf,
    /// This identity's certificate (PEM).
    #[arg(long = "tls-cert", env = "BULWARK_TLS_CERT", value_name = "FILE")]
    pub cert: PathBuf,
    /// This identity's private key (PEM).
    #[arg(long = "tls-key", env = "BULWARK_TLS_KEY", value_name = "FILE")]
    pub key: PathBuf,
}

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot read TLS {what} {path}: {source}", path = path.display())]
pub struct TlsError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// The loaded PEM material.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Identity,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |source| TlsError { what, path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(err)?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, "no PEM block in it");
        return Err(err(invalid));
    }
    Ok(bytes)
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let ca = read("CA certificate (--tls-ca)", &files.ca)?;
        let cert = read("certificate (--tls-cert)", &files.cert)?;
        let key = read("private key (--tls-key)", &files.key)?;
        Ok(Self { ca: Certificate::from_pem(ca), identity: Identity::from_pem(cert, key) })
    }

    /// Server side: present our certificate and require one from the cluster CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .timeout(Duration::from_secs(10))
    }

    /// Client side: verify the server against the cluster CA and present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .timeout(Duration::from_secs(10))
    }
}
