//! `bulwark-demo`: the whole system on its embedded defaults, on this machine only.
//!
//! Generates a cluster CA, starts three controllers on 127.0.0.1 with data in a temp dir,
//! forms a Raft cluster, writes records, kills the leader and shows the cluster carry on,
//! applies the radiology policy pack, enrolls a CT scanner and PACS servers (lab agents:
//! the real enrollment, no host enforcement yet), shows the scanner's resolved desired
//! state follow a new PACS server, then stays up with the exact commands to explore it
//! until Ctrl-C, and removes everything on the way out.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bulwark_controller::client::ReadMode;
use bulwark_controller::ctl::print_status;
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::cluster::bin_dir;
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;
use clap::Parser;

/// Runs a local three-node Bulwark controller cluster and shows what it does.
#[derive(Debug, Parser)]
#[command(name = "bulwark-demo", version)]
struct Args {
    /// Exit after the walkthrough instead of waiting for Ctrl-C.
    #[arg(long)]
    no_wait: bool,
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn describe(rule: &pb::FirewallRule) -> String {
    let peers = match (rule.any_peer, rule.addresses.is_empty()) {
        (true, _) => "anywhere".to_owned(),
        (false, true) => "nobody yet (no host in the segment)".to_owned(),
        (false, false) => rule.addresses.join(","),
    };
    let prep = if rule.direction == "inbound" { "from" } else { "to" };
    let ports: Vec<String> =
        rule.ports.iter().map(|p| format!("{}/{}", p.protocol, p.first)).collect();
    let ports = if ports.is_empty() { "any port".to_owned() } else { ports.join(",") };
    format!("{} {} {prep} {peers} on {ports} (policy {})", rule.action, rule.direction, rule.policy)
}

fn print_desired(state: &pb::DesiredState) {
    println!("    revision {}, policies {}", state.revision, state.policies.join(" > "));
    if let Some(fw) = &state.firewall {
        println!(
            "    firewall: inbound {} by default, outbound {} by default",
            fw.default_inbound, fw.default_outbound
        );
        for rule in &fw.rules {
            println!("      {}", describe(rule));
        }
    }
    if let Some(w) = &state.wireless {
        println!(
            "    wireless: {}",
            if w.radios_off { "radios off" } else { "allow-listed SSIDs only" }
        );
    }
    if let Some(p) = &state.passwords {
        println!(
            "    passwords: {} profile, lock after {} failures for {} s",
            p.profile,
            p.lockout_attempts.unwrap_or_default(),
            p.unlock_time_seconds.unwrap_or_default()
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let options = ClusterOptions { log: "warn", ..Default::default() };

    step("Generating a cluster CA, controller and admin certificates (ECDSA P-256)");
    let mut cluster = Cluster::empty(options)?;
    println!("    in {}", cluster.dir().display());

    step("Starting three controllers on 127.0.0.1 and forming a Raft cluster");
    for id in 1..=3 {
        cluster.spawn(id)?;
        println!("    node {id} listening on {}", cluster.addr(id));
    }
    let leader = cluster.init(&[1, 2, 3]).await?;
    println!("    node {leader} was elected leader");
    let client = cluster.client()?;
    print_status(&client, false).await?;

    step("Writing 1,000 records through all three nodes (followers forward to the leader)");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..16u64 {
        let c = cluster.node_client(lane % 3 + 1)?;
        tasks.spawn(async move {
            for i in (lane..1000).step_by(16) {
                c.put("policy", &format!("demo-{i:04}"), format!("value {i}").into_bytes(), None)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let took = started.elapsed();
    println!(
        "    1,000 durable writes in {:.2} s ({:.0} writes/s); every node applies them at the same revisions",
        took.as_secs_f64(),
        1000.0 / took.as_secs_f64()
    );

    step(&format!("Killing the leader (node {leader}) with SIGKILL, then writing again"));
    cluster.kill(leader)?;
    let killed = Instant::now();
    client.put("policy", "after-failover", b"still writable".to_vec(), None).await?;
    println!(
        "    a new leader acknowledged a write {} ms after the kill",
        killed.elapsed().as_millis()
    );
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    println!("    node {new_leader} leads now");
    print_status(&client, false).await?;

    step(&format!("Restarting node {leader}: it rejoins and catches up from its own disk"));
    cluster.restart(leader)?;
    let revision = client.list("", ReadMode::Linearizable).await?.revision;
    let back = cluster.node_client(leader)?;
    eventually("the restarted node to catch up", Duration::from_secs(20), || {
        let back = back.clone();
        async move {
            let r = back.list("", ReadMode::Stale).await?.revision;
            anyhow::ensure!(r >= revision, "at revision {r}");
            Ok(())
        }
    })
    .await?;
    println!("    node {leader} is at revision {revision} like the others");
    print_status(&client, false).await?;

    step("Applying the radiology policy pack (policies/): validated, then stored at one revision");
    let pack_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let pack = bulwark_controller::policy::read_paths(&[pack_dir]).map_err(anyhow::Error::msg)?;
    let applied = client.apply_policies(pack, false).await?;
    println!("    {} documents stored at revision {}", applied.changes.len(), applied.revision);

    step("Enrolling a CT scanner and a PACS server with bootstrap tokens (keys stay on the host)");
    let labels = |role: &str| [("role".to_owned(), role.to_owned())].into_iter().collect();
    let ttl = Duration::from_secs(3600);
    let modality_token = client.create_token(labels("modality"), ttl, 1).await?.token;
    let pacs_token = client.create_token(labels("pacs"), ttl, 2).await?.token;
    let ct = LabAgent::enroll_at(
        &cluster,
        &cluster.addr(1),
        &modality_token,
        "ct-scanner-1",
        "198.18.10.5",
    )
    .await?;
    LabAgent::enroll_at(&cluster, &cluster.addr(2), &pacs_token, "pacs-1", "198.18.20.5").await?;
    println!("    ct-scanner-1 is agent {} (spiffe://bulwark/agent/{})", ct.id, ct.id);

    step("The CT scanner's desired state, resolved by node 3 from its own copy of the data");
    let ct_client = ct.client_at(&cluster, 3)?;
    let mut stream = ct_client.stream_desired_state(0).await?;
    let state = stream.message().await?.context("no desired state")?;
    print_desired(&state);

    step("A second PACS server enrolls: the scanner's firewall follows, no admin action");
    LabAgent::enroll_at(&cluster, &cluster.addr(1), &pacs_token, "pacs-2", "198.18.20.6").await?;
    let state = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("no update within 10 s")??
        .context("stream ended")?;
    if let Some(rule) = state.firewall.iter().flat_map(|f| &f.rules).next() {
        println!("    revision {}: {}", state.revision, describe(rule));
    }

    step("Every mutating admin call is in the audit log");
    let audit = client.list_audit(pb::ListAuditRequest::default()).await?;
    for e in audit.iter().rev().take(4).rev() {
        println!("    {} {} {} {}", e.who, e.method, e.code, e.target);
    }

    let endpoints = [1, 2, 3].map(|id| cluster.addr(id)).join(",");
    let ctl = bin_dir()?.join("bulwarkctl");
    step("The cluster is yours to explore. In another shell:");
    println!("    export BULWARK_ENDPOINTS={endpoints}");
    println!("    export BULWARK_TLS_CA={}", cluster.admin.ca.display());
    println!("    export BULWARK_TLS_CERT={}", cluster.admin.cert.display());
    println!("    export BULWARK_TLS_KEY={}", cluster.admin.key.display());
    println!("    {} cluster status", ctl.display());
    println!("    {} record list policy", ctl.display());
    println!("    {} record watch policy --after {revision}", ctl.display());
    println!("    {} policy list", ctl.display());
    println!("    {} agent list", ctl.display());
    println!("    {} audit --since 1h", ctl.display());
    println!("    {} bench put --clients 1,16 --duration 3s", ctl.display());
    if args.no_wait {
        step("Done (--no-wait); stopping the cluster and removing its files");
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop the cluster and remove its files.");
    tokio::signal::ctrl_c().await?;
    step("Stopping the cluster and removing its files");
    drop(cluster);
    Ok(())
}
