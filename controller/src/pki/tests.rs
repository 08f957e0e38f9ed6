use std::net::{IpAddr, Ipv4Addr};

use rcgen::{CertificateParams, CustomExtension, KeyPair};

use super::*;

/// The DER bytes of a PEM certificate.
fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[test]
fn issued_certificates_carry_their_identity() {
    let ca = Ca::generate("test CA").unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let c = ca.issue_controller(3, &["ctl-3.bulwark".into()], &[ip]).unwrap();
    assert_eq!(identity::identity_from_der(&der(&c.cert_pem)), Ok(Identity::Controller(3)));
    let a = ca.issue_admin("alice", Role::Operator).unwrap();
    assert_eq!(
        identity::identity_from_der(&der(&a.cert_pem)),
        Ok(Identity::Admin { name: "alice".into(), issued_role: Role::Operator })
    );
    assert!(ca.issue_admin("bad name", Role::Admin).is_err());
}

#[test]
fn agent_certificates_come_from_the_ca_template_not_the_csr() {
    let ca = Ca::generate("test CA").unwrap();
    let key = KeyPair::generate().unwrap();
    // The CSR asks for a CA bit, another identity and an odd extension: all ignored.
    let mut params = CertificateParams::new(vec!["evil.example".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .subject_alt_names
        .push(rcgen::SanType::URI("spiffe://bulwark/admin/root".try_into().unwrap()));
    params.custom_extensions.push(CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0]));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let pem = ca.sign_agent_csr(&csr, "agt-1", AGENT_VALIDITY).unwrap();
    let bytes = der(&pem);
    assert_eq!(identity::identity_from_der(&bytes), Ok(Identity::Agent("agt-1".into())));
    let (_, cert) = x509_parser::parse_x509_certificate(&bytes).unwrap();
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(cert.extensions().iter().all(|e| e.oid.to_id_string() != "1.2.3.4"));
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
    assert_eq!(days, 7);
    assert!(ca.sign_agent_csr("not a csr", "agt-1", AGENT_VALIDITY).is_err());
}

#[test]
fn a_ca_key_readable_by_others_is_refused_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("test CA").unwrap();
    let cert = dir.path().join("ca.pem");
    let key = dir.path().join("ca-key.pem");
    write_pem(&cert, ca.cert_pem(), false, false).unwrap();
    write_pem(&key, ca.key_pem(), true, false).unwrap();
    assert!(Ca::load(&cert, &key).is_ok());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Ca::load(&cert, &key).err().unwrap().to_string();
    assert!(
        err.ends_with(
            "is readable by group or others (mode 644); a CA key must be private (chmod 600)"
        ),
        "{err}"
    );
    let err = write_pem(&cert, "x", false, false).unwrap_err();
    assert!(matches!(err, PkiError::Write { .. }));
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), ca.cert_pem());
}
