//! Who is calling: the identity in a certificate's SAN URI, and admin roles.
//!
//! - `spiffe://bulwark/controller/<node id>`
//! - `spiffe://bulwark/agent/<agent id>`
//! - `spiffe://bulwark/admin/<name>`; the certificate's OU `role:<role>` is the role it was
//!   issued with, and a role stored in the cluster overrides it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

pub const SPIFFE_PREFIX: &str = "spiffe://bulwark/";

/// An admin's role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also policies, rollouts, tokens and agents.
    Operator,
    /// Also cluster membership, PKI and roles.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!("{other:?} is not a role (viewer, operator or admin)")),
        }
    }
}

/// The identity a certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Controller(u64),
    Agent(String),
    Admin {
        name: String,
        /// The role the certificate was issued with.
        issued_role: Role,
    },
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Controller(id) => write!(f, "{SPIFFE_PREFIX}controller/{id}"),
            Identity::Agent(id) => write!(f, "{SPIFFE_PREFIX}agent/{id}"),
            Identity::Admin { name, .. } => write!(f, "{SPIFFE_PREFIX}admin/{name}"),
        }
    }
}

/// Names are what ids and admin names may contain: letters, digits, `-`, `_`, `.`.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads the identity from a DER certificate: exactly one `spiffe://bulwark/...` SAN URI.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with(SPIFFE_PREFIX)
            {
                uris.push(uri.to_string());
            }
        }
    }
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "the certificate must name exactly one {SPIFFE_PREFIX}... identity; it names {}",
            uris.len()
        ));
    };
    let rest = &uri[SPIFFE_PREFIX.len()..];
    let (kind, name) = rest.split_once('/').ok_or_else(|| format!("malformed identity {uri}"))?;
    if !valid_name(name) {
        return Err(format!("malformed identity {uri}"));
    }
    match kind {
        "controller" => name
            .parse()
            .map(Identity::Controller)
            .map_err(|_| format!("malformed controller identity {uri}")),
        "agent" => Ok(Identity::Agent(name.to_owned())),
        "admin" => {
            let issued_role = cert
                .subject()
                .iter_organizational_unit()
                .filter_map(|ou| ou.as_str().ok())
                .find_map(|ou| ou.strip_prefix("role:").and_then(|r| r.parse().ok()))
                .unwrap_or(Role::Viewer);
            Ok(Identity::Admin { name: name.to_owned(), issued_role })
        }
        other => Err(format!("unknown identity kind {other:?} in {uri}")),
    }
}
