//! The judgement rules, on fixtures built here, and the three renderings.

use std::collections::BTreeMap;

use super::*;
use crate::fleet::{AgentEvent, EnforcerReport, EnforcerState};

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A policy selecting `selector`, configuring `sections`, naming `checklist` and `nist`.
fn policy(name: &str, selector: &[(&str, &str)], sections: &[&str], nist: &[&str]) -> Document {
    use crate::policy::model::*;
    let has = |s: &str| sections.contains(&s);
    Document::Policy(Box::new(Policy {
        name: name.into(),
        selector: Selector { match_labels: labels(selector) },
        priority: 10,
        mode: Mode::Enforce,
        firewall: has("firewall").then(|| Firewall {
            default_inbound: None,
            default_outbound: None,
            rules: Vec::new(),
            log_rate_per_minute: 0,
        }),
        wireless: has("wireless").then_some(Wireless::Off),
        passwords: has("passwords").then(|| Passwords {
            profile: "cis-debian12".into(),
            min_length: None,
            min_classes: None,
            max_age_days: None,
            min_age_days: None,
            warn_age_days: None,
            lockout_attempts: None,
            unlock_time_seconds: None,
        }),
        users: has("users").then(|| Users {
            alert_new_users: true,
            privileged_groups: vec!["sudo".into()],
            allowed_accounts: Vec::new(),
            action: UserAction::Alert,
        }),
        logins: has("logins").then_some(Logins {
            record: true,
            brute_force_threshold: 10,
            brute_force_window_seconds: 300,
        }),
        annotations: Annotations {
            checklist: Vec::new(),
            nist_800_53: nist.iter().map(|s| (*s).to_owned()).collect(),
        },
    }))
}

fn enforcer(name: &str, state: EnforcerState, reason: &str) -> EnforcerReport {
    EnforcerReport {
        enforcer: name.into(),
        revision: 5,
        state,
        reason: reason.into(),
        checked_at_ms: NOW - 1000,
        details: BTreeMap::new(),
    }
}

fn host(name: &str, site: &str, role: &str, enforcers: Vec<EnforcerReport>) -> HostInput {
    HostInput {
        id: format!("agt-{name}"),
        hostname: name.into(),
        labels: labels(&[("site", site), ("role", role)]),
        online: true,
        last_seen_ms: NOW,
        revoked: false,
        desired_revision: 5,
        enforcers,
    }
}

fn event(host: &str, kind: &str, enforcer: &str, at_ms: i64, fields: &[(&str, &str)]) -> HostEvent {
    HostEvent {
        agent_id: format!("agt-{host}"),
        hostname: host.into(),
        event: AgentEvent {
            id: format!("{at_ms:013}-{kind}"),
            kind: kind.into(),
            enforcer: enforcer.into(),
            at_ms,
            revision: 5,
            summary: format!("{kind} on {host}"),
            before: String::new(),
            after: String::new(),
            fields: labels(fields),
        },
    }
}

fn inputs(documents: Vec<Document>, hosts: Vec<HostInput>) -> Inputs {
    Inputs {
        options: Options { site: None, since_ms: NOW - 30 * DAY, now_ms: NOW },
        cluster: ClusterIdentity {
            name: "bulwark".into(),
            ca_sha256: "ab".repeat(32),
            answered_by: "1@127.0.0.1:7401".into(),
        },
        documents,
        revisions: Revisions {
            released: 5,
            stored: 5,
            rollout_phase: "none".into(),
            rollout_target: 0,
        },
        hosts,
        events: Vec::new(),
        audit: Vec::new(),
    }
}

/// The (status, reason) of `host` on `control`.
fn result<'a>(r: &'a ComplianceReport, host: &str, control: &str) -> (Status, &'a str) {
    let x = r
        .results
        .iter()
        .find(|x| x.hostname == host && x.control == control)
        .unwrap_or_else(|| panic!("no result for {host} / {control}: {:#?}", r.results));
    (x.status, x.reason.as_str())
}

/// One host, one firewall policy naming SC-7: the host's firewall state decides.
fn check_firewall(state: EnforcerState, reason: &str, expected: Status, expected_reason: &str) {
    let docs = vec![policy("base", &[], &["firewall"], &["SC-7"])];
    let r = build(&inputs(
        docs,
        vec![host("ct1", "north", "modality", vec![enforcer("firewall", state, reason)])],
    ));
    let (status, why) = result(&r, "ct1", "SC-7");
    assert_eq!(status, expected, "{why}");
    assert!(why.contains(expected_reason), "{why:?} lacks {expected_reason:?}");
}

#[test]
fn the_enforcer_state_decides() {
    check_firewall(EnforcerState::Compliant, "", Status::Met, "firewall compliant");
    check_firewall(
        EnforcerState::Failed,
        "nft: Error: Could not process rule",
        Status::NotMet,
        "firewall failed: nft: Error: Could not process rule",
    );
    check_firewall(
        EnforcerState::AuditNoncompliant,
        "3 rules missing",
        Status::NotMet,
        "firewall differs from the policy (audit mode): 3 rules missing",
    );
    check_firewall(
        EnforcerState::DriftedRepaired,
        "table flushed; restored",
        Status::Repaired,
        "firewall drifted and was repaired: table flushed; restored",
    );
    check_firewall(EnforcerState::NotManaged, "", Status::Unknown, "not managed");
    assert!(Status::Repaired.meets() && !Status::Unknown.meets());
}

#[test]
fn a_host_behind_the_desired_revision_says_so() {
    let docs = vec![policy("base", &[], &["firewall"], &["SC-7"])];
    let mut h =
        host("ct1", "north", "modality", vec![enforcer("firewall", EnforcerState::Compliant, "")]);
    h.desired_revision = 7;
    let r = build(&inputs(docs, vec![h]));
    assert_eq!(
        result(&r, "ct1", "SC-7"),
        (Status::Met, "firewall compliant (judged against revision 5; 7 not applied yet)")
    );
}

#[test]
fn offline_never_reported_and_missing_states_are_unknown() {
    let docs = vec![policy("base", &[], &["firewall", "passwords"], &["SC-7", "IA-5"])];
    let mut offline =
        host("ws1", "north", "ws", vec![enforcer("firewall", EnforcerState::Compliant, "")]);
    offline.online = false;
    offline.last_seen_ms = NOW - 2 * 3600 * 1000;
    let mut never = host("ws2", "north", "ws", Vec::new());
    never.online = false;
    never.last_seen_ms = 0;
    let partial =
        host("ws3", "north", "ws", vec![enforcer("firewall", EnforcerState::Compliant, "")]);
    let r = build(&inputs(docs, vec![offline, never, partial]));
    let (s, why) = result(&r, "ws1", "SC-7");
    assert_eq!(s, Status::Unknown);
    assert!(
        why.starts_with("offline since")
            && why.contains("2h ago")
            && why.contains("firewall compliant"),
        "{why}"
    );
    assert_eq!(result(&r, "ws2", "SC-7"), (Status::Unknown, "never reported"));
    assert_eq!(result(&r, "ws3", "SC-7").0, Status::Met);
    let (s, why) = result(&r, "ws3", "IA-5");
    assert_eq!(s, Status::Unknown);
    assert_eq!(why, "passwords: the agent reports no state for it");
}

#[test]
fn drift_in_the_period_makes_a_compliant_host_repaired() {
    let docs = vec![policy("base", &[], &["firewall"], &["SC-7"])];
    let hosts = vec![
        host("ct1", "north", "modality", vec![enforcer("firewall", EnforcerState::Compliant, "")]),
        host("ct2", "north", "modality", vec![enforcer("firewall", EnforcerState::Compliant, "")]),
    ];
    let mut i = inputs(docs, hosts);
    i.events = vec![
        event("ct1", "drift-repaired", "firewall", NOW - DAY, &[]),
        event("ct1", "drift-repaired", "firewall", NOW - 2 * DAY, &[]),
        event("ct1", "commit-confirmed-rollback", "firewall", NOW - DAY, &[]),
        // Before the period, and about another enforcer: no effect.
        event("ct2", "drift-repaired", "firewall", NOW - 40 * DAY, &[]),
        event("ct2", "drift-repaired", "passwords", NOW - DAY, &[]),
    ];
    let r = build(&i);
    let (s, why) = result(&r, "ct1", "SC-7");
    assert_eq!(s, Status::Repaired);
    assert_eq!(
        why,
        "firewall compliant now; in the period: commit-confirmed-rollback x1, drift-repaired x2"
    );
    assert_eq!(result(&r, "ct2", "SC-7").0, Status::Met);
}

#[test]
fn the_worst_enforcer_wins_and_every_problem_is_named() {
    // CM-7 is about the firewall and wireless; the policy configures both.
    let docs =
        vec![policy("modalities", &[("role", "modality")], &["firewall", "wireless"], &["CM-7"])];
    let h = host(
        "ct1",
        "north",
        "modality",
        vec![
            enforcer("firewall", EnforcerState::DriftedRepaired, "rule edited"),
            enforcer("wireless", EnforcerState::Failed, "rfkill: no such device"),
        ],
    );
    let r = build(&inputs(docs, vec![h]));
    assert_eq!(
        result(&r, "ct1", "CM-7"),
        (
            Status::NotMet,
            "wireless failed: rfkill: no such device; firewall drifted and was repaired: rule edited"
        )
    );
    assert_eq!(r.controls[0].enforcers, ["firewall", "wireless"]);
}

#[test]
fn evidence_is_limited_to_what_the_naming_policy_configures() {
    // CM-7 maps to firewall and wireless, but this policy has no wireless section: a failed
    // wireless enforcer (from another policy) is not evidence for it. An unknown control is
    // judged on every section its policy configures.
    let docs = vec![policy("print", &[], &["firewall", "logins"], &["CM-7", "XX-1"])];
    let h = host(
        "ps1",
        "north",
        "print-server",
        vec![
            enforcer("firewall", EnforcerState::Compliant, ""),
            enforcer("wireless", EnforcerState::Failed, "broken"),
            enforcer("logins", EnforcerState::Failed, "journal unreadable"),
        ],
    );
    let r = build(&inputs(docs, vec![h]));
    assert_eq!(result(&r, "ps1", "CM-7"), (Status::Met, "firewall compliant"));
    assert_eq!(result(&r, "ps1", "XX-1"), (Status::NotMet, "logins failed: journal unreadable"));
    assert_eq!(evidence("sc-7"), ["firewall"]);
    assert!(evidence("nothing").is_empty());
}

#[test]
fn a_control_applies_only_where_its_policy_selects() {
    let docs = vec![
        policy("base", &[], &["users"], &["AC-2"]),
        policy("modalities", &[("role", "modality")], &["wireless"], &["AC-18"]),
        policy("plain", &[("role", "pacs")], &["firewall"], &[]),
    ];
    let ok = |name| enforcer(name, EnforcerState::Compliant, "");
    let hosts = vec![
        host("ct1", "north", "modality", vec![ok("users"), ok("wireless")]),
        host("pacs1", "south", "pacs", vec![ok("users"), ok("firewall")]),
    ];
    let r = build(&inputs(docs, hosts));
    let pairs: Vec<(&str, &str)> =
        r.results.iter().map(|x| (x.hostname.as_str(), x.control.as_str())).collect();
    assert_eq!(pairs, [("ct1", "AC-18"), ("ct1", "AC-2"), ("pacs1", "AC-2")]);
    let pacs = r.hosts.iter().find(|h| h.hostname == "pacs1").unwrap();
    assert_eq!(pacs.policies, ["base", "plain"]);
}

#[test]
fn totals_per_control_site_and_class_and_the_site_filter() {
    let docs = vec![policy("base", &[], &["firewall"], &["SC-7"])];
    let fw = |s| vec![enforcer("firewall", s, "why")];
    let mut revoked = host("old", "north", "ws", fw(EnforcerState::Failed));
    revoked.revoked = true;
    let mut unlabelled = host("bare", "", "", fw(EnforcerState::Compliant));
    unlabelled.labels.clear();
    let hosts = vec![
        host("ct1", "north", "modality", fw(EnforcerState::Compliant)),
        host("ct2", "north", "modality", fw(EnforcerState::Failed)),
        host("ws1", "south", "ws", fw(EnforcerState::DriftedRepaired)),
        revoked,
        unlabelled,
    ];
    let i = inputs(docs, hosts);
    let r = build(&i);
    let t = r.controls[0].totals;
    assert_eq!((t.hosts, t.met, t.repaired, t.not_met, t.unknown), (4, 2, 1, 1, 0));
    let by_site: Vec<(&str, u64, u64)> = r.controls[0]
        .by_site
        .iter()
        .map(|g| (g.name.as_str(), g.totals.hosts, g.totals.not_met))
        .collect();
    assert_eq!(by_site, [("-", 1, 0), ("north", 2, 1), ("south", 1, 0)]);
    let classes: Vec<&str> = r.classes.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(classes, ["-", "modality", "ws"]);
    assert_eq!(r.totals.hosts, 4);
    assert!(
        r.notes.iter().any(|n| n.contains("1 revoked agent(s) are not judged: old")),
        "{:?}",
        r.notes
    );

    let mut north = i.clone();
    north.options.site = Some("north".into());
    let r = build(&north);
    let names: Vec<&str> = r.hosts.iter().map(|h| h.hostname.as_str()).collect();
    assert_eq!(names, ["ct1", "ct2"]);
    assert_eq!(r.site.as_deref(), Some("north"));
}

fn audit(at_ms: u64, who: &str, method: &str, target: &str, code: &str) -> AuditEntry {
    AuditEntry {
        at_unix_ms: at_ms,
        who: who.into(),
        method: format!("/bulwark.v1.{method}"),
        target: target.into(),
        peer: "127.0.0.1:5000".into(),
        code: code.into(),
        message: String::new(),
    }
}

#[test]
fn the_policy_in_force_names_who_applied_it() {
    let mut i = inputs(vec![policy("base", &[], &["firewall"], &["SC-7"])], Vec::new());
    let t = (NOW - 3 * DAY) as u64;
    i.audit = vec![
        audit(t, "admin/ann", "PolicyService/Apply", "11 documents, stored as revision 3", "Ok"),
        audit(t + 1, "admin/bob", "PolicyService/Apply", "11 documents (dry run)", "Ok"),
        audit(t + 2, "admin/eve", "PolicyService/Apply", "1 documents", "PermissionDenied"),
        audit(
            t + 3,
            "admin/cat",
            "PolicyService/Rollback",
            "to revision 3, stored as revision 5",
            "Ok",
        ),
        audit(t + 4, "admin/ann", "SecurityService/CreateToken", "token", "Ok"),
    ];
    let r = build(&i);
    let p = &r.policy;
    assert_eq!(p.revision, 5);
    assert_eq!(p.applied_by.as_deref(), Some("admin/cat"));
    assert_eq!(p.applied_at_ms, Some(t as i64 + 3));
    assert_eq!(
        p.applied_with.as_deref(),
        Some("PolicyService/Rollback: to revision 3, stored as revision 5")
    );
    let who: Vec<&str> = p.changes.iter().map(|c| c.who.as_str()).collect();
    assert_eq!(who, ["admin/ann", "admin/cat"]);

    // A staged revision released by a rollout: the rollout's starter put it in force.
    i.revisions =
        Revisions { released: 7, stored: 8, rollout_phase: "completed".into(), rollout_target: 7 };
    i.audit.push(audit(
        t + 5,
        "admin/dan",
        "PolicyService/Apply",
        "2 documents (staged), stored as revision 7",
        "Ok",
    ));
    i.audit.push(audit(
        t + 6,
        "admin/fay",
        "RolloutService/Start",
        "revision 7 to role=modality (1 canaries)",
        "Ok",
    ));
    let r = build(&i);
    assert_eq!(r.policy.applied_by.as_deref(), Some("admin/fay"));
    assert!(r.notes.iter().any(|n| n.contains("stored revision 8 is staged")), "{:?}", r.notes);

    i.audit.clear();
    let r = build(&i);
    assert_eq!(r.policy.applied_by, None);
    assert!(r.notes.iter().any(|n| n.contains("no admin audit entry names policy revision 7")));
}

#[test]
fn logins_and_account_alerts_of_the_period() {
    let mut i = inputs(
        vec![policy("base", &[], &["logins"], &["AU-2"])],
        vec![host("ws1", "north", "ws", vec![enforcer("logins", EnforcerState::Compliant, "")])],
    );
    let login = |ok: &str, at| {
        event(
            "ws1",
            "login",
            "logins",
            at,
            &[("user", "rad"), ("success", ok), ("source", "198.18.0.9")],
        )
    };
    i.events = vec![
        login("false", NOW - 3000),
        login("false", NOW - 2000),
        login("true", NOW - 1000),
        login("true", NOW - 40 * DAY),
        event("ws1", "brute-force", "logins", NOW - 1500, &[("user", "rad")]),
        event("ws1", "user-added", "users", NOW - 500, &[("user", "evil")]),
        event("ws1", "uid0-duplicate", "users", NOW - 400, &[("user", "evil")]),
        event(
            "ws1",
            "privileged-group-added",
            "users",
            NOW - 300,
            &[("user", "evil"), ("group", "sudo")],
        ),
        // Another agent's events (not in the fleet) are ignored.
        event("ghost", "user-added", "users", NOW - 300, &[("user", "x")]),
    ];
    let r = build(&i);
    let t = &r.logins.totals;
    assert_eq!((t.attempts, t.failures, t.successes, t.brute_force), (3, 2, 1, 1));
    assert_eq!(r.logins.rows.len(), 1);
    assert_eq!(r.logins.brute_force_alerts.len(), 1);
    let kinds: Vec<&str> = r.accounts.alerts.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["user-added", "uid0-duplicate", "privileged-group-added"]);
    assert_eq!(r.accounts.counts["uid0-duplicate"], 1);
    assert_eq!(r.accounts.alerts[0].user, "evil");
}

#[test]
fn the_radiology_pack_maps_to_enforcers() {
    let pack = [
        "baseline.yaml",
        "modalities.yaml",
        "segments.yaml",
        "servers.yaml",
        "services.yaml",
        "workstations.yaml",
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let sources: Vec<(String, String)> = pack
        .iter()
        .map(|f| ((*f).to_owned(), std::fs::read_to_string(dir.join(f)).unwrap()))
        .collect();
    let loaded = crate::policy::load_sources(&sources, &[]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let docs: Vec<Document> = loaded.documents.into_iter().map(|l| l.doc).collect();
    let ok = |name| enforcer(name, EnforcerState::Compliant, "");
    let ct = host(
        "ct1",
        "north",
        "modality",
        vec![
            ok("firewall"),
            ok("passwords"),
            ok("users"),
            ok("logins"),
            enforcer("wireless", EnforcerState::Failed, "radio stays on"),
        ],
    );
    let r = build(&inputs(docs, vec![ct]));
    let (s, why) = result(&r, "ct1", "wireless access controls");
    assert_eq!((s, why), (Status::NotMet, "wireless failed: radio stays on"));
    assert_eq!(result(&r, "ct1", "AC-18").0, Status::NotMet);
    assert_eq!(result(&r, "ct1", "kiosk-style modality workstations").0, Status::NotMet);
    assert_eq!(result(&r, "ct1", "strong password policies"), (Status::Met, "passwords compliant"));
    assert_eq!(
        result(&r, "ct1", "audit logs of workstation logins"),
        (Status::Met, "logins compliant")
    );
    // Baseline's SC-7 is about the firewall only, whatever else the baseline configures.
    assert_eq!(result(&r, "ct1", "SC-7"), (Status::Met, "firewall compliant"));
    assert_eq!(result(&r, "ct1", "AU-12").0, Status::Met);
    let sc7 = r.controls.iter().find(|c| c.control == "SC-7").unwrap();
    assert_eq!(sc7.policies, ["baseline", "modalities"]);
    assert_eq!(r.hosts[0].status, Some(Status::NotMet));
}

fn hostile() -> ComplianceReport {
    let docs = vec![policy("base", &[], &["firewall"], &["SC-7"])];
    let h = host(
        "<script>alert(1)</script>",
        "north, \"east\"",
        "ws",
        vec![enforcer("firewall", EnforcerState::Failed, "bad \"rule\", line 2\n<b>x</b> & y")],
    );
    build(&inputs(docs, vec![h]))
}

#[test]
fn json_round_trips_into_the_model() {
    let r = hostile();
    let text = serde_json::to_string_pretty(&r).unwrap();
    let back: ComplianceReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["results"][0]["status"], "not-met");
    assert_eq!(v["results"][0]["framework"], "nist-800-53");
    assert_eq!(v["controls"][0]["by_site"][0]["not_met"], 1);
}

#[test]
fn csv_has_one_quoted_row_per_host_and_control() {
    let r = hostile();
    let bytes = csv::render(&r).unwrap();
    let mut reader = ::csv::Reader::from_reader(bytes.as_slice());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), csv::HEADER);
    let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][2], "north, \"east\"");
    assert_eq!(&rows[0][6], "not-met");
    assert_eq!(&rows[0][7], "firewall failed: bad \"rule\", line 2\n<b>x</b> & y");
}

#[test]
fn html_is_self_contained_and_escapes_what_hosts_send() {
    let html = html::render(&hostile());
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script>"), "unescaped host name");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;b&gt;x&lt;/b&gt; &amp; y"));
    for tag in [
        "<caption>",
        "<th scope=\"col\">",
        "<th scope=\"row\">",
        "@media print",
        "lang=\"en\"",
        "<caption>Controls per site",
        "<caption>Controls per class",
    ] {
        assert!(html.contains(tag), "no {tag}");
    }
    for external in ["<link", "src=", "http://", "https://", "@import"] {
        assert!(!html.contains(external), "refers to something outside: {external}");
    }
    assert_eq!(html::escape("a'b\"c"), "a&#39;b&quot;c");
}
