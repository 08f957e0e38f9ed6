//! Tests of the firewall enforcer against the real `nft`, each in its own network namespace
//! (never the machine's own). They need root; without it they fail and say so.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bulwark_proto::v1::{FirewallRule, FirewallState, PortRange};
use expect_test::expect;

use super::*;
use crate::host::Host;

/// A network namespace made for one test, deleted on drop (also when the test panics).
struct Netns {
    name: String,
    root: tempfile::TempDir,
    host: Host,
}

impl Netns {
    fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("bwfw-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "firewall tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network \
                 namespaces; `ip netns add {name}` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("firewall tests need `ip` (iproute2) and root: {e}"),
        }
        let root = tempfile::tempdir().expect("tempdir");
        let host = Host::new(root.path()).with_command_wrapper(
            ["ip", "netns", "exec", name.as_str()].iter().map(|s| s.to_string()).collect(),
        );
        let ns = Netns { name, root, host };
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn firewall(&self) -> Firewall {
        Firewall::new(self.host.clone())
    }

    /// Runs a command inside the namespace; returns stdout, panics on failure.
    fn sh(&self, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("run ip netns exec");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft(&self, args: &str) -> String {
        let mut cmd = vec!["nft"];
        cmd.extend(args.split_whitespace());
        self.sh(&cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn ports(list: &[(&str, u32, u32)]) -> Vec<PortRange> {
    list.iter()
        .map(|(p, a, b)| PortRange { protocol: p.to_string(), first: *a, last: *b })
        .collect()
}

fn rule(action: &str, direction: &str, addresses: &[&str], p: &[(&str, u32, u32)]) -> FirewallRule {
    FirewallRule {
        action: action.into(),
        direction: direction.into(),
        any_peer: addresses.is_empty(),
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        ports: ports(p),
        interface: "any".into(),
        log: false,
        policy: "radiology-base".into(),
        failsafe: false,
    }
}

/// `n` host addresses from the lab range 198.18.0.0/15, starting at 198.18.10.0.
fn hosts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let v = u32::from(std::net::Ipv4Addr::new(198, 18, 10, 0)) + i as u32;
            std::net::Ipv4Addr::from(v).to_string()
        })
        .collect()
}

/// A radiology workstation: admin SSH from the jump hosts (failsafe), DICOM from the PACS
/// segment on wired interfaces only, SMB and printing denied and logged, outbound web and
/// DNS, nothing to the guest wireless segment.
fn radiology() -> (FirewallState, FirewallContext) {
    let mut ssh = rule("allow", "inbound", &["198.18.1.10/32", "198.18.1.11"], &[("tcp", 22, 22)]);
    ssh.failsafe = true;
    ssh.log = true;
    ssh.policy = "jump-host-ssh".into();
    let mut pacs: Vec<String> = hosts(40);
    pacs.extend(
        ["198.18.3.0/24", "198.18.4.7/16", "2001:db8:2::5", "2001:db8:3::/48"].map(String::from),
    );
    let mut dicom = rule("allow", "inbound", &[], &[("tcp", 104, 104), ("tcp", 11112, 11112)]);
    dicom.any_peer = false;
    dicom.addresses = pacs;
    dicom.interface = "wired".into();
    let mut smb =
        rule("deny", "inbound", &[], &[("tcp", 445, 445), ("tcp", 139, 139), ("udp", 137, 138)]);
    smb.log = true;
    let print =
        rule("deny", "inbound", &[], &[("tcp", 515, 515), ("tcp", 631, 631), ("tcp", 9100, 9100)]);
    let mut rdp_nobody = rule("allow", "inbound", &[], &[("tcp", 3389, 3389)]);
    rdp_nobody.any_peer = false;
    let web =
        rule("allow", "outbound", &[], &[("tcp", 443, 443), ("tcp", 53, 53), ("udp", 53, 53)]);
    let mut guest = rule("deny", "outbound", &["198.18.100.0/24"], &[]);
    guest.interface = "wireless".into();
    let state = FirewallState {
        default_inbound: "deny".into(),
        default_outbound: "allow".into(),
        rules: vec![smb, ssh, dicom, print, rdp_nobody, web, guest],
        log_rate_per_minute: 6,
        audit: false,
    };
    let ctx = FirewallContext {
        controllers: vec![
            "198.18.0.1:7443".parse().unwrap(),
            "[2001:db8::1]:7443".parse().unwrap(),
        ],
        wireless_ifaces: vec!["wlan0".into()],
    };
    (state, ctx)
}

#[test]
fn plan_snapshot() {
    let (state, ctx) = radiology();
    let plan = plan(&state, &ctx).unwrap();
    expect![[r#"
        table inet bulwark {
          set r1_h4 { type ipv4_addr; elements = { 198.18.1.10, 198.18.1.11 } }
          set r2_h4 { type ipv4_addr; elements = { 198.18.10.0, 198.18.10.1, 198.18.10.10, 198.18.10.11, 198.18.10.12, 198.18.10.13, ... 34 more } }
          set r2_n4 { type ipv4_addr; flags interval; elements = { 198.18.0.0/16 } }
          set r2_h6 { type ipv6_addr; elements = { 2001:db8:2::5 } }
          set r2_n6 { type ipv6_addr; flags interval; elements = { 2001:db8:3::/48 } }
          set r6_n4 { type ipv4_addr; flags interval; elements = { 198.18.100.0/24 } }
          set wireless_ifaces { type ifname; elements = { wlan0 } }
          chain input {
            type filter hook input priority 0; policy drop;
            iif "lo" counter accept comment "failsafe loopback"
            ct state established,related counter accept comment "failsafe established,related"
            icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "failsafe ipv6 neighbour discovery"
            ip saddr @r1_h4 tcp dport 22 limit rate 6/minute burst 5 packets counter log prefix "bulwark allow input r1 " comment "r1 jump-host-ssh"
            ip saddr @r1_h4 tcp dport 22 counter accept comment "r1 jump-host-ssh"
            tcp dport { 139, 445 } limit rate 6/minute burst 5 packets counter log prefix "bulwark drop input r0 " comment "r0 radiology-base"
            tcp dport { 139, 445 } counter drop comment "r0 radiology-base"
            udp dport 137-138 limit rate 6/minute burst 5 packets counter log prefix "bulwark drop input r0 " comment "r0 radiology-base"
            udp dport 137-138 counter drop comment "r0 radiology-base"
            ip saddr @r2_h4 tcp dport { 104, 11112 } iifname != @wireless_ifaces counter accept comment "r2 radiology-base"
            ip saddr @r2_n4 tcp dport { 104, 11112 } iifname != @wireless_ifaces counter accept comment "r2 radiology-base"
            ip6 saddr @r2_h6 tcp dport { 104, 11112 } iifname != @wireless_ifaces counter accept comment "r2 radiology-base"
            ip6 saddr @r2_n6 tcp dport { 104, 11112 } iifname != @wireless_ifaces counter accept comment "r2 radiology-base"
            tcp dport { 515, 631, 9100 } counter drop comment "r3 radiology-base"
            limit rate 6/minute burst 5 packets counter log prefix "bulwark drop input default " comment "default"
            counter drop comment "default"
          }
          chain output {
            type filter hook output priority 0; policy accept;
            oif "lo" counter accept comment "failsafe loopback"
            ct state established,related counter accept comment "failsafe established,related"
            icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "failsafe ipv6 neighbour discovery"
            ip daddr 198.18.0.1 tcp dport 7443 counter accept comment "failsafe controller 198.18.0.1:7443"
            ip6 daddr 2001:db8::1 tcp dport 7443 counter accept comment "failsafe controller [2001:db8::1]:7443"
            tcp dport { 53, 443 } counter accept comment "r5 radiology-base"
            udp dport 53 counter accept comment "r5 radiology-base"
            ip daddr @r6_n4 oifname @wireless_ifaces counter drop comment "r6 radiology-base"
            counter accept comment "default"
          }
        }"#]].assert_eq(&plan.to_string());
}

#[test]
fn plan_is_deterministic_and_rejects_bad_input() {
    let (state, ctx) = radiology();
    assert_eq!(plan(&state, &ctx).unwrap(), plan(&state, &ctx).unwrap());
    let bad = |f: &dyn Fn(&mut FirewallState)| {
        let mut s = state.clone();
        f(&mut s);
        plan(&s, &ctx).map(|_| ()).unwrap_err().to_string()
    };
    expect![[r#"firewall rules[0] (policy "radiology-base"): ports[0]: 0-445 is not a port range (1-65535, first <= last)"#]].assert_eq(&bad(&|s| s.rules[0].ports[0].first = 0));
    expect![[r#"firewall rules[2] (policy "radiology-base"): addresses[44]: "198.18.999.1" is not an address or CIDR"#]].assert_eq(&bad(&|s| s.rules[2].addresses.push("198.18.999.1".into())));
    expect![[r#"firewall rules[0] (policy "radiology-base"): failsafe: only inbound allow rules can be failsafe"#]].assert_eq(&bad(&|s| s.rules[0].failsafe = true));
    expect![[r#"firewall state: default_inbound: "" is not allow or deny"#]]
        .assert_eq(&bad(&|s| s.default_inbound = String::new()));
    expect![[r#"firewall rules[3] (policy "radiology-base"): ports[0]: protocol "sctp" is not tcp or udp"#]].assert_eq(&bad(&|s| s.rules[3].ports[0].protocol = "sctp".into()));
}

/// Applies and observes; asserts the result compares in sync.
async fn apply_in_sync(fw: &Firewall, plan: &Plan) -> Applied {
    let observed = fw.observe().await.unwrap();
    let applied = fw.apply(plan, &observed).await.unwrap();
    let after = fw.observe().await.unwrap();
    assert_eq!(compare(plan, &after), Comparison::InSync, "after {applied:?}");
    applied
}

#[tokio::test]
async fn full_apply_roundtrips_in_sync_and_twice_is_a_no_op() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let (state, ctx) = radiology();
    let plan = plan(&state, &ctx).unwrap();
    assert_eq!(fw.observe().await.unwrap(), Observed::Absent);

    let first = apply_in_sync(&fw, &plan).await;
    assert_eq!(first.kind, ApplyKind::Full);
    assert_eq!(first.rules, plan.rule_count());
    let second = apply_in_sync(&fw, &plan).await;
    assert_eq!(second.kind, ApplyKind::Unchanged);

    // The same table text as nft prints it, for the record.
    let listed = ns.nft("list table inet bulwark");
    assert!(
        listed.contains("ip saddr @r2_h4 tcp dport { 104, 11112 } iifname != @wireless_ifaces"),
        "{listed}"
    );
    assert!(listed.contains("policy drop;"), "{listed}");

    fw.remove().await.unwrap();
    assert_eq!(fw.observe().await.unwrap(), Observed::Absent);
    fw.remove().await.unwrap();
}

#[tokio::test]
async fn membership_change_updates_sets_only() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let (mut state, mut ctx) = radiology();
    apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await;

    state.rules[2].addresses.push("198.18.200.1".into()); // one more PACS host
    state.rules[2].addresses.retain(|a| a != "198.18.10.3"); // one less
    state.rules[2].addresses.push("198.19.5.0/24".into()); // one more CIDR
    ctx.wireless_ifaces.push("wlp2s0".into());
    let new = plan(&state, &ctx).unwrap();
    let observed = fw.observe().await.unwrap();
    let Comparison::SetsDiffer(diffs) = compare(&new, &observed) else {
        panic!("expected a membership-only difference: {:?}", compare(&new, &observed));
    };
    let names: Vec<&str> = diffs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["r2_h4", "r2_n4", "wireless_ifaces"]);
    expect!["set r2_h4 has 40 elements, expected 40 (+1 -1); set r2_n4 has 1 elements, expected 2 (+1 -0); set wireless_ifaces has 1 elements, expected 2 (+1 -0)"].assert_eq(&Comparison::SetsDiffer(diffs).summary());

    let applied = apply_in_sync(&fw, &new).await;
    assert_eq!(applied.kind, ApplyKind::SetsOnly);
    assert_eq!((applied.added, applied.removed), (3, 1));

    // A stale observation (the delta removes what is not there) falls back to a full apply.
    let newer = plan(&state, &FirewallContext { wireless_ifaces: vec![], ..ctx.clone() }).unwrap();
    let applied = fw.apply(&newer, &observed).await.unwrap();
    assert_eq!(applied.kind, ApplyKind::Full);
    assert_eq!(compare(&newer, &fw.observe().await.unwrap()), Comparison::InSync);
}

#[tokio::test]
async fn drift_is_reported_and_repaired() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let (state, ctx) = radiology();
    let plan = plan(&state, &ctx).unwrap();
    apply_in_sync(&fw, &plan).await;
    let mut summaries = Vec::new();
    for drift in [
        "flush table inet bulwark",
        "delete table inet bulwark",
        "delete rule inet bulwark input handle PRINT_RULE",
        "add element inet bulwark r2_h4 { 203.0.113.9 }",
        "add rule inet bulwark output counter drop",
        "add chain inet bulwark sneaky",
    ] {
        let listed = ns.nft("-a list chain inet bulwark input");
        let line = listed.lines().find(|l| l.contains("tcp dport { 515, 631, 9100 }")).unwrap();
        let handle = line.rsplit("# handle ").next().unwrap().trim();
        let drift = drift.replace("PRINT_RULE", handle);
        let mut cmd = vec!["nft"];
        cmd.extend(drift.split_whitespace());
        ns.sh(&cmd);
        let observed = fw.observe().await.unwrap();
        let cmp = compare(&plan, &observed);
        assert_ne!(cmp, Comparison::InSync, "{drift}");
        summaries.push(cmp.summary());
        let applied = fw.apply(&plan, &observed).await.unwrap();
        assert_ne!(applied.kind, ApplyKind::Unchanged);
        assert_eq!(compare(&plan, &fw.observe().await.unwrap()), Comparison::InSync, "{drift}");
    }
    expect![[r#"
        chain input has 0 rules, expected: chain input has 16 rules
        table inet bulwark missing, expected: table inet bulwark with 25 rules in 2 chains, 7 sets
        chain input has 15 rules, expected: chain input has 16 rules
        set r2_h4 has 41 elements, expected 40 (+0 -1)
        chain output has 10 rules, expected: chain output has 9 rules
        unexpected chain sneaky, expected: no chain sneaky"#]]
    .assert_eq(&summaries.join("\n"));
}

#[tokio::test]
async fn foreign_tables_survive_every_apply() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let foreign = r#"
table ip nat {
    chain DOCKER {
        iifname "docker0" counter return
    }
    chain POSTROUTING {
        type nat hook postrouting priority srcnat; policy accept;
        oifname != "docker0" ip saddr 172.17.0.0/16 counter masquerade
    }
}
table inet firewalld {
    set allowed { type ipv4_addr; elements = { 198.18.9.9 } }
    chain filter_INPUT {
        type filter hook input priority filter + 10; policy accept;
        ct state established,related accept
        iifname "lo" accept
        ip saddr @allowed tcp dport 22 accept
    }
}
"#;
    let path = ns.root.path().join("foreign.nft");
    std::fs::write(&path, foreign).unwrap();
    ns.nft(&format!("-f {}", path.display()));
    let before = ns.nft("list table ip nat") + &ns.nft("list table inet firewalld");

    let (mut state, ctx) = radiology();
    apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await;
    state.rules[2].addresses.push("198.18.77.7".into());
    assert_eq!(apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await.kind, ApplyKind::SetsOnly);
    state.rules.pop();
    assert_eq!(apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await.kind, ApplyKind::Full);
    fw.remove().await.unwrap();

    let after = ns.nft("list table ip nat") + &ns.nft("list table inet firewalld");
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_rejected_apply_keeps_the_previous_ruleset() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let (state, ctx) = radiology();
    let good = plan(&state, &ctx).unwrap();
    apply_in_sync(&fw, &good).await;
    let before = ns.nft("list table inet bulwark");

    // Interface names are at most 15 bytes; nft refuses the whole transaction.
    let mut long = ctx.clone();
    long.wireless_ifaces = vec!["this-name-is-far-too-long".into()];
    long.controllers.push("198.18.0.2:7443".parse().unwrap()); // and a structural change
    let bad = plan(&state, &long).unwrap();
    let observed = fw.observe().await.unwrap();
    let err = fw.apply(&bad, &observed).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FirewallError::Rejected { what: "full", .. }), "{msg}");
    assert!(msg.contains("exceeds maximum length"), "{msg}");
    assert_eq!(ns.nft("list table inet bulwark"), before);
    assert_eq!(compare(&good, &fw.observe().await.unwrap()), Comparison::InSync);

    // A batch that fails half-way (its last command is invalid) changes nothing either.
    let mut json: serde_json::Value = serde_json::to_value(good.full_batch()).unwrap();
    json["nftables"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"add": {"rule": {"family": "inet", "table": "bulwark", "chain": "nosuchchain", "expr": [{"accept": null}]}}}));
    let err = fw.run_json("full", &serde_json::to_vec(&json).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("No such file or directory"), "{err}");
    assert_eq!(ns.nft("list table inet bulwark"), before);
}

#[tokio::test]
async fn failsafe_rules_stay_with_default_deny_and_no_rules() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let state = FirewallState {
        default_inbound: "deny".into(),
        default_outbound: "deny".into(),
        rules: vec![],
        log_rate_per_minute: 0,
        audit: false,
    };
    let ctx = FirewallContext {
        controllers: vec!["198.18.0.1:7443".parse().unwrap()],
        wireless_ifaces: vec![],
    };
    let plan = plan(&state, &ctx).unwrap();
    apply_in_sync(&fw, &plan).await;
    let listed = ns.nft("list table inet bulwark");
    for want in [
        "iif \"lo\" counter packets 0 bytes 0 accept",
        "oif \"lo\" counter packets 0 bytes 0 accept",
        "ct state established,related counter",
        "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }",
        "ip daddr 198.18.0.1 tcp dport 7443 counter",
        "limit rate 10/minute",
        "log prefix \"bulwark drop output default \"",
    ] {
        assert!(listed.contains(want), "missing {want:?} in\n{listed}");
    }
}

/// Waits for the next monitor event, up to `timeout`.
async fn next_event(mon: &mut Monitor, timeout: Duration) -> Option<MonitorEvent> {
    tokio::time::timeout(timeout, mon.next()).await.ok().flatten()
}

#[tokio::test]
async fn monitor_signals_drift_and_not_foreign_changes() {
    let ns = Netns::new();
    let fw = ns.firewall();
    let (state, ctx) = radiology();
    let plan = plan(&state, &ctx).unwrap();
    apply_in_sync(&fw, &plan).await;
    let mut mon = fw.monitor().unwrap();

    // nft monitor subscribes a moment after it starts: probe until it reports.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ns.nft("add chain inet bulwark probe");
        ns.nft("delete chain inet bulwark probe");
        if next_event(&mut mon, Duration::from_millis(200)).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "nft monitor never reported");
    }
    // Let the probe's burst pass, then nothing is pending.
    while next_event(&mut mon, Duration::from_millis(300)).await.is_some() {}

    ns.nft("add table ip other");
    ns.nft("add chain ip other c");
    assert_eq!(next_event(&mut mon, Duration::from_millis(500)).await, None);

    for drift in ["flush table inet bulwark", "delete table inet bulwark"] {
        ns.nft(drift);
        match next_event(&mut mon, Duration::from_secs(5)).await {
            Some(MonitorEvent::Changed { line }) => {
                assert!(line.contains("inet bulwark"), "{line}")
            }
            other => panic!("{drift}: expected a change, got {other:?}"),
        }
        let observed = fw.observe().await.unwrap();
        assert_ne!(compare(&plan, &observed), Comparison::InSync);
        fw.apply(&plan, &observed).await.unwrap();
        while next_event(&mut mon, Duration::from_millis(300)).await.is_some() {}
    }
}

#[tokio::test]
async fn monitor_reports_its_exit_so_the_caller_can_respawn() {
    let ns = Netns::new();
    let mut mon = ns.firewall().monitor().unwrap();
    let pid = mon.pid().unwrap().to_string();
    // Only the monitor this test started, by its id.
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    match next_event(&mut mon, Duration::from_secs(5)).await {
        Some(MonitorEvent::Exited { reason }) => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("expected Exited, got {other:?}"),
    }
    assert_eq!(next_event(&mut mon, Duration::from_secs(1)).await, None);
}

#[test]
fn wireless_interfaces_come_from_sysfs_under_the_root() {
    let root = tempfile::tempdir().unwrap();
    let net = root.path().join("sys/class/net");
    for dir in ["eth0", "lo", "wlan0/wireless", "wlp2s0"] {
        std::fs::create_dir_all(net.join(dir)).unwrap();
    }
    std::fs::write(net.join("wlp2s0/phy80211"), "").unwrap();
    let host = Host::new(root.path());
    assert_eq!(wireless_interfaces(&host).unwrap(), ["wlan0", "wlp2s0"]);
    assert!(wireless_interfaces(&Host::new(root.path().join("nowhere"))).unwrap().is_empty());
}

/// A process this test started, killed (by its id) and reaped on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn real_traffic_follows_the_rules() {
    // Host `ns` (198.18.0.1, firewalled) and a peer namespace (198.18.0.2) on a veth pair.
    let ns = Netns::new();
    let peer = Netns::new();
    ns.sh(&["ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &peer.name]);
    ns.sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "va"]);
    ns.sh(&["ip", "link", "set", "va", "up"]);
    peer.sh(&["ip", "addr", "add", "198.18.0.2/24", "dev", "vb"]);
    peer.sh(&["ip", "link", "set", "vb", "up"]);
    let server = "import socket,threading\n\
        def serve(p):\n    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    \
        s.bind(('0.0.0.0',p)); s.listen(16)\n    while True: s.accept()[0].close()\n\
        [threading.Thread(target=serve,args=(p,)).start() for p in (8080,8081)]\n";
    let _server = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", server])
            .spawn()
            .expect("python3 for the lab listener"),
    );
    let connects = |port: u16| {
        Command::new("ip")
            .args(["netns", "exec", &peer.name, "timeout", "1", "bash", "-c"])
            .arg(format!("echo > /dev/tcp/198.18.0.1/{port}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(8081) {
        assert!(Instant::now() < deadline, "the lab listener never came up");
    }

    let mut state = FirewallState {
        default_inbound: "deny".into(),
        default_outbound: "allow".into(),
        rules: vec![rule(
            "allow",
            "inbound",
            &["198.18.0.2", "198.18.0.99"],
            &[("tcp", 8080, 8080)],
        )],
        log_rate_per_minute: 0,
        audit: false,
    };
    let ctx = FirewallContext::default();
    let fw = ns.firewall();
    apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await;
    assert!(connects(8080), "allowed port refused");
    assert!(!connects(8081), "denied port connected");

    // The peer leaves the segment: a sets-only update closes the port for it.
    state.rules[0].addresses = vec!["198.18.0.99".into()];
    assert_eq!(apply_in_sync(&fw, &plan(&state, &ctx).unwrap()).await.kind, ApplyKind::SetsOnly);
    assert!(!connects(8080), "port still open after the peer left the segment");
}

/// The enforcer around the library: audit mode reports and changes nothing; enforce mode
/// applies, then repairs drift with a finding; a state without a firewall removes the table.
#[tokio::test]
async fn the_enforcer_audits_enforces_and_repairs() {
    use bulwark_proto::v1 as pb;

    use crate::enforce::{Enforcer, Trigger};
    let ns = Netns::new();
    let cache = crate::cache::Cache::open(ns.root.path()).unwrap();
    let access = enforcer::ControllerAccess {
        state: crate::identity::StateDir::new(ns.root.path().join("state")),
        urls: Vec::new(),
        addrs: Vec::new(),
    };
    let enforcer = enforcer::FirewallEnforcer::new(
        ns.host.clone(),
        cache.clone(),
        crate::sync::Link::default(),
        access,
        Duration::from_secs(1),
        false,
    );
    let (state, _) = radiology();
    let desired = |revision, audit| bulwark_proto::v1::DesiredState {
        revision,
        firewall: Some(FirewallState { audit, ..state.clone() }),
        ..Default::default()
    };

    // Audit: the table is missing, which is reported once, and nothing is created.
    let pass = enforcer.reconcile(&desired(1, true), &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::AuditNoncompliant, "{pass:?}");
    assert_eq!(pass.findings.len(), 1, "{pass:?}");
    assert_eq!(pass.findings[0].kind, "drift-detected");
    assert_eq!(ns.firewall().observe().await.unwrap(), Observed::Absent);
    let again = enforcer.reconcile(&desired(1, true), &Trigger::Periodic).await.unwrap();
    assert!(again.findings.is_empty(), "the same difference reported twice: {again:?}");

    // Enforce revision 2. The cache holds it as confirmed already (as after a controller
    // answered), so no commit-confirmed wait applies here; t75 covers that path.
    cache.set_confirmed_firewall(&desired(2, false)).await.unwrap();
    let pass = enforcer.reconcile(&desired(2, false), &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::Compliant, "{pass:?}");
    assert!(matches!(ns.firewall().observe().await.unwrap(), Observed::Present(_)));

    // Someone flushes the table: repaired, with a drift-repaired finding.
    ns.nft("flush table inet bulwark");
    let pass =
        enforcer.reconcile(&desired(2, false), &Trigger::Drift("flush".into())).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::DriftedRepaired, "{pass:?}");
    assert_eq!(pass.findings.len(), 1);
    assert_eq!(pass.findings[0].kind, "drift-repaired");
    assert!(pass.findings[0].before.contains("0 rules"), "{:?}", pass.findings[0]);

    // No firewall section any more: Bulwark's table goes away.
    let none = bulwark_proto::v1::DesiredState { revision: 3, ..Default::default() };
    let pass = enforcer.reconcile(&none, &Trigger::NewState).await.unwrap();
    assert_eq!(pass.state, pb::EnforcerState::NotManaged);
    assert_eq!(ns.firewall().observe().await.unwrap(), Observed::Absent);
}
