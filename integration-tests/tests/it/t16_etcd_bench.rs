//! The etcd side of the side-by-side write benchmark (`bulwark-raftbench`): a real
//! one-node etcd with mutual TLS answers the driver's puts, and what it acknowledged reads
//! back. Skipped (with a message) only where etcd is not installed: benchmarks are not
//! run in CI, which does not install it (`apt-get install -y etcd-server`).

use std::time::Duration;

use anyhow::{Result, ensure};
use bulwark_controller::ctl::bench::{Put, put_round};
use bulwark_integration_tests::etcd::{ETCD_BIN, EtcdCluster, EtcdPut};

#[tokio::test]
async fn the_bench_driver_writes_to_a_real_etcd_and_the_writes_read_back() -> Result<()> {
    if !EtcdCluster::available() {
        eprintln!("SKIPPED: {ETCD_BIN} is missing (apt-get install -y etcd-server)");
        return Ok(());
    }
    let etcd = EtcdCluster::start(1).await?;
    let leader = etcd.leader(Duration::from_secs(10)).await?;
    let conns = vec![EtcdPut::new(etcd.channel(leader)?), EtcdPut::new(etcd.channel(leader)?)];

    conns[0].put("probe".into(), b"value-1".to_vec()).await?;
    ensure!(conns[1].get("probe").await? == Some(b"value-1".to_vec()));

    let round = put_round(&conns, 4, Duration::from_millis(300), 256, "t16/").await?;
    ensure!(round.writes > 0 && round.errors == 0, "{round:?}");
    ensure!(round.connections == 2 && round.p50_ms > 0.0 && round.p99_ms >= round.p50_ms);
    // The driver's keys are `{prefix}{clients}/{task}/{n}`: the first write of task 3 is there,
    // with a 256-byte value.
    let value = conns[0].get("t16/4/3/0").await?;
    ensure!(value.as_ref().is_some_and(|v| v.len() == 256), "{value:?}");
    Ok(())
}
