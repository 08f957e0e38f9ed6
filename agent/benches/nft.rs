//! Firewall apply timings against the real `nft`, in a network namespace made for the run
//! (never the machine's own). `cargo bench -p bulwark-agent --bench nft`; needs root.
//!
//! For segments of 100 .. 100,000 host addresses (one allow rule, one hash set): planning,
//! the full atomic replacement of the table, observing it, and a membership-only update
//! (one address added) through `Firewall::apply`. Min and median of a few runs.
//!
//! For reference, the same segment as iptables would hold it, one rule per address
//! (`-s ADDR -p tcp --dport 104 -j ACCEPT` after loopback and established), loaded in the
//! same namespace by `iptables-nft-restore` and `iptables-legacy-restore` (package
//! iptables): the full restore, and one address added (`--noflush`, one `-A`). The namespace
//! and everything in it is deleted at the end, also when a step fails.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_agent::enforce::firewall::{
    ApplyKind, Comparison, Firewall, FirewallContext, Plan, compare, plan,
};
use bulwark_agent::host::Host;
use bulwark_proto::v1::{FirewallRule, FirewallState, PortRange};

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("bwfw-bench-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => Netns(name),
            Ok(o) => {
                eprintln!(
                    "the nft bench needs root to create a network namespace: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                std::process::exit(1)
            }
            Err(e) => {
                eprintln!("the nft bench needs `ip` (iproute2): {e}");
                std::process::exit(1)
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn state(n: usize) -> FirewallState {
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let addresses = (0..n).map(|i| Ipv4Addr::from(base + i as u32).to_string()).collect();
    FirewallState {
        default_inbound: "deny".into(),
        default_outbound: "allow".into(),
        rules: vec![FirewallRule {
            action: "allow".into(),
            direction: "inbound".into(),
            any_peer: false,
            addresses,
            ports: vec![PortRange { protocol: "tcp".into(), first: 104, last: 104 }],
            interface: "any".into(),
            log: false,
            policy: "bench".into(),
            failsafe: false,
        }],
        log_rate_per_minute: 10,
        audit: false,
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("{:>8.1} {:>8.1}", ms(v[0]), ms(v[v.len() / 2]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ns = Netns::new();
    let host = Host::new(std::env::temp_dir()).with_command_wrapper(vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        ns.0.clone(),
    ]);
    let fw = Firewall::new(host);
    let ctx =
        FirewallContext { controllers: vec!["198.18.0.1:7443".parse()?], wireless_ifaces: vec![] };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!("nft {} in namespace {}, times in ms (min, median)", nft_version(), ns.0);
    println!(
        "{:>9} {:>5} {:>8} | {:>17} | {:>17} | {:>17}",
        "addresses", "runs", "plan", "full apply", "observe", "add one (sets)"
    );
    rt.block_on(async {
        for n in [100usize, 1_000, 10_000, 100_000] {
            let runs = if n >= 100_000 { 3 } else { 7 };
            let t = Instant::now();
            let base: Plan = plan(&state(n), &ctx)?;
            let plan_time = t.elapsed();
            let plus_one = plan(&state(n + 1), &ctx)?;
            let (mut full, mut observe, mut sets) = (Vec::new(), Vec::new(), Vec::new());
            fw.apply_full(&base).await?; // the table exists: each run replaces it
            for _ in 0..runs {
                let t = Instant::now();
                fw.apply_full(&base).await?;
                full.push(t.elapsed());

                let t = Instant::now();
                let observed = fw.observe().await?;
                observe.push(t.elapsed());
                let t = Instant::now();
                let applied = fw.apply(&plus_one, &observed).await?;
                sets.push(t.elapsed());
                assert_eq!(applied.kind, ApplyKind::SetsOnly);
            }
            assert_eq!(compare(&plus_one, &fw.observe().await?), Comparison::InSync);
            println!(
                "{n:>9} {runs:>5} {:>8.1} | {} | {} | {}",
                plan_time.as_secs_f64() * 1000.0,
                stats(full),
                stats(observe),
                stats(sets)
            );
        }
        fw.remove().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    iptables_reference(&ns)
}

/// The iptables-restore reference table (see the module docs).
fn iptables_reference(ns: &Netns) -> Result<(), Box<dyn std::error::Error>> {
    let tools: Vec<&str> = ["iptables-nft-restore", "iptables-legacy-restore"]
        .into_iter()
        .filter(|t| Command::new(t).arg("--version").output().is_ok_and(|o| o.status.success()))
        .collect();
    if tools.is_empty() {
        println!("iptables reference skipped: no iptables-restore (apt-get install -y iptables)");
        return Ok(());
    }
    println!(
        "iptables reference, one rule per address, in namespace {}, times in ms (min, median): {}",
        ns.0,
        tools.join(", ")
    );
    print!("{:>9} {:>5}", "addresses", "runs");
    for t in &tools {
        let backend = t.trim_start_matches("iptables-").trim_end_matches("-restore");
        print!(" | {:>17} | {:>17}", format!("{backend}: full"), "add one (-A)");
    }
    println!();
    for n in [100usize, 1_000, 10_000, 100_000] {
        let runs = if n >= 100_000 { 3 } else { 7 };
        print!("{n:>9} {runs:>5}");
        for tool in &tools {
            let (mut full, mut add) = (Vec::new(), Vec::new());
            let table = iptables_table(n);
            for i in 0..runs {
                let t = Instant::now();
                restore(ns, tool, &[], &table)?;
                full.push(t.elapsed());
                let extra = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i as u32);
                let one = format!(
                    "*filter\n-A INPUT -s {extra}/32 -p tcp -m tcp --dport 104 -j ACCEPT\nCOMMIT\n"
                );
                let t = Instant::now();
                restore(ns, tool, &["--noflush"], &one)?;
                add.push(t.elapsed());
            }
            print!(" | {} | {}", stats(full), stats(add));
            // Leave this backend's table empty before the next size.
            restore(ns, tool, &[], "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")?;
        }
        println!();
    }
    Ok(())
}

/// The filter table: input policy drop, loopback and established first, then one accept
/// rule per segment address (198.18.0.0 .. N), as the nft bench's single set holds them.
fn iptables_table(n: usize) -> String {
    let mut t = String::from(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for i in 0..n {
        let a = Ipv4Addr::from(base + i as u32);
        t.push_str(&format!("-A INPUT -s {a}/32 -p tcp -m tcp --dport 104 -j ACCEPT\n"));
    }
    t.push_str("COMMIT\n");
    t
}

/// `ip netns exec NS TOOL ARGS < input`, failing with its stderr.
fn restore(
    ns: &Netns,
    tool: &str,
    args: &[&str],
    input: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0, tool])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("{tool}: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
