//! The cluster CA and what it issues: controller, admin and agent certificates (ECDSA
//! P-256), and the identities they carry. `bulwarkctl pki` writes them to files; a
//! controller started with `--ca-key` signs agent certificates at enrollment and renewal.

pub mod identity;
pub mod tokens;

use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

pub use identity::{Identity, Role, SPIFFE_PREFIX};

/// Lifetime of the CA certificate.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of controller and admin certificates.
pub const SERVICE_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of agent certificates.
pub const AGENT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {what} {path}: {source}", path = path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}", path = path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is readable by group or others (mode {mode:o}); a CA key must be private (chmod 600)",
        path = path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "{path} already exists; refusing to overwrite a CA (use --force to replace it)",
        path = path.display()
    )]
    Exists { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to issue certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn base_params(cn: &str, validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    // Allow for clocks a little behind ours.
    params.not_before = now() - time::Duration::minutes(5);
    params.not_after = now() + validity;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn uri(s: String) -> Result<SanType, PkiError> {
    Ok(SanType::URI(s.try_into().map_err(|_| PkiError::Invalid("invalid SAN URI".into()))?))
}

/// SHA-256 of the first certificate (DER) in `cert_pem`, hex: a CA's fingerprint as
/// `bulwarkctl pki init` prints it and `bulwark-agent enroll --ca-fingerprint` pins it.
pub fn fingerprint(cert_pem: &str) -> Result<String, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("CA certificate: {e}")))?;
    Ok(hex::encode(ring::digest::digest(&ring::digest::SHA256, &pem.contents)))
}

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = base_params(name, CA_VALIDITY)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.use_authority_key_identifier_extension = false;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from PEM files; the key file must not be readable by group or others.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, PkiError> {
        let read = |what, path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read("CA certificate", cert_path)?;
        let meta = std::fs::metadata(key_path).map_err(|source| PkiError::Read {
            what: "CA key",
            path: key_path.to_owned(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(PkiError::KeyPermissions { path: key_path.to_owned(), mode });
        }
        let key_pem = read("CA key", key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            PkiError::Invalid(format!("{}: not a private key: {e}", key_path.display()))
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            PkiError::Invalid(format!(
                "{}: not a CA certificate for that key: {e}",
                cert_path.display()
            ))
        })?;
        Ok(Self { cert_pem, key_pem, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the CA certificate (DER), hex: what `bulwark-agent enroll
    /// --ca-fingerprint` pins.
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        fingerprint(&self.cert_pem)
    }

    /// The CA key as PEM, to write it once at `pki init`.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A controller certificate: `spiffe://bulwark/controller/<id>`, server and client auth,
    /// valid for the given DNS names and IP addresses.
    pub fn issue_controller(
        &self,
        id: u64,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = base_params(&format!("bulwark controller {id}"), SERVICE_VALIDITY)?;
        params.subject_alt_names = vec![uri(format!("{SPIFFE_PREFIX}controller/{id}"))?];
        for d in dns {
            let name = d
                .clone()
                .try_into()
                .map_err(|_| PkiError::Invalid(format!("{d:?} is not a DNS name")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// An admin certificate: `spiffe://bulwark/admin/<name>`, client auth only, issued with
    /// `role` (OU `role:<role>`; a role stored in the cluster overrides it).
    pub fn issue_admin(&self, name: &str, role: Role) -> Result<Issued, PkiError> {
        if !identity::valid_name(name) {
            return Err(PkiError::Invalid(format!(
                "admin name {name:?}: use letters, digits, '-', '_' or '.' (at most 64)"
            )));
        }
        let key = KeyPair::generate()?;
        let mut params = base_params(&format!("bulwark admin {name}"), SERVICE_VALIDITY)?;
        params.distinguished_name.push(DnType::OrganizationalUnitName, format!("role:{role}"));
        params.subject_alt_names = vec![uri(format!("{SPIFFE_PREFIX}admin/{name}"))?];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs an agent's CSR from the CA's own template: only the CSR's public key is used
    /// (requested names and extensions are ignored); the certificate names
    /// `spiffe://bulwark/agent/<agent_id>`, client auth only, no CA bit.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        agent_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let public_key = csr_public_key(csr_pem)?;
        let mut params = base_params(&format!("bulwark agent {agent_id}"), validity)?;
        params.subject_alt_names = vec![uri(format!("{SPIFFE_PREFIX}agent/{agent_id}"))?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params.signed_by(&public_key, &self.issuer)?.pem())
    }
}

/// The public key of a PEM CSR whose signature proves possession of the private key.
/// Everything else in the CSR (names, extensions) is ignored.
fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, PkiError> {
    use x509_parser::prelude::FromDer;
    let invalid = |why: String| {
        PkiError::Invalid(format!("the CSR is not a valid certificate request: {why}"))
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(invalid(format!(
            "expected a CERTIFICATE REQUEST PEM block, found {:?}",
            pem.label
        )));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| invalid(e.to_string()))?;
    csr.verify_signature().map_err(|e| invalid(format!("its signature does not verify ({e})")))?;
    SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| invalid(e.to_string()))
}

impl Ca {
    /// Signs arbitrary parameters for `key` (tests use it for expired, not-yet-valid or
    /// oddly constrained certificates).
    pub fn sign(&self, params: &CertificateParams, key: &KeyPair) -> Result<String, PkiError> {
        Ok(params.signed_by(key, &self.issuer)?.pem())
    }
}

/// Writes `contents` to `path`; private files get mode 0600 from the start. Refuses to
/// replace an existing file unless `overwrite`.
pub fn write_pem(
    path: &Path,
    contents: &str,
    private: bool,
    overwrite: bool,
) -> Result<(), PkiError> {
    use std::io::Write;
    let err = |source| PkiError::Write { path: path.to_owned(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    if private {
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    if private {
        // An existing file keeps its mode on truncate: set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    f.write_all(contents.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes a certificate and key as `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
pub fn write_issued(
    dir: &Path,
    name: &str,
    issued: &Issued,
    overwrite: bool,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    write_pem(&cert, &issued.cert_pem, false, overwrite)?;
    write_pem(&key, &issued.key_pem, true, overwrite)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests;
