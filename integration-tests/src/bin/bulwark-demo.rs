//! `bulwark-demo`: the whole system on its embedded defaults, on this machine only.
//!
//! Generates a cluster CA, starts three controllers on 127.0.0.1 with data in a temp dir,
//! forms a Raft cluster, writes records, kills the leader and shows the cluster carry on,
//! then stays up with the exact commands to explore it until Ctrl-C, and removes
//! everything on the way out.

use std::time::{Duration, Instant};

use anyhow::Result;
use bulwark_controller::client::ReadMode;
use bulwark_controller::ctl::print_status;
use bulwark_integration_tests::cluster::bin_dir;
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
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
