//! The compliance report as data: [`ComplianceReport`] and its parts. Their serde form is
//! the report's JSON (`schema` [`SCHEMA`](super::SCHEMA)); fields are only added within a
//! schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterIdentity, LoginRow};

/// A compliance report; its serde form is the JSON output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplianceReport {
    /// [`SCHEMA`](super::SCHEMA).
    pub schema: u32,
    /// RFC 3339 (UTC) and milliseconds since the Unix epoch.
    pub generated_at: String,
    pub generated_at_ms: i64,
    pub cluster: ClusterIdentity,
    pub period: Period,
    /// The `--site` the report is limited to (none: every site).
    pub site: Option<String>,
    pub policy: PolicyInForce,
    /// Hosts by their overall status (the worst over their controls), per site and class.
    pub totals: Totals,
    pub sites: Vec<GroupTotals>,
    pub classes: Vec<GroupTotals>,
    /// One per checklist item or control, with totals.
    pub controls: Vec<ControlSummary>,
    pub hosts: Vec<HostSummary>,
    /// One per (host, control) that applies, in host then control order.
    pub results: Vec<ControlResult>,
    pub logins: LoginAudit,
    pub accounts: AccountAlerts,
    /// What an auditor should know about the report's coverage.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub since: String,
    pub since_ms: i64,
    pub until: String,
    pub until_ms: i64,
}

/// The policy revision agents resolve against, and who put it in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInForce {
    pub revision: u64,
    /// The newest stored revision; above `revision` while a staged change waits for a rollout.
    pub stored_revision: u64,
    pub rollout_phase: String,
    /// From the admin audit log; none when no entry names the revision.
    pub applied_at: Option<String>,
    pub applied_at_ms: Option<i64>,
    pub applied_by: Option<String>,
    /// The call that did it, e.g. `PolicyService/Apply: 11 documents, stored as revision 9`.
    pub applied_with: Option<String>,
    /// The policies (by name) stored now.
    pub policies: Vec<String>,
    /// Policy changes and rollouts in the period, oldest first.
    pub changes: Vec<PolicyChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    pub at: String,
    pub at_ms: i64,
    pub who: String,
    /// The method, e.g. `PolicyService/Apply`.
    pub method: String,
    pub target: String,
}

/// Which list a control comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    /// The radiology checklist (`annotations.checklist`).
    Checklist,
    /// NIST SP 800-53 (`annotations.nist80053`).
    #[serde(rename = "nist-800-53")]
    Nist80053,
}

impl Framework {
    pub fn name(self) -> &'static str {
        match self {
            Framework::Checklist => "checklist",
            Framework::Nist80053 => "nist-800-53",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Framework::Checklist => "Checklist",
            Framework::Nist80053 => "NIST SP 800-53",
        }
    }
}

/// A host's standing on one control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every evidence enforcer is compliant.
    Met,
    /// Compliant now, after drift was repaired (counts as meeting the control).
    Repaired,
    /// Offline, never reported, or an enforcer not reporting a state.
    Unknown,
    /// An enforcer failed, or differs from the policy in audit mode.
    NotMet,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Repaired => "repaired",
            Status::Unknown => "unknown",
            Status::NotMet => "not-met",
        }
    }

    /// Met or repaired.
    pub fn meets(self) -> bool {
        matches!(self, Status::Met | Status::Repaired)
    }
}

/// Hosts counted by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub hosts: u64,
    pub met: u64,
    pub repaired: u64,
    pub not_met: u64,
    pub unknown: u64,
}

impl Totals {
    pub(super) fn add(&mut self, status: Status) {
        self.hosts += 1;
        match status {
            Status::Met => self.met += 1,
            Status::Repaired => self.repaired += 1,
            Status::NotMet => self.not_met += 1,
            Status::Unknown => self.unknown += 1,
        }
    }
}

/// Totals of one site or class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTotals {
    pub name: String,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlSummary {
    pub framework: Framework,
    pub control: String,
    /// The policies that name it.
    pub policies: Vec<String>,
    /// The enforcers whose state is the evidence.
    pub enforcers: Vec<String>,
    pub totals: Totals,
    pub by_site: Vec<GroupTotals>,
    pub by_class: Vec<GroupTotals>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    pub host_id: String,
    pub hostname: String,
    pub site: String,
    pub class: String,
    pub framework: Framework,
    pub control: String,
    pub status: Status,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcerLine {
    pub enforcer: String,
    /// compliant, drifted-repaired, failed, audit-noncompliant or not-managed.
    pub state: String,
    pub revision: u64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub id: String,
    pub hostname: String,
    pub site: String,
    pub class: String,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    /// RFC 3339, or `never`.
    pub last_seen: String,
    pub last_seen_ms: i64,
    pub desired_revision: u64,
    /// The worst status over its controls; none when no annotated policy selects it.
    pub status: Option<Status>,
    /// The policies that select it.
    pub policies: Vec<String>,
    pub enforcers: Vec<EnforcerLine>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginTotals {
    pub attempts: u64,
    pub failures: u64,
    pub successes: u64,
    pub brute_force: u64,
}

/// The login audit of the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginAudit {
    pub totals: LoginTotals,
    /// Per host and user ([`super::logins::summarize`], as `bulwarkctl logins report`).
    pub rows: Vec<LoginRow>,
    /// Brute-force alerts, oldest first (at most [`MAX_ALERTS`](super::MAX_ALERTS)).
    pub brute_force_alerts: Vec<Alert>,
}

/// User-account alerts of the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAlerts {
    /// Every alert kind seen, with how many.
    pub counts: BTreeMap<String, u64>,
    /// Oldest first (at most [`MAX_ALERTS`](super::MAX_ALERTS); `counts` has them all).
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub at: String,
    pub at_ms: i64,
    pub host: String,
    pub agent_id: String,
    pub kind: String,
    /// The account concerned (empty when the event names none).
    pub user: String,
    pub summary: String,
}
