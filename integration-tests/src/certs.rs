//! Test PKI made with rcgen: a cluster CA, controller certificates and an admin
//! certificate, written as PEM files the binaries read through their `--tls-*` flags.
//! (The security-plane issue replaces this with `bulwarkctl pki init`.)

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bulwark_controller::tls::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA and the identities issued from it, in one directory.
pub struct TestPki {
    dir: PathBuf,
    ca_cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    if private {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl TestPki {
    /// Creates the CA (ECDSA P-256) in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Bulwark test cluster CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        let ca_cert = dir.join("ca.pem");
        write(&ca_cert, &cert.pem(), false)?;
        write(&dir.join("ca-key.pem"), &key.serialize_pem(), true)?;
        Ok(Self { dir: dir.to_owned(), ca_cert, issuer: Issuer::new(params, key) })
    }

    fn issue(&self, name: &str, uri: &str, server: bool) -> Result<TlsFiles> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            params.subject_alt_names.push(SanType::DnsName("localhost".try_into()?));
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = TlsFiles {
            ca: self.ca_cert.clone(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        };
        write(&files.cert, &cert.pem(), false)?;
        write(&files.key, &key.serialize_pem(), true)?;
        Ok(files)
    }

    /// A controller certificate (`spiffe://bulwark/controller/<id>`) valid for 127.0.0.1
    /// and localhost.
    pub fn controller(&self, id: u64) -> Result<TlsFiles> {
        self.issue(&format!("controller-{id}"), &format!("spiffe://bulwark/controller/{id}"), true)
    }

    /// An admin certificate (`spiffe://bulwark/admin/<name>`).
    pub fn admin(&self, name: &str) -> Result<TlsFiles> {
        self.issue(&format!("admin-{name}"), &format!("spiffe://bulwark/admin/{name}"), false)
    }
}
