//! Compliance reports: which hosts meet each checklist item and NIST SP 800-53 control
//! that the policies' `annotations` name, which do not and why; the login audit and the
//! user-account alerts of the period; the policy revision in force and who applied it;
//! and the cluster that produced the report.
//!
//! [`build`] is pure: [`Inputs`] (domain types, gathered from a cluster by
//! `ctl::report::fetch`) to a [`ComplianceReport`], whose serde shape is the report's JSON
//! (`schema` 1). [`html::render`] and [`csv::render`] turn it into the other formats.
//!
//! # Judgement rules
//! A control applies to a host when a policy that names it in its annotations selects the
//! host (non-revoked agents only; revoked ones are listed in the notes). The evidence is the
//! host's reported state of the enforcers that control is about ([`evidence`]), limited to
//! the sections those policies configure. Per (host, control):
//! - never reported, or offline: **unknown** (offline names the last report);
//! - any evidence enforcer `failed`: **not-met** with its reason; `audit-noncompliant`
//!   (a `mode: audit` policy, the host differs): **not-met** with the finding;
//! - an enforcer with no status, or not managed yet: **unknown**;
//! - compliant now but drift was repaired (state `drifted-repaired`, or `drift-repaired`,
//!   `commit-confirmed-rollback` or `apply-failed` events in the period): **repaired**,
//!   which counts as meeting the control;
//! - otherwise **met**.
//!
//! An enforcer last judged against an older revision than the one the controller resolves
//! for the host keeps its status, with the two revisions in the reason.
//!
//! The worst of these wins (not-met, unknown, repaired, met); the reason lists every
//! enforcer that is not plainly met.

pub mod csv;
pub mod html;
pub mod logins;
pub mod model;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fleet::{AgentEvent, EnforcerReport, EnforcerState};
use crate::policy::Document;
use crate::policy::model::Policy;
use crate::security::AuditEntry;

pub use logins::LoginRow;
pub use model::*;

/// The JSON shape's version; bumped only by incompatible changes.
pub const SCHEMA: u32 = 1;
/// The label that names a host's site.
pub const SITE_LABEL: &str = "site";
/// The label that names a host's class (the pack's segments and policies select on it).
pub const CLASS_LABEL: &str = "role";
/// What hosts without the label are grouped under.
pub const UNLABELLED: &str = "-";
/// Most user-account and brute-force alerts listed one by one (all are counted).
pub const MAX_ALERTS: usize = 1000;

/// User-account event kinds the report lists as alerts.
pub const ACCOUNT_EVENTS: &[&str] = &[
    "user-added",
    "user-removed",
    "uid-changed",
    "gid-changed",
    "uid0-duplicate",
    "privileged-group-added",
    "privileged-group-removed",
    "password-emptied",
    "system-account-shell",
    "sudoers-changed",
    "user-locked",
    "lock-failed",
];
/// Event kinds that say an enforcer had to repair or roll back during the period.
pub const DRIFT_EVENTS: &[&str] = &["drift-repaired", "commit-confirmed-rollback", "apply-failed"];
/// Login audit event kinds.
pub const LOGIN_EVENTS: &[&str] = &["login", "brute-force"];

/// The evidence for the controls Bulwark knows: which enforcers' states show a host meets
/// it. Names compare case-insensitively. A control not listed here (or whose enforcers its
/// policy does not configure) is judged on every section its policy configures.
pub const EVIDENCE: &[(&str, &[&str])] = &[
    // The checklist items of the policy pack (policies/README.md).
    ("firewalls wherever possible", &["firewall"]),
    ("network segmentation and access controls", &["firewall"]),
    ("remote printing disabled (PrintNightmare)", &["firewall"]),
    ("kiosk-style modality workstations", &["firewall", "wireless"]),
    ("wireless access controls", &["wireless"]),
    ("strong password policies", &["passwords"]),
    ("monitor machines for new users", &["users"]),
    ("audit logs of workstation logins", &["logins"]),
    // NIST SP 800-53.
    ("SC-7", &["firewall"]),
    ("SC-7(5)", &["firewall"]),
    ("AC-3", &["firewall"]),
    ("CM-7", &["firewall", "wireless"]),
    ("AC-18", &["wireless"]),
    ("IA-5", &["passwords"]),
    ("AC-7", &["passwords", "logins"]),
    ("AC-2", &["users"]),
    ("AC-2(4)", &["users"]),
    ("SI-4", &["users", "logins"]),
    ("AU-2", &["logins"]),
    ("AU-12", &["logins"]),
];

/// The enforcers whose state is evidence for `control` (empty: not known).
pub fn evidence(control: &str) -> &'static [&'static str] {
    EVIDENCE
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(control))
        .map_or(&[], |(_, enforcers)| enforcers)
}

/// The sections (enforcer names) a policy configures.
pub fn sections(p: &Policy) -> Vec<&'static str> {
    let mut out = Vec::new();
    if p.firewall.is_some() {
        out.push("firewall");
    }
    if p.wireless.is_some() {
        out.push("wireless");
    }
    if p.passwords.is_some() {
        out.push("passwords");
    }
    if p.users.is_some() {
        out.push("users");
    }
    if p.logins.is_some() {
        out.push("logins");
    }
    out
}

// ---- inputs ------------------------------------------------------------------------------

/// What the report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Only hosts whose `site` label is this.
    pub site: Option<String>,
    /// The period: events and policy changes at or after this (ms since the Unix epoch).
    pub since_ms: i64,
    /// When the report is made (the end of the period).
    pub now_ms: i64,
}

/// Which system produced the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The cluster's name (`--cluster-name` of its nodes).
    pub name: String,
    /// SHA-256 of the cluster CA certificate (DER), hex, as `bulwarkctl pki init` printed.
    pub ca_sha256: String,
    /// The node that answered, as `id@address`.
    pub answered_by: String,
}

/// One enrolled agent as the fleet view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInput {
    pub id: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub online: bool,
    /// Last connect, disconnect or report (ms since the epoch); 0: never.
    pub last_seen_ms: i64,
    pub revoked: bool,
    /// The revision the controller resolves for the agent.
    pub desired_revision: u64,
    /// The agent's latest per-enforcer states (empty: never reported).
    pub enforcers: Vec<EnforcerReport>,
}

/// A stored event with the agent that reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEvent {
    pub agent_id: String,
    pub hostname: String,
    pub event: AgentEvent,
}

impl HostEvent {
    /// The hostname, or the agent id when there is none.
    pub fn host(&self) -> &str {
        if self.hostname.is_empty() { &self.agent_id } else { &self.hostname }
    }
}

/// The policy revisions as the rollout state tells them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revisions {
    /// The revision agents resolve against (outside a rollout's canaries).
    pub released: u64,
    /// The newest stored revision (above `released` while a staged change waits).
    pub stored: u64,
    /// The rollout phase (`none`, `running`, `completed`, ...).
    pub rollout_phase: String,
    pub rollout_target: u64,
}

/// Everything [`build`] reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub options: Options,
    pub cluster: ClusterIdentity,
    /// The stored policy documents (only `Policy` ones matter).
    pub documents: Vec<Document>,
    pub revisions: Revisions,
    pub hosts: Vec<HostInput>,
    /// Events of the period: [`LOGIN_EVENTS`], [`ACCOUNT_EVENTS`] and [`DRIFT_EVENTS`].
    pub events: Vec<HostEvent>,
    /// Admin audit entries of policy changes and rollouts (any age).
    pub audit: Vec<AuditEntry>,
}

// ---- building ------------------------------------------------------------------------------

/// RFC 3339 (UTC, seconds) of `ms` since the Unix epoch.
pub fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

fn label(labels: &BTreeMap<String, String>, key: &str) -> String {
    labels.get(key).filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| UNLABELLED.to_owned())
}

pub fn state_name(s: EnforcerState) -> &'static str {
    match s {
        EnforcerState::NotManaged => "not-managed",
        EnforcerState::Compliant => "compliant",
        EnforcerState::DriftedRepaired => "drifted-repaired",
        EnforcerState::Failed => "failed",
        EnforcerState::AuditNoncompliant => "audit-noncompliant",
    }
}

/// What happened to one agent's enforcers in the period, by enforcer and event kind.
type DriftCounts = BTreeMap<(String, String), BTreeMap<String, u64>>;

/// One enforcer's standing and why (empty reason: plainly compliant).
fn judge_enforcer(
    host: &HostInput,
    name: &str,
    drift: Option<&BTreeMap<String, u64>>,
) -> (Status, String) {
    let Some(e) = host.enforcers.iter().find(|e| e.enforcer == name) else {
        return (Status::Unknown, format!("{name}: the agent reports no state for it"));
    };
    let why = |text: &str| {
        if e.reason.is_empty() { text.to_owned() } else { format!("{text}: {}", e.reason) }
    };
    let behind = if e.revision < host.desired_revision {
        format!(
            " (judged against revision {}; {} not applied yet)",
            e.revision, host.desired_revision
        )
    } else {
        String::new()
    };
    let (status, text) = match e.state {
        EnforcerState::Failed => (Status::NotMet, why(&format!("{name} failed"))),
        EnforcerState::AuditNoncompliant => {
            (Status::NotMet, why(&format!("{name} differs from the policy (audit mode)")))
        }
        EnforcerState::NotManaged => {
            (Status::Unknown, format!("{name} is not managed by the agent (no desired state yet)"))
        }
        EnforcerState::DriftedRepaired => {
            (Status::Repaired, why(&format!("{name} drifted and was repaired")))
        }
        EnforcerState::Compliant => {
            let happened: Vec<String> =
                drift.into_iter().flatten().map(|(kind, n)| format!("{kind} x{n}")).collect();
            if happened.is_empty() {
                (Status::Met, String::new())
            } else {
                let text = format!("{name} compliant now; in the period: {}", happened.join(", "));
                (Status::Repaired, text)
            }
        }
    };
    if status == Status::Met {
        (status, behind.trim().to_owned())
    } else {
        (status, text + &behind)
    }
}

/// One host's standing on a control whose evidence is `enforcers`.
fn judge(
    host: &HostInput,
    enforcers: &BTreeSet<String>,
    drift: &DriftCounts,
    now_ms: i64,
) -> (Status, String) {
    if host.enforcers.is_empty() && host.last_seen_ms == 0 {
        return (Status::Unknown, "never reported".into());
    }
    if host.enforcers.is_empty() {
        return (Status::Unknown, "reported no enforcer state yet".into());
    }
    if enforcers.is_empty() {
        return (Status::Unknown, "its policies configure nothing an agent checks".into());
    }
    let judged: Vec<(String, Status, String)> = enforcers
        .iter()
        .map(|name| {
            let counts = drift.get(&(host.id.clone(), name.clone()));
            let (s, why) = judge_enforcer(host, name, counts);
            (name.clone(), s, why)
        })
        .collect();
    if !host.online {
        let last: Vec<String> = judged
            .iter()
            .map(|(name, _, _)| {
                let state = host
                    .enforcers
                    .iter()
                    .find(|e| &e.enforcer == name)
                    .map_or("no state", |e| state_name(e.state));
                format!("{name} {state}")
            })
            .collect();
        let since = if host.last_seen_ms == 0 {
            "offline".to_owned()
        } else {
            format!(
                "offline since {} ({} ago)",
                rfc3339(host.last_seen_ms),
                humantime::format_duration(Duration::from_secs(
                    ((now_ms - host.last_seen_ms).max(0) / 1000) as u64
                ))
            )
        };
        return (Status::Unknown, format!("{since}; last report: {}", last.join(", ")));
    }
    let worst = judged.iter().map(|(_, s, _)| *s).max().unwrap_or(Status::Unknown);
    let reason = if worst == Status::Met {
        let names: Vec<&str> = judged.iter().map(|(n, _, _)| n.as_str()).collect();
        let notes: Vec<&str> =
            judged.iter().map(|(_, _, w)| w.as_str()).filter(|w| !w.is_empty()).collect();
        let mut text = format!("{} compliant", names.join(", "));
        if !notes.is_empty() {
            text = format!("{text} {}", notes.join(" "));
        }
        text
    } else {
        let mut off: Vec<&(String, Status, String)> =
            judged.iter().filter(|(_, s, _)| *s != Status::Met).collect();
        off.sort_by_key(|x| std::cmp::Reverse(x.1));
        off.iter().map(|(_, _, w)| w.as_str()).collect::<Vec<_>>().join("; ")
    };
    (worst, reason)
}

/// The admin-audit methods that change the policy in force.
const POLICY_METHODS: &[&str] = &[
    "PolicyService/Apply",
    "PolicyService/Rollback",
    "PolicyService/DeleteDocument",
    "RolloutService/Start",
];

fn short_method(method: &str) -> &str {
    method.rsplit_once(".v1.").map_or(method, |(_, m)| m)
}

/// A successful, stored (not dry-run) policy change or rollout start.
fn is_policy_change(e: &AuditEntry) -> bool {
    e.code == "Ok"
        && POLICY_METHODS.iter().any(|m| e.method.ends_with(m))
        && !e.target.contains("(dry run)")
}

/// Who put revision `r` in force: the rollout that released it, else the change that
/// stored it (audit targets end with `stored as revision R`).
fn applied_by(audit: &[AuditEntry], r: u64) -> Option<&AuditEntry> {
    let changes = || audit.iter().filter(|e| is_policy_change(e));
    let released = format!("revision {r} ");
    let stored = format!("stored as revision {r}");
    changes()
        .filter(|e| e.method.ends_with("RolloutService/Start") && e.target.starts_with(&released))
        .max_by_key(|e| e.at_unix_ms)
        .or_else(|| changes().filter(|e| e.target.ends_with(&stored)).max_by_key(|e| e.at_unix_ms))
}

fn alert(e: &HostEvent) -> Alert {
    Alert {
        at: rfc3339(e.event.at_ms),
        at_ms: e.event.at_ms,
        host: e.host().to_owned(),
        agent_id: e.agent_id.clone(),
        kind: e.event.kind.clone(),
        user: e.event.fields.get("user").cloned().unwrap_or_default(),
        summary: e.event.summary.clone(),
    }
}

/// What applies to one host: per control, the policies naming it and the evidence.
type Applicable = BTreeMap<(Framework, String), (BTreeSet<String>, BTreeSet<String>)>;

fn applicable(policies: &[&Policy], labels: &BTreeMap<String, String>) -> Applicable {
    let mut out = Applicable::new();
    for p in policies.iter().filter(|p| p.selector.matches(labels)) {
        let configured = sections(p);
        let named = p
            .annotations
            .checklist
            .iter()
            .map(|c| (Framework::Checklist, c))
            .chain(p.annotations.nist_800_53.iter().map(|c| (Framework::Nist80053, c)));
        for (framework, control) in named {
            let known: Vec<&str> =
                evidence(control).iter().copied().filter(|e| configured.contains(e)).collect();
            let chosen = if known.is_empty() { configured.clone() } else { known };
            let entry = out.entry((framework, control.clone())).or_default();
            entry.0.insert(p.name.clone());
            entry.1.extend(chosen.iter().map(|s| (*s).to_owned()));
        }
    }
    out
}

fn group_totals(map: BTreeMap<String, Totals>) -> Vec<GroupTotals> {
    map.into_iter().map(|(name, totals)| GroupTotals { name, totals }).collect()
}

/// Per-control totals as hosts are judged.
#[derive(Default)]
struct Tally {
    controls: BTreeMap<(Framework, String), ControlSummary>,
    sites: BTreeMap<(Framework, String), BTreeMap<String, Totals>>,
    classes: BTreeMap<(Framework, String), BTreeMap<String, Totals>>,
}

impl Tally {
    fn add(
        &mut self,
        result: &ControlResult,
        policies: &BTreeSet<String>,
        evidence: &BTreeSet<String>,
    ) {
        let key = (result.framework, result.control.clone());
        let c = self.controls.entry(key.clone()).or_insert_with(|| ControlSummary {
            framework: result.framework,
            control: result.control.clone(),
            policies: Vec::new(),
            enforcers: Vec::new(),
            totals: Totals::default(),
            by_site: Vec::new(),
            by_class: Vec::new(),
        });
        c.totals.add(result.status);
        for p in policies {
            if !c.policies.contains(p) {
                c.policies.push(p.clone());
            }
        }
        for e in evidence {
            if !c.enforcers.contains(e) {
                c.enforcers.push(e.clone());
            }
        }
        let site = self.sites.entry(key.clone()).or_default();
        site.entry(result.site.clone()).or_default().add(result.status);
        let class = self.classes.entry(key).or_default();
        class.entry(result.class.clone()).or_default().add(result.status);
    }

    fn finish(mut self) -> Vec<ControlSummary> {
        let mut out = Vec::new();
        for (key, mut c) in self.controls {
            c.by_site = group_totals(self.sites.remove(&key).unwrap_or_default());
            c.by_class = group_totals(self.classes.remove(&key).unwrap_or_default());
            out.push(c);
        }
        out
    }
}

fn host_summary(h: &HostInput, policies: &[&Policy], status: Option<Status>) -> HostSummary {
    HostSummary {
        id: h.id.clone(),
        hostname: h.hostname.clone(),
        site: label(&h.labels, SITE_LABEL),
        class: label(&h.labels, CLASS_LABEL),
        labels: h.labels.clone(),
        online: h.online,
        last_seen: if h.last_seen_ms == 0 { "never".into() } else { rfc3339(h.last_seen_ms) },
        last_seen_ms: h.last_seen_ms,
        desired_revision: h.desired_revision,
        status,
        policies: policies
            .iter()
            .filter(|p| p.selector.matches(&h.labels))
            .map(|p| p.name.clone())
            .collect(),
        enforcers: h
            .enforcers
            .iter()
            .map(|e| EnforcerLine {
                enforcer: e.enforcer.clone(),
                state: state_name(e.state).to_owned(),
                revision: e.revision,
                reason: e.reason.clone(),
            })
            .collect(),
    }
}

/// The login audit and the user-account alerts of `events`.
fn login_and_account_alerts(
    events: &[&HostEvent],
    notes: &mut Vec<String>,
) -> (LoginAudit, AccountAlerts) {
    let rows = logins::summarize(events.iter().copied());
    let mut totals = LoginTotals::default();
    for r in &rows {
        totals.attempts += r.attempts;
        totals.failures += r.failures;
        totals.successes += r.successes;
        totals.brute_force += r.brute_force;
    }
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.event.at_ms, e.event.id.clone()));
    let brute: Vec<&HostEvent> =
        sorted.iter().copied().filter(|e| e.event.kind == "brute-force").collect();
    let account: Vec<&HostEvent> = sorted
        .iter()
        .copied()
        .filter(|e| ACCOUNT_EVENTS.contains(&e.event.kind.as_str()))
        .collect();
    let mut counts = BTreeMap::new();
    for e in &account {
        *counts.entry(e.event.kind.clone()).or_insert(0) += 1;
    }
    if account.len() > MAX_ALERTS || brute.len() > MAX_ALERTS {
        notes.push(format!(
            "alerts are listed up to {MAX_ALERTS} per list; the counts are complete"
        ));
    }
    let logins = LoginAudit {
        totals,
        rows,
        brute_force_alerts: brute.into_iter().take(MAX_ALERTS).map(alert).collect(),
    };
    let accounts =
        AccountAlerts { counts, alerts: account.into_iter().take(MAX_ALERTS).map(alert).collect() };
    (logins, accounts)
}

/// The revision in force, who applied it, and the policy changes of the period.
fn policy_in_force(
    inputs: &Inputs,
    policies: &[&Policy],
    notes: &mut Vec<String>,
) -> PolicyInForce {
    let r = &inputs.revisions;
    let by = applied_by(&inputs.audit, r.released);
    if by.is_none() && r.released > 0 {
        notes.push(format!(
            "no admin audit entry names policy revision {}; who applied it is unknown",
            r.released
        ));
    }
    if r.stored > r.released {
        notes.push(format!(
            "stored revision {} is staged (rollout {}); hosts are judged on the stored policies' annotations",
            r.stored, r.rollout_phase
        ));
    }
    let mut changes: Vec<PolicyChange> = inputs
        .audit
        .iter()
        .filter(|e| is_policy_change(e) && e.at_unix_ms as i64 >= inputs.options.since_ms)
        .map(|e| PolicyChange {
            at: rfc3339(e.at_unix_ms as i64),
            at_ms: e.at_unix_ms as i64,
            who: e.who.clone(),
            method: short_method(&e.method).to_owned(),
            target: e.target.clone(),
        })
        .collect();
    changes.sort_by_key(|c| c.at_ms);
    PolicyInForce {
        revision: r.released,
        stored_revision: r.stored,
        rollout_phase: r.rollout_phase.clone(),
        applied_at: by.map(|e| rfc3339(e.at_unix_ms as i64)),
        applied_at_ms: by.map(|e| e.at_unix_ms as i64),
        applied_by: by.map(|e| e.who.clone()),
        applied_with: by.map(|e| format!("{}: {}", short_method(&e.method), e.target)),
        policies: policies.iter().map(|p| p.name.clone()).collect(),
        changes,
    }
}

/// Judges every host on every control that applies to it, and sums up the period.
pub fn build(inputs: &Inputs) -> ComplianceReport {
    let o = &inputs.options;
    let mut notes = Vec::new();
    let policies: Vec<&Policy> = inputs
        .documents
        .iter()
        .filter_map(|d| match d {
            Document::Policy(p) => Some(p.as_ref()),
            _ => None,
        })
        .collect();
    let in_site = |labels: &BTreeMap<String, String>| {
        o.site.as_ref().is_none_or(|s| labels.get(SITE_LABEL) == Some(s))
    };
    let mut hosts: Vec<&HostInput> = inputs.hosts.iter().filter(|h| in_site(&h.labels)).collect();
    hosts.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    let revoked: Vec<&str> =
        hosts.iter().filter(|h| h.revoked).map(|h| h.hostname.as_str()).collect();
    if !revoked.is_empty() {
        notes.push(format!(
            "{} revoked agent(s) are not judged: {}",
            revoked.len(),
            revoked.join(", ")
        ));
    }
    hosts.retain(|h| !h.revoked);
    let ids: BTreeSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    let events: Vec<&HostEvent> = inputs
        .events
        .iter()
        .filter(|e| ids.contains(e.agent_id.as_str()) && e.event.at_ms >= o.since_ms)
        .collect();
    let mut drift = DriftCounts::new();
    for e in events.iter().filter(|e| DRIFT_EVENTS.contains(&e.event.kind.as_str())) {
        *drift
            .entry((e.agent_id.clone(), e.event.enforcer.clone()))
            .or_default()
            .entry(e.event.kind.clone())
            .or_default() += 1;
    }

    let mut results = Vec::new();
    let mut summaries = Vec::new();
    let mut tally = Tally::default();
    let (mut totals, mut sites, mut classes) =
        (Totals::default(), BTreeMap::new(), BTreeMap::new());
    let mut unjudged = Vec::new();
    for h in &hosts {
        let mut worst: Option<Status> = None;
        for ((framework, control), (by, evidence)) in applicable(&policies, &h.labels) {
            let (status, reason) = judge(h, &evidence, &drift, o.now_ms);
            worst = worst.max(Some(status));
            let result = ControlResult {
                host_id: h.id.clone(),
                hostname: h.hostname.clone(),
                site: label(&h.labels, SITE_LABEL),
                class: label(&h.labels, CLASS_LABEL),
                framework,
                control,
                status,
                reason,
            };
            tally.add(&result, &by, &evidence);
            results.push(result);
        }
        let summary = host_summary(h, &policies, worst);
        match worst {
            Some(s) => {
                totals.add(s);
                sites.entry(summary.site.clone()).or_insert_with(Totals::default).add(s);
                classes.entry(summary.class.clone()).or_insert_with(Totals::default).add(s);
            }
            None => unjudged.push(h.hostname.clone()),
        }
        summaries.push(summary);
    }
    if !unjudged.is_empty() {
        notes.push(format!(
            "{} host(s) are selected by no policy with annotations: {}",
            unjudged.len(),
            unjudged.join(", ")
        ));
    }
    let controls = tally.finish();
    if controls.is_empty() {
        notes.push(
            "no stored policy names a checklist item or NIST SP 800-53 control in its annotations"
                .into(),
        );
    }
    let (logins, accounts) = login_and_account_alerts(&events, &mut notes);
    let policy = policy_in_force(inputs, &policies, &mut notes);

    ComplianceReport {
        schema: SCHEMA,
        generated_at: rfc3339(o.now_ms),
        generated_at_ms: o.now_ms,
        cluster: inputs.cluster.clone(),
        period: Period {
            since: rfc3339(o.since_ms),
            since_ms: o.since_ms,
            until: rfc3339(o.now_ms),
            until_ms: o.now_ms,
        },
        site: o.site.clone(),
        policy,
        totals,
        sites: group_totals(sites),
        classes: group_totals(classes),
        controls,
        hosts: summaries,
        results,
        logins,
        accounts,
        notes,
    }
}
