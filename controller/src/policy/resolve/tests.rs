use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;
use crate::policy::{load_sources, read_paths};

fn pack() -> Vec<Document> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let loaded = load_sources(&read_paths(&[dir]).unwrap(), &[]);
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    loaded.documents.into_iter().map(|l| l.doc).collect()
}

fn agent(id: &str, role: &str, addr: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        hostname: id.into(),
        os: "Debian GNU/Linux 12".into(),
        addresses: vec![addr.into()],
        mac: String::new(),
        labels: BTreeMap::from([("role".to_owned(), role.to_owned())]),
        enrolled_at: 0,
        cert_not_after: 0,
        token_id: String::new(),
        released_accounts: Default::default(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn a_modality_gets_its_kiosk_firewall_and_the_baseline() {
    let docs = pack();
    let fleet = vec![
        (agent("ct-1", "modality", "198.18.10.5"), None, 10),
        (agent("pacs-1", "pacs", "198.18.20.5"), None, 11),
        (agent("ris-1", "ris", "198.18.30.5"), None, 12),
    ];
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
    let r = resolve(&inputs, &fleet[0].0, 10);
    assert_eq!(r.policies, ["modalities", "baseline"]);
    // Revision: the newest input (the agents of the segments it refers to).
    assert_eq!(r.revision, 12);
    let fw = r.firewall.unwrap();
    assert_eq!(
        (fw.default_inbound, fw.default_outbound, fw.mode),
        (Action::Deny, Action::Deny, Mode::Enforce)
    );
    let first = &fw.rules[0];
    assert_eq!(
        (first.action, first.direction, first.policy.as_str()),
        (Action::Allow, Direction::Outbound, "modalities")
    );
    assert_eq!(first.peers, Some(vec![net("198.18.20.5/32")]));
    let ports: Vec<(Protocol, u16)> = first.ports.iter().map(|p| (p.protocol, p.first)).collect();
    assert_eq!(ports, [(Protocol::Tcp, 104), (Protocol::Tcp, 2762), (Protocol::Tcp, 11112)]);
    // The modality rules come before the baseline's, which end with the printing deny.
    assert_eq!(fw.rules.len(), 5 + 4);
    let last = fw.rules.last().unwrap();
    assert_eq!((last.action, last.peers.clone(), last.log), (Action::Deny, None, true));
    assert_eq!(r.wireless.unwrap().value, Wireless::Off);
    let pw = r.passwords.unwrap();
    assert_eq!(
        (pw.policy.as_str(), pw.value.lockout_attempts, pw.value.unlock_time_seconds),
        ("modalities", Some(10), Some(120))
    );
    assert_eq!(r.users.unwrap().policy, "baseline");
    assert_eq!(r.logins.unwrap().value.brute_force_threshold, 10);
}

#[test]
fn a_new_pacs_host_changes_exactly_the_agents_that_refer_to_pacs() {
    let docs = pack();
    let mut fleet = vec![
        (agent("ct-1", "modality", "198.18.10.5"), None, 10),
        (agent("ws-1", "reading-workstation", "198.18.40.5"), None, 11),
        (agent("prn-1", "print-server", "198.18.50.5"), None, 12),
        (agent("pacs-1", "pacs", "198.18.20.5"), None, 13),
    ];
    let before: Vec<Resolved> = {
        let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
        fleet.iter().take(3).map(|(a, _, rev)| resolve(&inputs, a, *rev)).collect()
    };
    fleet.push((agent("pacs-2", "pacs", "198.18.20.6"), None, 20));
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
    let after: Vec<Resolved> =
        fleet.iter().take(3).map(|(a, _, rev)| resolve(&inputs, a, *rev)).collect();
    // The modality and the workstation reach PACS: they get the new address and revision.
    for i in [0, 1] {
        assert_ne!(before[i], after[i], "{} did not change", before[i].agent_id);
        assert_eq!(after[i].revision, 20);
        let fw = after[i].firewall.as_ref().unwrap();
        assert!(
            fw.rules
                .iter()
                .any(|r| r.peers.as_ref().is_some_and(|p| p.contains(&net("198.18.20.6/32"))))
        );
    }
    // The print server does not refer to PACS: nothing changes, not even its revision.
    assert_eq!(before[2], after[2]);
    // A revoked PACS host leaves the segment again.
    fleet.last_mut().unwrap().1 = Some("decommissioned".into());
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
    let revoked = resolve(&inputs, &fleet[0].0, 10);
    let fw = revoked.firewall.unwrap();
    assert!(
        fw.rules
            .iter()
            .all(|r| r.peers.as_ref().is_none_or(|p| !p.contains(&net("198.18.20.6/32"))))
    );
}

#[test]
fn an_agent_no_policy_selects_gets_the_baseline_only() {
    let docs = pack();
    let fleet = vec![(agent("ups-mgmt", "unknown-role", "198.18.60.9"), None, 3)];
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
    let r = resolve(&inputs, &fleet[0].0, 3);
    assert_eq!(r.policies, ["baseline"]);
    assert!(r.wireless.is_none() && r.passwords.is_none());
}

/// The desired state of one agent per role of the pack, as an operator would read it.
fn render(r: &Resolved) -> String {
    let mut out = format!("{} (revision {}): {}\n", r.agent_id, r.revision, r.policies.join(" > "));
    if let Some(fw) = &r.firewall {
        out += &format!(
            "  firewall: inbound {:?}, outbound {:?}, {:?}\n",
            fw.default_inbound, fw.default_outbound, fw.mode
        );
        for rule in &fw.rules {
            out += &format!("    {}\n", describe(rule));
        }
    }
    if let Some(w) = &r.wireless {
        out += &format!("  wireless: {:?} ({})\n", w.value, w.policy);
    }
    if let Some(p) = &r.passwords {
        let v = &p.value;
        out += &format!(
            "  passwords: {} min_length={:?} lockout={:?}/{:?}s ({})\n",
            v.profile, v.min_length, v.lockout_attempts, v.unlock_time_seconds, p.policy
        );
    }
    if let Some(u) = &r.users {
        out += &format!(
            "  users: alert_new={} groups={:?} ({})\n",
            u.value.alert_new_users, u.value.privileged_groups, u.policy
        );
    }
    if let Some(l) = &r.logins {
        out += &format!(
            "  logins: threshold {} in {}s ({})\n",
            l.value.brute_force_threshold, l.value.brute_force_window_seconds, l.policy
        );
    }
    out
}

#[test]
fn golden_desired_states_of_the_pack() {
    let docs = pack();
    let fleet = vec![
        (agent("ct-1", "modality", "198.18.10.5"), None, 10),
        (agent("ws-1", "reading-workstation", "198.18.40.5"), None, 11),
        (agent("pacs-1", "pacs", "198.18.20.5"), None, 12),
        (agent("ris-1", "ris", "198.18.30.5"), None, 13),
        (agent("prn-1", "print-server", "198.18.50.5"), None, 14),
        (agent("jump-1", "jump-host", "198.18.70.5"), None, 15),
    ];
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 5 };
    let text: String =
        fleet.iter().take(2).map(|(a, _, rev)| render(&resolve(&inputs, a, *rev))).collect();
    expect_test::expect![[r#"
        ct-1 (revision 15): modalities > baseline
          firewall: inbound Deny, outbound Deny, Enforce
            allow outbound to 198.18.20.5/32 on tcp/104,tcp/2762,tcp/11112 (policy modalities)
            allow outbound to 198.18.30.5/32 on tcp/104,tcp/2575,tcp/11112 (policy modalities)
            allow outbound to 198.18.0.2/32,198.18.0.3/32 on tcp/53,udp/53,udp/123 (policy modalities)
            allow inbound from 198.18.20.5/32 on tcp/104,tcp/11112 (policy modalities)
            allow inbound from 198.18.70.5/32 on tcp/22 (policy modalities)
            allow inbound from 198.18.70.5/32 on tcp/22, failsafe (policy baseline)
            allow outbound to 198.18.0.2/32,198.18.0.3/32 on tcp/53,udp/53,udp/123 (policy baseline)
            allow outbound to 198.18.50.5/32 on tcp/515,tcp/631,tcp/9100,udp/631 (policy baseline)
            deny outbound to anywhere on tcp/139,tcp/445,tcp/515,tcp/631,tcp/9100,udp/631, logged (policy baseline)
          wireless: Off (modalities)
          passwords: cis-debian12 min_length=Some(12) lockout=Some(10)/Some(120)s (modalities)
          users: alert_new=true groups=["sudo", "adm", "wheel"] (baseline)
          logins: threshold 10 in 300s (baseline)
        ws-1 (revision 15): reading-workstations > baseline
          firewall: inbound Deny, outbound Allow, Enforce
            allow outbound to 198.18.20.5/32 on tcp/104,tcp/443,tcp/2762,tcp/11112 (policy reading-workstations)
            allow outbound to 198.18.30.5/32 on tcp/443,tcp/2575 (policy reading-workstations)
            deny outbound to 198.18.60.0/24 on any port, logged (policy reading-workstations)
            deny outbound to 198.18.10.5/32 on any port on wireless (policy reading-workstations)
            allow inbound from 198.18.70.5/32 on tcp/22, failsafe (policy baseline)
            allow outbound to 198.18.0.2/32,198.18.0.3/32 on tcp/53,udp/53,udp/123 (policy baseline)
            allow outbound to 198.18.50.5/32 on tcp/515,tcp/631,tcp/9100,udp/631 (policy baseline)
            deny outbound to anywhere on tcp/139,tcp/445,tcp/515,tcp/631,tcp/9100,udp/631, logged (policy baseline)
          wireless: Allowlist([AllowedSsid { ssid: "HOSPITAL-CLINICAL", security: Wpa3Enterprise }, AllowedSsid { ssid: "HOSPITAL-STAFF", security: Wpa2Enterprise }]) (reading-workstations)
          passwords: nist-800-63b min_length=None lockout=Some(5)/Some(600)s (reading-workstations)
          users: alert_new=true groups=["sudo", "adm", "wheel"] (baseline)
          logins: threshold 10 in 300s (baseline)
    "#]].assert_eq(&text);
}
