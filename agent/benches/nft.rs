//! Firewall apply timings against the real `nft`, in a network namespace made for the run
//! (never the machine's own). `cargo bench -p bulwark-agent --bench nft`; needs root.
//!
//! For segments of 100 .. 100,000 host addresses (one allow rule, one hash set): planning,
//! the full atomic replacement of the table, observing it, and a membership-only update
//! (one address added) through `Firewall::apply`. Min and median of a few runs.

use std::net::Ipv4Addr;
use std::process::Command;
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
    Ok(())
}

fn nft_version() -> String {
    Command::new("nft")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
