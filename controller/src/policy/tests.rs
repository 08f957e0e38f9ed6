use proptest::prelude::*;

use super::*;

fn load(text: &str) -> Loaded {
    load_sources(&[("p.yaml".into(), text.into())], &[])
}

/// Asserts the diagnostics of `text`, as printed.
fn check(text: &str, expected: &[&str]) {
    let got: Vec<String> = load(text).diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(got, expected, "\n{text}");
}

const SERVICES: &str = "apiVersion: bulwark.io/v1
kind: Service
metadata: {name: dicom}
spec:
  ports: [104/tcp, 11112/tcp]
---
apiVersion: bulwark.io/v1
kind: Segment
metadata: {name: pacs}
spec:
  cidrs: [198.18.10.0/24]
  selector: {role: pacs}
---
";

#[test]
fn a_valid_set_decodes() {
    let text = format!(
        "{SERVICES}apiVersion: bulwark.io/v1
kind: Policy
metadata:
  name: modality-baseline
spec:
  selector: {{role: modality}}
  priority: 200
  firewall:
    defaultInbound: deny
    rules:
      - {{action: allow, direction: outbound, peers: [pacs], services: [dicom]}}
  wireless: {{mode: 'off'}}
  passwords: {{profile: cis-debian12, minLength: 14, lockoutAttempts: 5}}
  annotations: {{checklist: ['firewalls'], nist80053: [SC-7, AC-7, SC-7(5)]}}
"
    );
    let loaded = load(&text);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let keys: Vec<String> = loaded.documents.iter().map(|l| l.doc.key()).collect();
    assert_eq!(keys, ["Service/dicom", "Segment/pacs", "Policy/modality-baseline"]);
    let Document::Policy(p) = &loaded.documents[2].doc else { panic!("not a policy") };
    assert_eq!(p.priority, 200);
    assert_eq!(p.passwords.as_ref().and_then(|p| p.min_length), Some(14));
    assert_eq!(p.wireless, Some(model::Wireless::Off));
}

#[test]
fn every_error_is_reported_with_position_and_path() {
    check(
        "apiVersion: bulwark.io/v2
kind: Policy
metadata: {name: p}
spec:
  priorty: 3
  firewall:
    defaultInbound: maybe
    rules:
      - {action: allow, direction: outbound, services: [dicom], ports: 70000}
  passwords: {profile: cis-debian12, minLength: 4}
",
        &[
            "p.yaml:1:13: apiVersion: \"bulwark.io/v2\" is not supported; use bulwark.io/v1",
            "p.yaml:5:3: spec.priorty: unknown field; expected one of: annotations, firewall, logins, mode, passwords, priority, selector, users, wireless",
            "p.yaml:7:21: spec.firewall.defaultInbound: \"maybe\" is not one of allow, deny",
            "p.yaml:9:65: spec.firewall.rules[0].ports: unknown field; expected one of: action, direction, failsafe, interface, log, peers, services",
            "p.yaml:10:49: spec.passwords.minLength: 4 is not a password length (8-128)",
        ],
    );
}

#[test]
fn references_contradictions_and_duplicates() {
    let text = format!(
        "{SERVICES}apiVersion: bulwark.io/v1
kind: Policy
metadata: {{name: p}}
spec:
  firewall:
    rules:
      - {{action: allow, direction: inbound, peers: [pacs], services: [dicom]}}
      - {{action: deny, direction: inbound, peers: [pacs], services: [dicom]}}
      - {{action: allow, direction: inbound, peers: [ris]}}
---
apiVersion: bulwark.io/v1
kind: Service
metadata: {{name: dicom}}
spec: {{ports: [2762/tcp]}}
"
    );
    let got: Vec<String> = load(&text).diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "p.yaml:21:9: spec.firewall.rules[1]: contradicts rules[0]: the same traffic is both allowed and denied",
            "p.yaml:22:53: spec.firewall.rules[2].peers[0]: unknown segment \"ris\"",
            "p.yaml:26:18: metadata.name: Service/dicom is defined twice (also at p.yaml:3:18)",
        ]
    );
}

#[test]
fn failsafe_is_only_for_inbound_allow_rules() {
    check(
        "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: p}
spec:
  firewall:
    rules:
      - {action: deny, direction: inbound, failsafe: true}
      - {action: allow, direction: outbound, failsafe: true}
",
        &[
            "p.yaml:7:54: spec.firewall.rules[0].failsafe: failsafe is for admin access: only `action: allow` inbound rules can be failsafe",
            "p.yaml:8:56: spec.firewall.rules[1].failsafe: failsafe is for admin access: only `action: allow` inbound rules can be failsafe",
        ],
    );
}

#[test]
fn value_checks() {
    check(
        "apiVersion: bulwark.io/v1
kind: Service
metadata: {name: 'bad name'}
spec: {ports: [0/tcp, 80/sctp, 90-80/tcp, 631/tcp+udp]}
",
        &[
            "p.yaml:3:18: metadata.name: \"bad name\" is not a valid name (letters, digits, '-', '_', '.'; at most 63)",
            "p.yaml:4:16: spec.ports[0]: 0 is not a port (1-65535)",
            "p.yaml:4:23: spec.ports[1]: \"sctp\" is not a protocol (tcp or udp)",
            "p.yaml:4:32: spec.ports[2]: 90-80: the range ends before it starts",
        ],
    );
    check(
        "apiVersion: bulwark.io/v1
kind: Segment
metadata: {name: s}
spec: {cidrs: [198.18.0.1/16, nonsense]}
",
        &[
            "p.yaml:4:16: spec.cidrs[0]: 198.18.0.1/16 has host bits set; did you mean 198.18.0.0/16?",
            "p.yaml:4:31: spec.cidrs[1]: \"nonsense\" is not an IP address or CIDR",
        ],
    );
    check(
        "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: w}
spec:
  wireless: {mode: allowlist}
  passwords: {profile: cis-debian12, minAgeDays: 30, maxAgeDays: 7}
",
        &[
            "p.yaml:5:13: spec.wireless.allowedSsids: mode: allowlist needs at least one allowed SSID (or use mode: off)",
            "p.yaml:6:50: spec.passwords.minAgeDays: 30 days is longer than maxAgeDays (7)",
        ],
    );
    check(
        "a: [1, 2\n",
        &["p.yaml:2:1: YAML syntax: while parsing a flow sequence, expected ',' or ']'"],
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The loader never panics, whatever it is fed.
    #[test]
    fn arbitrary_input_never_panics(text in "[ -~\\n\\t]{0,400}") {
        let _ = load(&text);
    }

    /// Nor on a valid document with one byte changed.
    #[test]
    fn mutated_documents_never_panic(pos in 0usize..400, byte in 0u8..128) {
        let mut bytes = SERVICES.as_bytes().to_vec();
        let i = pos % bytes.len();
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = load(&text);
        }
    }
}
