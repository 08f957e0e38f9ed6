//! Enrollment: a key made on this host, a CSR, the bootstrap token, and the controller's
//! answer (agent id, certificate, labels) stored in the state dir. The controller is
//! verified against a CA file, or against a pinned CA fingerprint (SHA-256 of the CA
//! certificate, as `bulwarkctl pki init` prints it) before the token is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::host::Host;
use crate::identity::{AgentInfo, IdentityError, StateDir};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Usage(String),
    #[error("making the key and CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("controller {url}: {reason}")]
    Controller { url: String, reason: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// How to trust the controllers the first time.
#[derive(Debug, Clone)]
pub enum Trust {
    CaFile(Vec<u8>),
    /// Hex SHA-256 of the CA certificate (DER), colons allowed.
    Fingerprint(String),
}

#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub controllers: Vec<String>,
    pub trust: Trust,
    pub token: String,
    /// Labels this host expects: enrollment fails unless the token gives exactly these
    /// (labels come from the token, so a host cannot pick its own segment).
    pub labels: Vec<(String, String)>,
    /// Re-enroll this agent id (an operator must have permitted it).
    pub reenroll: Option<String>,
}

/// Facts about the host, read under its root and from its network namespace.
pub async fn host_facts(host: &Host) -> pb::HostFacts {
    let read = |p: &str| std::fs::read_to_string(host.path(p)).ok();
    let hostname = read("/etc/hostname")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let os = read("/etc/os-release")
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_default();
    let (addresses, mac) = match host.run("ip", &["-j", "addr", "show"], None).await {
        Ok(out) => addresses_from_ip_json(&out.stdout),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the host's addresses");
            (Vec::new(), String::new())
        }
    };
    pb::HostFacts { hostname, os, addresses, mac }
}

/// Global addresses and the first MAC from `ip -j addr show`.
fn addresses_from_ip_json(json: &[u8]) -> (Vec<String>, String) {
    let Ok(links) = serde_json::from_slice::<Vec<serde_json::Value>>(json) else {
        return (Vec::new(), String::new());
    };
    let mut addresses = Vec::new();
    let mut mac = String::new();
    for link in &links {
        if link["ifname"] == "lo" {
            continue;
        }
        if mac.is_empty() {
            mac = link["address"].as_str().unwrap_or_default().to_owned();
        }
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "global"
                && let Some(ip) = a["local"].as_str()
            {
                addresses.push(ip.to_owned());
            }
        }
    }
    (addresses, mac)
}

/// `https://` added when missing.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") { url.to_owned() } else { format!("https://{url}") }
}

/// A new key and a CSR for it.
pub fn key_and_csr() -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    // The controller names the agent in the certificate; the CSR carries only the key.
    let csr = CertificateParams::new(Vec::<String>::new())?.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Enrolls with the first controller that answers and stores the identity in `state`.
pub async fn enroll(
    host: &Host,
    state: &StateDir,
    opts: &EnrollOptions,
) -> Result<AgentInfo, EnrollError> {
    if opts.controllers.is_empty() {
        return Err(EnrollError::Usage("--controller: give at least one controller URL".into()));
    }
    if opts.token.trim().is_empty() {
        return Err(EnrollError::Usage("--token: give the bootstrap token".into()));
    }
    let controllers: Vec<String> = opts.controllers.iter().map(|u| normalize_url(u)).collect();
    let (key, csr_pem) = key_and_csr()?;
    let facts = host_facts(host).await;
    let mut last = None;
    for url in &controllers {
        match enroll_at(url, &opts.trust, &opts.token, &csr_pem, &facts, opts).await {
            Ok(reply) => {
                let info = AgentInfo {
                    agent_id: reply.agent_id,
                    controllers: controllers.clone(),
                    labels: reply.labels.into_iter().collect(),
                    cert_issued_at: unix_now(),
                    cert_not_after: reply.not_after,
                };
                state.store(&info, &key.serialize_pem(), &reply.cert_pem, &reply.ca_pem)?;
                return Ok(info);
            }
            Err(e @ EnrollError::Controller { .. }) => {
                tracing::warn!(error = %e, "enrollment failed; trying the next controller");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| EnrollError::Usage("no controller to enroll with".into())))
}

async fn enroll_at(
    url: &str,
    trust: &Trust,
    token: &str,
    csr_pem: &str,
    facts: &pb::HostFacts,
    opts: &EnrollOptions,
) -> Result<pb::EnrollReply, EnrollError> {
    let failed = |reason: String| EnrollError::Controller { url: url.to_owned(), reason };
    let ca_pem = match trust {
        Trust::CaFile(pem) => pem.clone(),
        Trust::Fingerprint(fp) => fetch_pinned_ca(url, fp).await.map_err(failed)?.into_bytes(),
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca_pem))
        .timeout(Duration::from_secs(10));
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|e| failed(format!("not a URL: {e}")))?
        .tls_config(tls)
        .map_err(|e| failed(format!("TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .map_err(|e| failed(format!("cannot connect: {}", error_chain(&e))))?;
    let req = pb::EnrollRequest {
        labels: opts.labels.iter().cloned().collect(),
        token: token.trim().to_owned(),
        csr_pem: csr_pem.to_owned(),
        facts: Some(facts.clone()),
        agent_id: opts.reenroll.clone().unwrap_or_default(),
    };
    let reply = AgentServiceClient::new(channel)
        .enroll(req)
        .await
        .map_err(|s| failed(s.message().to_owned()))?
        .into_inner();
    if let Trust::Fingerprint(fp) = trust {
        // The CA the controller hands out must be the one pinned.
        let der = pem_to_der(&reply.ca_pem).map_err(failed)?;
        if !fingerprint_matches(&der, fp) {
            return Err(failed("the CA in the enrollment reply is not the pinned one".into()));
        }
    }
    Ok(reply)
}

/// The full cause chain of an error on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| format!("CA certificate: {e}"))
}

fn fingerprint_matches(der: &[u8], fingerprint: &str) -> bool {
    let want: String =
        fingerprint.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_lowercase();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der)) == want
}

/// Accepts a server whose chain carries the pinned CA and whose certificate that CA signed.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    found: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint_matches(c, &self.fingerprint))
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate in the controller's chain has the pinned CA fingerprint".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The CA certificate (PEM) of the controller at `url`, accepted only if its fingerprint
/// is `fingerprint` and it signed the controller's certificate. Nothing is sent but the
/// TLS handshake.
async fn fetch_pinned_ca(url: &str, fingerprint: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCa {
        fingerprint: fingerprint.to_owned(),
        provider: provider.clone(),
        found: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("server name: {e}"))?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let der = verifier
        .found
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or("the handshake did not verify the pinned CA")?;
    Ok(pem_encode(&der))
}

fn pem_encode(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}
