//! The lab's PKI: the product's own CA code (`bulwark_controller::pki`), writing PEM files
//! the binaries read through their `--tls-*` and `--ca-key` flags.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Result;
use bulwark_controller::pki::{Ca, Role, write_issued, write_pem};
use bulwark_controller::tls::TlsFiles;

/// A CA and the identities issued from it, in one directory.
pub struct TestPki {
    dir: PathBuf,
    pub ca: Ca,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

impl TestPki {
    /// Creates the CA (ECDSA P-256) in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca::generate("Bulwark lab CA")?;
        let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        write_pem(&ca_cert, ca.cert_pem(), false, false)?;
        write_pem(&ca_key, ca.key_pem(), true, false)?;
        Ok(Self { dir: dir.to_owned(), ca, ca_cert, ca_key })
    }

    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            ca: self.ca_cert.clone(),
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}-key.pem")),
        }
    }

    /// A controller certificate (`spiffe://bulwark/controller/<id>`) valid for 127.0.0.1
    /// and localhost.
    pub fn controller(&self, id: u64) -> Result<TlsFiles> {
        self.controller_with_ips(id, &[])
    }

    /// A controller certificate valid for 127.0.0.1, localhost and `ips` (lab addresses).
    pub fn controller_with_ips(&self, id: u64, ips: &[IpAddr]) -> Result<TlsFiles> {
        let mut all = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        all.extend_from_slice(ips);
        let issued = self.ca.issue_controller(id, &["localhost".into()], &all)?;
        let name = format!("controller-{id}");
        write_issued(&self.dir, &name, &issued, true)?;
        Ok(self.files(&name))
    }

    /// An admin certificate (`spiffe://bulwark/admin/<name>`) issued with `role`.
    pub fn admin_with_role(&self, name: &str, role: Role) -> Result<TlsFiles> {
        let file = format!("admin-{name}");
        write_issued(&self.dir, &file, &self.ca.issue_admin(name, role)?, true)?;
        Ok(self.files(&file))
    }

    /// An admin certificate with role admin.
    pub fn admin(&self, name: &str) -> Result<TlsFiles> {
        self.admin_with_role(name, Role::Admin)
    }

    /// Writes a certificate and key made elsewhere (for odd certificates in tests).
    pub fn write(&self, name: &str, cert_pem: &str, key_pem: &str) -> Result<TlsFiles> {
        let issued =
            bulwark_controller::pki::Issued { cert_pem: cert_pem.into(), key_pem: key_pem.into() };
        write_issued(&self.dir, name, &issued, true)?;
        Ok(self.files(name))
    }
}
