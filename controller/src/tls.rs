//! TLS material from files named by flags: the cluster CA, and this process's certificate
//! and key. Until the PKI issue issues them itself, operators (or the test lab) provide
//! the files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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

/// The ALPN protocol a controller offers (after `h2`, which is what is spoken) when it
/// dials a peer. A hint only, for the order of handshakes: what a caller may do is decided
/// by its certificate, after the handshake.
pub const PEER_ALPN: &[u8] = b"bulwark-peer";

/// The loaded PEM material.
#[derive(Clone)]
pub struct TlsMaterial {
    ca: Certificate,
    identity: Identity,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
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
        Ok(Self {
            ca: Certificate::from_pem(&ca),
            identity: Identity::from_pem(&cert, &key),
            ca_pem: ca,
            cert_pem: cert,
            key_pem: key,
        })
    }

    /// The cluster CA as rustls trust roots.
    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in self.ca_certificates() {
            roots.add(ca?).map_err(|e| format!("CA certificate: {e}"))?;
        }
        Ok(roots)
    }

    fn ca_certificates(
        &self,
    ) -> impl Iterator<Item = Result<rustls::pki_types::CertificateDer<'static>, String>> + '_ {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(&self.ca_pem)
            .map(|ca| ca.map_err(|e| format!("CA certificate: {e}")))
    }

    /// Our certificate chain and private key.
    fn chain_and_key(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| format!("private key: {e}"))?;
        Ok((chain, key))
    }

    /// The server's rustls configuration: TLS 1.3 only, our certificate, and client
    /// certificates verified against the cluster CA. A client may connect without one (for
    /// `Enroll` and health checks only); the authorization layer refuses it everywhere else.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(self.roots()?),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
        let (mut chain, key) = self.chain_and_key()?;
        // The CA goes along, so an agent that pins the CA's fingerprint (instead of having
        // the CA file) can find and check it before it sends its bootstrap token.
        for ca in self.ca_certificates() {
            let ca = ca?;
            if !chain.contains(&ca) {
                chain.push(ca);
            }
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| format!("certificate and key do not match: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The rustls client configuration of a controller dialling its peers: TLS 1.3, the
    /// server verified against the cluster CA, our certificate presented, and ALPN `h2`
    /// then [`PEER_ALPN`], which lets a flooded peer complete this handshake before the
    /// agents' (see `grpc::tls_incoming`).
    pub fn rustls_peer_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = self.chain_and_key()?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("certificate and key do not match: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), PEER_ALPN.to_vec()];
        Ok(config)
    }

    /// Client side: verify the server against the cluster CA and present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .timeout(Duration::from_secs(10))
    }
}
