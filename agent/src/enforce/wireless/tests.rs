//! The wireless enforcer against temporary host roots: keyfiles made by the real
//! `nmcli --offline` (package network-manager) and by hand, wpa_supplicant.conf files with
//! several blocks, rfkill as plain files, and the real `NetworkManager --print-config`
//! reading the conf.d snippet.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use expect_test::{Expect, expect};

use super::*;

/// The keyfile `nmcli --offline connection add ARGS` prints (ARGS split at whitespace).
fn nmcli_keyfile(args: &str) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = std::process::Command::new("nmcli")
        .args(["--offline", "connection", "add"])
        .args(&args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nmcli ({e}): install the package network-manager (apt-get install -y network-manager)")
        });
    assert!(out.status.success(), "nmcli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn check_keyfile(text: &str, expected: Expect) {
    let got = keyfile::wifi_network(text).map(|n| n.label()).unwrap_or("not wifi".into());
    expected.assert_eq(&got);
}

#[test]
fn security_ranks_weakest_first() {
    let mut all = [
        Security::Wpa3Enterprise,
        Security::Sae,
        Security::Open,
        Security::Wpa2Enterprise,
        Security::Wep,
        Security::WpaPsk,
        Security::Owe,
    ];
    all.sort();
    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
    expect![[
        r#"["open", "owe", "wep", "wpa2-psk", "wpa3-sae", "wpa2-enterprise", "wpa3-enterprise"]"#
    ]]
    .assert_eq(&format!("{names:?}"));
    for p in ["wpa2-psk", "wpa3-sae", "wpa2-enterprise", "wpa3-enterprise"] {
        assert_eq!(Security::from_policy(p).map(Security::name), Some(p));
    }
}

#[test]
fn keyfiles_made_by_nmcli() {
    let psk = nmcli_keyfile(
        "type wifi con-name clin ssid HOSPITAL-CLINICAL wifi-sec.key-mgmt wpa-psk wifi-sec.psk correct-horse-battery",
    );
    check_keyfile(&psk, expect![[r#""HOSPITAL-CLINICAL" (wpa2-psk)"#]]);
    let sae = nmcli_keyfile(
        "type wifi con-name s ssid LAB wifi-sec.key-mgmt sae wifi-sec.psk correct-horse-battery",
    );
    check_keyfile(&sae, expect![[r#""LAB" (wpa3-sae)"#]]);
    let eap = "type wifi con-name e ssid HOSP-ENT wifi-sec.key-mgmt wpa-eap 802-1x.eap peap \
               802-1x.identity bob 802-1x.phase2-auth mschapv2";
    check_keyfile(&nmcli_keyfile(eap), expect![[r#""HOSP-ENT" (wpa2-enterprise)"#]]);
    let eap_pmf = format!("{eap} wifi-sec.pmf required");
    check_keyfile(&nmcli_keyfile(&eap_pmf), expect![[r#""HOSP-ENT" (wpa3-enterprise)"#]]);
    let open = nmcli_keyfile("type wifi con-name o ssid CAFE");
    check_keyfile(&open, expect![[r#""CAFE" (open)"#]]);
    let wired = nmcli_keyfile("type ethernet con-name w ifname eth0");
    check_keyfile(&wired, expect!["not wifi"]);
}

#[test]
fn keyfiles_written_by_hand() {
    let base = "[connection]\nid=x\ntype=wifi\n\n[wifi]\nssid=GUEST\n";
    check_keyfile(base, expect![[r#""GUEST" (open)"#]]);
    check_keyfile(
        &format!("{base}\n[wifi-security]\nkey-mgmt=none\nwep-key0=abcdef0123\n"),
        expect![[r#""GUEST" (wep)"#]],
    );
    check_keyfile(
        &format!("{base}\n[wifi-security]\nkey-mgmt=ieee8021x\n"),
        expect![[r#""GUEST" (wep)"#]],
    );
    check_keyfile(
        &format!("{base}\n[wifi-security]\nkey-mgmt=wpa-psk\npsk=secret123\n"),
        expect![[r#""GUEST" (wpa2-psk)"#]],
    );
    check_keyfile(
        &format!("{base}\n[wifi-security]\nkey-mgmt=wpa-eap-suite-b-192\n"),
        expect![[r#""GUEST" (wpa3-enterprise)"#]],
    );
    check_keyfile(
        &format!("{base}\n[wifi-security]\nkey-mgmt=owe\n"),
        expect![[r#""GUEST" (owe)"#]],
    );
    check_keyfile(
        "[connection]\ntype=802-11-wireless\n[802-11-wireless]\nssid=72;79;83;80;\n",
        expect![[r#""HOSP" (open)"#]],
    );
    check_keyfile(
        "[connection]\ntype=wifi\n[wifi]\nssid=My\\sNet\n[wifi-security]\nkey-mgmt=wpa-future\n",
        expect![[r#""My Net" (open)"#]],
    );
    check_keyfile("[connection]\ntype=wifi\n", expect!["<no ssid> (open)"]);
}

const SUPPLICANT: &str = r#"# Managed by hand; keep this comment.
ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev
update_config=1

network={
	ssid="HOSPITAL-CLINICAL"
	key_mgmt=WPA-EAP
	ieee80211w=2
	eap=PEAP
	identity="rad"
}

# the cafe next door
network={
	ssid="CAFE"
	key_mgmt=NONE
}

network={
	ssid="HOSPITAL-CLINICAL"
	key_mgmt=WPA-PSK SAE
	psk="transition mode"
}
network={
	ssid=4f4c44574550
	key_mgmt=NONE
	wep_key0="abcde"
}
network={
	ssid="DEFAULTS"
	psk="no key_mgmt: WPA-PSK WPA-EAP"
}
"#;

#[test]
fn supplicant_blocks_and_their_security() {
    let blocks = supplicant::blocks(SUPPLICANT).unwrap();
    let lines: Vec<String> =
        blocks.iter().map(|b| format!("{}-{} {}", b.start + 1, b.end, b.network.label())).collect();
    expect![[r#"
        5-11 "HOSPITAL-CLINICAL" (wpa3-enterprise)
        14-17 "CAFE" (open)
        19-23 "HOSPITAL-CLINICAL" (wpa2-psk)
        24-28 "OLDWEP" (wep)
        29-32 "DEFAULTS" (wpa2-psk)"#]]
    .assert_eq(&lines.join("\n"));
    let err = supplicant::blocks("network={\n ssid=\"X\"\n").unwrap_err();
    expect!["network block at line 1 has no closing }"].assert_eq(&err);
}

#[test]
fn a_removed_block_leaves_every_other_line() {
    let blocks = supplicant::blocks(SUPPLICANT).unwrap();
    let out = supplicant::remove(SUPPLICANT, &[&blocks[1], &blocks[3]]);
    expect![[r#"
        # Managed by hand; keep this comment.
        ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev
        update_config=1

        network={
        	ssid="HOSPITAL-CLINICAL"
        	key_mgmt=WPA-EAP
        	ieee80211w=2
        	eap=PEAP
        	identity="rad"
        }

        # the cafe next door

        network={
        	ssid="HOSPITAL-CLINICAL"
        	key_mgmt=WPA-PSK SAE
        	psk="transition mode"
        }
        network={
        	ssid="DEFAULTS"
        	psk="no key_mgmt: WPA-PSK WPA-EAP"
        }
    "#]]
    .assert_eq(&out);
}

#[test]
fn one_key_of_an_ini_file_is_set_in_place() {
    let state = "[main]\nNetworkingEnabled=true\nWirelessEnabled=true\nWWANEnabled=true\n";
    expect![[r#"
        [main]
        NetworkingEnabled=true
        WirelessEnabled=false
        WWANEnabled=true
    "#]]
    .assert_eq(&keyfile::set_key(state, "main", "WirelessEnabled", "false"));
    expect![[r#"
        # comment
        [main]
        NetworkingEnabled=true
        WirelessEnabled=false

        [other]
        a=b
    "#]]
    .assert_eq(&keyfile::set_key(
        "# comment\n[main]\nNetworkingEnabled=true\n\n[other]\na=b\n",
        "main",
        "WirelessEnabled",
        "false",
    ));
    expect![[r#"
        [main]
        WirelessEnabled=false
    "#]]
    .assert_eq(&keyfile::set_key("", "main", "WirelessEnabled", "false"));
    let done = "[main]\nWirelessEnabled=false\n";
    assert_eq!(keyfile::set_key(done, "main", "WirelessEnabled", "false"), done);
}

struct Lab {
    root: tempfile::TempDir,
    state: tempfile::TempDir,
    enforcer: WirelessEnforcer,
}

impl Lab {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let enforcer = WirelessEnforcer::new(Host::new(root.path()), state.path(), false);
        Self { root, state, enforcer }
    }

    fn path(&self, p: &str) -> PathBuf {
        Host::new(self.root.path()).path(p)
    }

    fn write(&self, p: &str, text: &str, mode: u32) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap()
    }

    fn mode(&self, p: &str) -> u32 {
        std::fs::metadata(self.path(p)).unwrap().permissions().mode() & 0o7777
    }

    async fn pass(&self, wireless: Option<pb::WirelessState>) -> Pass {
        let desired = pb::DesiredState { revision: 7, wireless, ..Default::default() };
        self.enforcer.reconcile(&desired, &Trigger::Periodic).await.unwrap()
    }
}

fn allowlist_state(audit: bool) -> pb::WirelessState {
    pb::WirelessState {
        radios_off: false,
        allowed: vec![
            pb::AllowedSsid {
                ssid: "HOSPITAL-CLINICAL".into(),
                min_security: "wpa3-enterprise".into(),
            },
            pb::AllowedSsid { ssid: "HOSP-STAFF".into(), min_security: "wpa2-psk".into() },
        ],
        audit,
        policy: "radiology-base".into(),
    }
}

fn off_state(audit: bool) -> pb::WirelessState {
    pb::WirelessState { radios_off: true, allowed: vec![], audit, policy: "modalities".into() }
}

/// The findings, one a line, quarantine ids (hashes of content with random uuids) redacted.
fn findings(pass: &Pass) -> String {
    let line = |f: &Finding| {
        let s = format!("{}: {}", f.kind, f.summary);
        match s.rsplit_once("quarantined as ") {
            Some((head, _)) => format!("{head}quarantined as <id>"),
            None => s,
        }
    };
    pass.findings.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn details(pass: &Pass) -> String {
    pass.details.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("\n")
}

/// A host with NetworkManager keyfiles (two made by nmcli), a wpa_supplicant.conf, one
/// wireless interface and its radio.
fn seeded_lab() -> Lab {
    let lab = Lab::new();
    let kf = |name: &str| format!("{KEYFILE_DIR}/{name}.nmconnection");
    let clinical = nmcli_keyfile(
        "type wifi con-name clinical ssid HOSPITAL-CLINICAL wifi-sec.key-mgmt wpa-eap wifi-sec.pmf required 802-1x.eap peap 802-1x.identity rad 802-1x.phase2-auth mschapv2",
    );
    lab.write(&kf("clinical"), &clinical, 0o644);
    let staff_psk = nmcli_keyfile(
        "type wifi con-name clinical-psk ssid HOSPITAL-CLINICAL wifi-sec.key-mgmt wpa-psk wifi-sec.psk correct-horse-battery",
    );
    lab.write(&kf("clinical-psk"), &staff_psk, 0o600);
    lab.write(&kf("cafe"), "[connection]\nid=cafe\ntype=wifi\n[wifi]\nssid=CAFE\n", 0o600);
    lab.write(
        &kf("staff"),
        "[connection]\nid=staff\ntype=wifi\n[wifi]\nssid=HOSP-STAFF\n[wifi-security]\nkey-mgmt=sae\npsk=x\n",
        0o600,
    );
    lab.write(&kf("wired"), "[connection]\nid=wired\ntype=ethernet\n", 0o644);
    lab.write("/etc/wpa_supplicant/wpa_supplicant.conf", SUPPLICANT, 0o600);
    std::fs::create_dir_all(lab.path("/sys/class/net/wlan0/wireless")).unwrap();
    std::fs::create_dir_all(lab.path("/sys/class/net/eth0")).unwrap();
    lab.write("/sys/class/rfkill/rfkill0/type", "wlan\n", 0o644);
    lab.write("/sys/class/rfkill/rfkill0/name", "phy0\n", 0o644);
    lab.write("/sys/class/rfkill/rfkill0/soft", "0\n", 0o644);
    lab.write("/sys/class/rfkill/rfkill0/hard", "0\n", 0o644);
    lab.write("/sys/class/rfkill/rfkill1/type", "bluetooth\n", 0o644);
    lab.write("/sys/class/rfkill/rfkill1/soft", "0\n", 0o644);
    lab.write(
        "/var/lib/NetworkManager/NetworkManager.state",
        "[main]\nNetworkingEnabled=true\nWirelessEnabled=true\n",
        0o644,
    );
    lab
}

#[tokio::test]
async fn allowlist_quarantines_refused_networks_and_restores_them() {
    let lab = seeded_lab();
    let pass = lab.pass(Some(allowlist_state(false))).await;
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{}", pass.reason);
    expect![[r#"
        quarantined: wireless: /etc/NetworkManager/system-connections/cafe.nmconnection "CAFE" (open): SSID "CAFE" is not allowed; quarantined as <id>
        quarantined: wireless: /etc/NetworkManager/system-connections/clinical-psk.nmconnection "HOSPITAL-CLINICAL" (wpa2-psk): security wpa2-psk is weaker than wpa3-enterprise required; quarantined as <id>
        permissions-fixed: wireless: /etc/NetworkManager/system-connections/clinical.nmconnection is mode 0644 owner 0:0, NetworkManager needs root 0600; now root 0600
        quarantined: wireless: /etc/wpa_supplicant/wpa_supplicant.conf:14 "CAFE" (open): SSID "CAFE" is not allowed; quarantined as <id>
        quarantined: wireless: /etc/wpa_supplicant/wpa_supplicant.conf:19 "HOSPITAL-CLINICAL" (wpa2-psk): security wpa2-psk is weaker than wpa3-enterprise required; quarantined as <id>
        quarantined: wireless: /etc/wpa_supplicant/wpa_supplicant.conf:24 "OLDWEP" (wep): SSID "OLDWEP" is not allowed; quarantined as <id>
        quarantined: wireless: /etc/wpa_supplicant/wpa_supplicant.conf:29 "DEFAULTS" (wpa2-psk): SSID "DEFAULTS" is not allowed; quarantined as <id>"#]]
    .assert_eq(&findings(&pass));
    expect![[r#"
        mode=allowlist
        interfaces=wlan0
        radios=rfkill0 phy0
        networks="HOSPITAL-CLINICAL" (wpa3-enterprise), "HOSP-STAFF" (wpa3-sae), "HOSPITAL-CLINICAL" (wpa3-enterprise)
        quarantined=6"#]]
    .assert_eq(&details(&pass));
    expect![[r#"
        # Managed by hand; keep this comment.
        ctrl_interface=DIR=/run/wpa_supplicant GROUP=netdev
        update_config=1

        network={
        	ssid="HOSPITAL-CLINICAL"
        	key_mgmt=WPA-EAP
        	ieee80211w=2
        	eap=PEAP
        	identity="rad"
        }

        # the cafe next door

    "#]]
    .assert_eq(&lab.read("/etc/wpa_supplicant/wpa_supplicant.conf"));
    assert_eq!(lab.mode("/etc/wpa_supplicant/wpa_supplicant.conf"), 0o600);
    assert_eq!(lab.mode(&format!("{KEYFILE_DIR}/clinical.nmconnection")), 0o600);
    assert!(!lab.path(&format!("{KEYFILE_DIR}/cafe.nmconnection")).exists());
    assert!(lab.path(&format!("{KEYFILE_DIR}/wired.nmconnection")).exists(), "other types stay");
    // The original is backed up once.
    let backup =
        lab.state.path().join("wireless-quarantine/backups/etc%wpa_supplicant%wpa_supplicant.conf");
    assert_eq!(std::fs::read_to_string(backup).unwrap(), SUPPLICANT);

    // Idempotent: a second pass changes nothing.
    let again = lab.pass(Some(allowlist_state(false))).await;
    assert_eq!(
        (again.state, again.findings.len()),
        (pb::EnforcerState::Compliant, 0),
        "{}",
        findings(&again)
    );

    // Drift: a refused profile appears; it is quarantined and reported as drift repaired.
    lab.write(
        &format!("{KEYFILE_DIR}/rogue.nmconnection"),
        "[connection]\ntype=wifi\n[wifi]\nssid=ROGUE\n",
        0o600,
    );
    let drift = lab.pass(Some(allowlist_state(false))).await;
    assert_eq!(drift.state, pb::EnforcerState::DriftedRepaired);
    expect![[r#"drift-repaired: wireless: /etc/NetworkManager/system-connections/rogue.nmconnection "ROGUE" (open): SSID "ROGUE" is not allowed; quarantined as <id>"#]]
        .assert_eq(&findings(&drift));

    let text = list_text(lab.state.path()).unwrap();
    assert!(
        text.contains(r#""ROGUE" (open)  keyfile from /etc/NetworkManager/system-connections/rogue.nmconnection: SSID "ROGUE" is not allowed"#),
        "{text}"
    );

    // Restore: the keyfile and a block come back; the quarantine forgets them.
    let records = list(lab.state.path()).unwrap();
    assert_eq!(records.len(), 7);
    let cafe = records
        .iter()
        .find(|r| r.kind == quarantine::Kind::Keyfile && r.ssid.as_deref() == Some("CAFE"))
        .unwrap();
    let cafe_text = "[connection]\nid=cafe\ntype=wifi\n[wifi]\nssid=CAFE\n";
    let back = restore(lab.state.path(), lab.root.path(), &cafe.id).unwrap();
    assert_eq!(back.source, Path::new("/etc/NetworkManager/system-connections/cafe.nmconnection"));
    assert_eq!(lab.read(&format!("{KEYFILE_DIR}/cafe.nmconnection")), cafe_text);
    assert_eq!(lab.mode(&format!("{KEYFILE_DIR}/cafe.nmconnection")), 0o600);
    let wep = records.iter().find(|r| r.ssid.as_deref() == Some("OLDWEP")).unwrap();
    restore(lab.state.path(), lab.root.path(), &wep.id).unwrap();
    assert!(lab.read("/etc/wpa_supplicant/wpa_supplicant.conf").ends_with(
        "# the cafe next door\n\nnetwork={\n\tssid=4f4c44574550\n\tkey_mgmt=NONE\n\twep_key0=\"abcde\"\n}\n"
    ));
    assert_eq!(list(lab.state.path()).unwrap().len(), 5);
    let err = restore(lab.state.path(), lab.root.path(), &cafe.id).unwrap_err();
    assert!(matches!(err, WirelessError::NotQuarantined(_)), "{err}");
}

#[tokio::test]
async fn audit_mode_reports_and_changes_nothing() {
    let lab = seeded_lab();
    let before = lab.read("/etc/wpa_supplicant/wpa_supplicant.conf");
    let pass = lab.pass(Some(allowlist_state(true))).await;
    assert_eq!(pass.state, pb::EnforcerState::AuditNoncompliant);
    assert_eq!(pass.findings.len(), 1);
    assert_eq!(pass.findings[0].kind, "drift-detected");
    assert!(
        pass.reason.contains("\"CAFE\" (open): SSID \"CAFE\" is not allowed"),
        "{}",
        pass.reason
    );
    assert!(pass.reason.ends_with("mode audit, nothing changed"), "{}", pass.reason);
    assert_eq!(lab.read("/etc/wpa_supplicant/wpa_supplicant.conf"), before);
    assert!(lab.path(&format!("{KEYFILE_DIR}/cafe.nmconnection")).exists());
    assert_eq!(lab.mode(&format!("{KEYFILE_DIR}/clinical.nmconnection")), 0o644);
    assert!(list(lab.state.path()).unwrap().is_empty());
    // The same difference is one event, not one per pass.
    let again = lab.pass(Some(allowlist_state(true))).await;
    assert_eq!((again.state, again.findings.len()), (pb::EnforcerState::AuditNoncompliant, 0));
    let off = lab.pass(Some(off_state(true))).await;
    assert_eq!(off.state, pb::EnforcerState::AuditNoncompliant);
    assert_eq!(lab.read("/sys/class/rfkill/rfkill0/soft"), "0\n");
}

#[tokio::test]
async fn no_wireless_section_is_not_managed() {
    let lab = seeded_lab();
    let pass = lab.pass(None).await;
    assert_eq!(pass.state, pb::EnforcerState::NotManaged);
    assert!(pass.findings.is_empty());
    assert!(lab.path(&format!("{KEYFILE_DIR}/cafe.nmconnection")).exists());
}

#[tokio::test]
async fn off_blocks_radios_and_tells_network_manager() {
    let lab = seeded_lab();
    std::fs::create_dir_all(lab.path(NM_CONF_DIR)).unwrap();
    lab.write(
        "/etc/NetworkManager/NetworkManager.conf",
        "[main]\nplugins=keyfile\n\n[keyfile]\nunmanaged-devices=interface-name:eth9\n",
        0o644,
    );
    let pass = lab.pass(Some(off_state(false))).await;
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{}", pass.reason);
    expect![[r#"
        radio-blocked: wireless: radio rfkill0 (phy0) is not soft-blocked; soft-blocked
        networkmanager-configured: wireless: /var/lib/NetworkManager/NetworkManager.state does not say WirelessEnabled=false; set
        networkmanager-configured: wireless: /etc/NetworkManager/conf.d/90-bulwark-wifi.conf is missing or differs; written"#]]
    .assert_eq(&findings(&pass));
    assert_eq!(lab.read("/sys/class/rfkill/rfkill0/soft"), "1\n");
    assert_eq!(lab.read("/sys/class/rfkill/rfkill1/soft"), "0\n", "bluetooth is not Wi-Fi");
    expect![[r#"
        [main]
        NetworkingEnabled=true
        WirelessEnabled=false
    "#]]
    .assert_eq(&lab.read(NM_STATE));
    assert!(
        lab.path(&format!("{KEYFILE_DIR}/cafe.nmconnection")).exists(),
        "off quarantines nothing"
    );
    expect![[r#"
        mode=off
        interfaces=wlan0
        radios=rfkill0 phy0 blocked
        networks="CAFE" (open), "HOSPITAL-CLINICAL" (wpa2-psk), "HOSPITAL-CLINICAL" (wpa3-enterprise), "HOSP-STAFF" (wpa3-sae), "HOSPITAL-CLINICAL" (wpa3-enterprise), "CAFE" (open), "HOSPITAL-CLINICAL" (wpa2-psk), "OLDWEP" (wep), "DEFAULTS" (wpa2-psk)
        quarantined=0"#]]
    .assert_eq(&details(&pass));

    // The real NetworkManager merges the snippet into its configuration.
    let printed = std::process::Command::new("NetworkManager")
        .arg("--print-config")
        .arg(format!("--config={}", lab.path("/etc/NetworkManager/NetworkManager.conf").display()))
        .arg(format!("--config-dir={}", lab.path(NM_CONF_DIR).display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run NetworkManager ({e}): install the package network-manager")
        });
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("unmanaged-devices=interface-name:eth9,type:wifi"), "{printed}");

    let again = lab.pass(Some(off_state(false))).await;
    assert_eq!(
        (again.state, again.findings.len()),
        (pb::EnforcerState::Compliant, 0),
        "{}",
        findings(&again)
    );

    // Someone unblocks the radio: blocked again, reported as drift repaired.
    lab.write("/sys/class/rfkill/rfkill0/soft", "0\n", 0o644);
    let drift = lab.pass(Some(off_state(false))).await;
    assert_eq!(drift.state, pb::EnforcerState::DriftedRepaired);
    expect!["drift-repaired: wireless: radio rfkill0 (phy0) is not soft-blocked; soft-blocked"]
        .assert_eq(&findings(&drift));
    assert_eq!(lab.read("/sys/class/rfkill/rfkill0/soft"), "1\n");

    // Leaving mode off removes Bulwark's snippet; radios stay as they are.
    let allow = lab.pass(Some(allowlist_state(false))).await;
    assert!(findings(&allow).contains("90-bulwark-wifi.conf is left from mode off; removed"));
    assert!(!lab.path(NM_SNIPPET).exists());
    assert_eq!(lab.read("/sys/class/rfkill/rfkill0/soft"), "1\n");
}

#[tokio::test]
async fn a_new_keyfile_is_seen_as_drift() {
    let lab = seeded_lab();
    let mut rx = lab.enforcer.watch_drift().await.expect("keyfile folder exists");
    lab.write(&format!("{KEYFILE_DIR}/new.nmconnection"), "[connection]\ntype=wifi\n", 0o600);
    let what = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(what.contains("new.nmconnection"), "{what}");
}
