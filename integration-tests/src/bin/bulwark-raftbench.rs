//! Bulwark's Raft beside etcd, in one run (`scripts/bench-raft-vs-etcd`): a three-node
//! Bulwark cluster and a three-node etcd (Debian's `etcd-server`), both on 127.0.0.1 with
//! temp data dirs, durable (fsync before acknowledging) and mutual TLS, driven by the same
//! loop (`bulwark_controller::ctl::bench::put_round`) over the same tonic/rustls client
//! stack: at each concurrency, new keys with fixed-size values to the leader for a fixed
//! time, first Bulwark then etcd. Prints the disk's fsync latency and one table per side.

use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_controller::ctl::bench::{
    PutArgs, RecordPut, Round, fsync_latency, put_round, run_prefix,
};
use bulwark_integration_tests::etcd::{EtcdCluster, EtcdPut};
use bulwark_integration_tests::{Cluster, ClusterOptions};
use clap::Parser;

/// Side-by-side durable write benchmark: Bulwark's controller cluster and etcd.
#[derive(Debug, Parser)]
#[command(name = "bulwark-raftbench")]
struct Args {
    /// The same flags as `bulwarkctl bench put`; each round runs on both sides.
    #[command(flatten)]
    put: PutArgs,
    /// fsync samples for the disk's latency.
    #[arg(long, default_value_t = 2000)]
    fsync_count: usize,
}

#[derive(serde::Serialize)]
struct Report {
    fsync_p50_ms: f64,
    fsync_p99_ms: f64,
    bulwark: Vec<Round>,
    etcd: Vec<Round>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let Args { put: args, fsync_count } = Args::parse();
    let cluster = Cluster::start_with(3, ClusterOptions { log: "warn", ..Default::default() })
        .await
        .context("starting the Bulwark cluster")?;
    let leader = cluster.addr(cluster.wait_for_leader(Duration::from_secs(10)).await?);
    let etcd = EtcdCluster::start(3).await.context("starting etcd")?;
    let etcd_leader = etcd.leader(Duration::from_secs(10)).await?;
    println!(
        "== {} cores; Bulwark leader {leader} (data in {}), etcd leader {} (data in {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cluster.dir().display(),
        etcd.members[etcd_leader].client_addr,
        etcd.dir().display()
    );
    let (fsync_p50_ms, fsync_p99_ms) = fsync_latency(cluster.dir(), fsync_count)?;
    println!(
        "fsync of 4 KiB (write + fdatasync), {} samples: p50 {fsync_p50_ms:.2} ms, p99 {fsync_p99_ms:.2} ms",
        fsync_count
    );
    println!(
        "{}-byte values, new keys, {:?} per round, up to {} connections, mutual TLS, to the leader",
        args.value_size, args.duration, args.connections
    );
    println!("side    {}", Round::HEADER);
    let prefix = run_prefix();
    let (mut bulwark, mut etcd_rounds) = (Vec::new(), Vec::new());
    for &c in &args.clients {
        let conns = args.connections.clamp(1, c.max(1));
        let b: Vec<RecordPut> = (0..conns)
            .map(|_| Ok(RecordPut(cluster.client()?.pinned(&leader))))
            .collect::<Result<_>>()?;
        let round = put_round(&b, c, args.duration, args.value_size, &prefix).await?;
        print_row("bulwark", &round);
        bulwark.push(round);
        drop(b);
        let e: Vec<EtcdPut> = (0..conns)
            .map(|_| Ok(EtcdPut::new(etcd.channel(etcd_leader)?)))
            .collect::<Result<_>>()?;
        let round = put_round(&e, c, args.duration, args.value_size, &prefix).await?;
        print_row("etcd", &round);
        etcd_rounds.push(round);
    }
    println!("targets (shown, not asserted):");
    let at = |rounds: &[Round], c: usize| rounds.iter().find(|r| r.clients == c).cloned();
    if let (Some(b), Some(e)) = (at(&bulwark, 256), at(&etcd_rounds, 256)) {
        println!(
            "  writes/s at 256 clients, Bulwark >= etcd: {:.0} vs {:.0} -> {}",
            b.writes_per_sec,
            e.writes_per_sec,
            verdict(b.writes_per_sec >= e.writes_per_sec)
        );
    }
    if let Some(b) = at(&bulwark, 1) {
        let limit = 2.0 * fsync_p99_ms + 1.0;
        println!(
            "  Bulwark single-client p99 <= 2 x fsync p99 + 1 ms: {:.2} ms vs {limit:.2} ms -> {}",
            b.p99_ms,
            verdict(b.p99_ms <= limit)
        );
    }
    if let Some(path) = &args.json {
        let report = Report { fsync_p50_ms, fsync_p99_ms, bulwark, etcd: etcd_rounds };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_row(side: &str, round: &Round) {
    println!("{side:<7} {}", round.row());
    if let Some(e) = &round.first_error {
        println!("        first error: {e}");
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}
