//! The policy documents as typed values: `Segment`, `Service` and `Policy`
//! (`apiVersion: bulwark.io/v1`). `docs/policy-reference.md` documents every field.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "bulwark.io/v1";

/// Labels an agent must carry (all of them) to be selected. Empty selects every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A named group of hosts: fixed CIDRs, and/or the addresses of agents a selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub selector: Option<Selector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A port or port range of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

/// Named protocol/ports, e.g. dicom = 104/tcp, 11112/tcp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Apply and repair drift.
    Enforce,
    /// Only report what would change.
    Audit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InterfaceKind {
    Any,
    Wired,
    Wireless,
}

/// One firewall rule: traffic to or from `peers` (segments; empty: anywhere) on `services`
/// (empty: any port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    pub action: Action,
    pub direction: Direction,
    pub peers: Vec<String>,
    pub services: Vec<String>,
    pub interface: InterfaceKind,
    pub log: bool,
    /// Admin access kept by the agent even when the rest of the ruleset cannot be applied.
    #[serde(default)]
    pub failsafe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    /// Unset: a lower-priority policy's setting applies, else deny.
    pub default_inbound: Option<Action>,
    /// Unset: a lower-priority policy's setting applies, else allow.
    pub default_outbound: Option<Action>,
    pub rules: Vec<FirewallRule>,
    /// Log lines per minute at most for rules with `log: true`.
    pub log_rate_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WifiSecurity {
    Wpa2Psk,
    Wpa3Sae,
    Wpa2Enterprise,
    Wpa3Enterprise,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedSsid {
    pub ssid: String,
    pub security: WifiSecurity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wireless {
    /// Radios soft-blocked and kept off.
    Off,
    /// Only these networks, with at least their security.
    Allowlist(Vec<AllowedSsid>),
}

/// Password and lockout settings: a named profile plus overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passwords {
    pub profile: String,
    pub min_length: Option<u32>,
    pub min_classes: Option<u32>,
    pub max_age_days: Option<u32>,
    pub min_age_days: Option<u32>,
    pub warn_age_days: Option<u32>,
    pub lockout_attempts: Option<u32>,
    pub unlock_time_seconds: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserAction {
    Alert,
    Lock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    pub alert_new_users: bool,
    pub privileged_groups: Vec<String>,
    pub allowed_accounts: Vec<String>,
    pub action: UserAction,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logins {
    pub record: bool,
    /// Failed attempts from one source within the window that raise a brute-force alert.
    pub brute_force_threshold: u32,
    pub brute_force_window_seconds: u32,
}

/// What a policy is for: checklist items and NIST SP 800-53 controls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    pub checklist: Vec<String>,
    pub nist_800_53: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub selector: Selector,
    pub priority: i32,
    pub mode: Mode,
    pub firewall: Option<Firewall>,
    pub wireless: Option<Wireless>,
    pub passwords: Option<Passwords>,
    pub users: Option<Users>,
    pub logins: Option<Logins>,
    pub annotations: Annotations,
}

/// One document of a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Document {
    Segment(Segment),
    Service(Service),
    Policy(Box<Policy>),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Segment(_) => "Segment",
            Document::Service(_) => "Service",
            Document::Policy(_) => "Policy",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Document::Segment(s) => &s.name,
            Document::Service(s) => &s.name,
            Document::Policy(p) => &p.name,
        }
    }

    /// `Kind/name`: unique within a cluster.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// The password profiles Bulwark knows, by name.
pub const PASSWORD_PROFILES: &[&str] = &["cis-debian12", "nist-800-63b"];
