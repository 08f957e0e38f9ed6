//! The network lab itself: hosts in namespaces on one bridge, real TCP/UDP probes, firewall
//! rules inside a host, partitions, cleanup (also after a panic), and a controller cluster
//! whose nodes run in lab hosts. Needs root; fails saying so otherwise.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use bulwark_controller::client::ReadMode;
use bulwark_integration_tests::ctl::bulwarkctl_in;
use bulwark_integration_tests::netlab::{Outcome, UdpOutcome, netns_exists};
use bulwark_integration_tests::{Cluster, Lab, LabHost, eventually};

const SHORT: Duration = Duration::from_millis(500);

fn two_hosts() -> Result<(Lab, LabHost, LabHost)> {
    let lab = Lab::new()?;
    let a = lab.host("a", Ipv4Addr::new(198, 18, 1, 1))?;
    let b = lab.host("b", Ipv4Addr::new(198, 18, 1, 2))?;
    Ok((lab, a, b))
}

/// The machine's own ruleset, to show the lab never touches it.
fn own_ruleset() -> Result<String> {
    let out = std::process::Command::new("nft").args(["list", "ruleset"]).output()?;
    ensure!(out.status.success(), "nft list ruleset: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Drops `proto dport port` on input inside `host` (its own namespace's nftables).
fn drop_port(host: &LabHost, proto: &str, port: u16) -> Result<()> {
    host.exec(
        "nft",
        &[&format!(
            "add table inet labtest; \
             add chain inet labtest input {{ type filter hook input priority 0; }}; \
             add rule inet labtest input {proto} dport {port} drop"
        )],
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_is_accepted_refused_or_timed_out() -> Result<()> {
    let before = own_ruleset()?;
    let (lab, a, b) = two_hosts()?;
    let server = b.listen_tcp(8080)?;
    ensure!(server.addr.to_string() == "198.18.1.2:8080", "listening on {}", server.addr);

    let got = lab.connect_tcp(&a, b.addr(), 8080, SHORT).await?;
    ensure!(got == Outcome::Accepted, "to a listener: {got:?}");
    let got = lab.connect_tcp(&a, b.addr(), 8081, SHORT).await?;
    ensure!(got == Outcome::Refused, "to a closed port: {got:?}");

    drop_port(&b, "tcp", 8080)?;
    let started = Instant::now();
    let got = lab.connect_tcp(&a, b.addr(), 8080, SHORT).await?;
    ensure!(got == Outcome::TimedOut, "to a dropped port: {got:?}");
    ensure!(started.elapsed() < SHORT * 3, "the probe took {:?}", started.elapsed());
    // Other ports of b are still open to a.
    let got = lab.connect_tcp(&a, b.addr(), 8081, SHORT).await?;
    ensure!(got == Outcome::Refused, "to another port after the drop rule: {got:?}");

    // The host's own stack is untouched by b's rule, and the machine's ruleset too.
    ensure!(own_ruleset()? == before, "the machine's own nftables ruleset changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_echo_is_answered_refused_or_lost() -> Result<()> {
    let (lab, a, b) = two_hosts()?;
    let _echo = b.listen_udp(5353)?;

    let got = lab.send_udp(&a, b.addr(), 5353, b"ping", SHORT).await?;
    ensure!(got == UdpOutcome::Answered(b"ping".to_vec()), "to the echo server: {got:?}");
    let got = lab.send_udp(&a, b.addr(), 5354, b"ping", SHORT).await?;
    ensure!(got == UdpOutcome::Refused, "to a closed port: {got:?}");

    drop_port(&b, "udp", 5353)?;
    let got = lab.send_udp(&a, b.addr(), 5353, b"ping", SHORT).await?;
    ensure!(got == UdpOutcome::NoAnswer, "to a dropped port: {got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_cuts_a_host_off_until_healed() -> Result<()> {
    let (lab, a, b) = two_hosts()?;
    let c = lab.host("c", Ipv4Addr::new(198, 18, 1, 3))?;
    let _server = b.listen_tcp(22)?;
    ensure!(lab.connect_tcp(&a, b.addr(), 22, SHORT).await? == Outcome::Accepted);

    lab.partition(&b)?;
    let got = lab.connect_tcp(&a, b.addr(), 22, SHORT).await?;
    ensure!(got == Outcome::TimedOut, "to a partitioned host: {got:?}");
    // The rest of the lab still talks.
    let _c_server = c.listen_tcp(22)?;
    let got = lab.connect_tcp(&a, c.addr(), 22, SHORT).await?;
    ensure!(got == Outcome::Accepted, "between the others during the partition: {got:?}");
    // b is cut off from everyone, not only from a.
    let got = lab.connect_tcp(&b, c.addr(), 22, SHORT).await?;
    ensure!(matches!(got, Outcome::TimedOut | Outcome::Unreachable), "from b: {got:?}");

    lab.heal(&b)?;
    let healed = Instant::now();
    let r = eventually("b to be reachable again", Duration::from_secs(5), || {
        let (lab, a, b) = (lab.clone(), a.clone(), b.clone());
        async move {
            match lab.connect_tcp(&a, b.addr(), 22, SHORT).await? {
                Outcome::Accepted => Ok(()),
                other => bail!("{other:?}"),
            }
        }
    })
    .await;
    println!("reachable again {:?} after the heal", healed.elapsed());
    r
}

/// Waits until no namespace in `names` exists any more.
fn assert_gone(names: &[String]) -> Result<()> {
    ensure!(!names.is_empty(), "no namespaces were recorded");
    let left: Vec<&String> = names.iter().filter(|n| netns_exists(n)).collect();
    ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    Ok(())
}

#[test]
fn namespaces_and_processes_are_gone_after_drop_and_after_a_panic() -> Result<()> {
    let lab = Lab::new()?;
    let host = lab.host("h", Ipv4Addr::new(198, 18, 1, 1))?;
    let mut sleeper = host.command("sleep").arg("300").spawn()?;
    let _server = host.listen_tcp(80)?;
    let names = lab.namespaces();
    ensure!(names.len() == 2 && names.iter().all(|n| netns_exists(n)), "{names:?}");
    drop(lab);
    assert_gone(&names)?;
    // What still ran inside was killed with the lab.
    ensure!(sleeper.try_wait()?.is_some(), "a process in the lab outlived it");

    let recorded = std::sync::Mutex::new(Vec::new());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new().unwrap_or_else(|e| panic!("{e:#}"));
        lab.host("p", Ipv4Addr::new(198, 18, 1, 2)).unwrap_or_else(|e| panic!("{e:#}"));
        *recorded.lock().unwrap_or_else(|p| p.into_inner()) = lab.namespaces();
        panic!("a test failing halfway");
    }));
    ensure!(panicked.is_err(), "the closure did not panic");
    assert_gone(&recorded.lock().unwrap_or_else(|p| p.into_inner()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_in_the_lab_elects_writes_and_survives_a_partitioned_leader() -> Result<()> {
    let started = Instant::now();
    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 3).await?;
    let leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    println!("lab cluster: leader {leader} after {:?}", started.elapsed());
    ensure!(
        cluster.controller_urls() == ["198.18.0.1:7000", "198.18.0.2:7000", "198.18.0.3:7000"],
        "{:?}",
        cluster.controller_urls()
    );
    let status = cluster.status(leader).await?;
    let member_addrs: Vec<&str> = status.members.iter().map(|m| m.addr.as_str()).collect();
    ensure!(member_addrs.iter().all(|a| a.starts_with("198.18.0.")), "{member_addrs:?}");

    // A write through a follower's forward (the follower forwards it to the leader).
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap_or(1);
    let via_follower = cluster.node_client(follower)?;
    let reply = via_follower.put("policy", "lab/a", b"1".to_vec(), None).await?;
    ensure!(reply.revision == 1, "revision {}", reply.revision);
    // Membership calls are leader-only: the follower answers not-leader with the leader's
    // lab address, and the client follows that hint (from inside the leader's namespace).
    // (Counted by this process's connections in the leader's namespace: none before.)
    let leader_host = cluster.host(leader).ok_or_else(|| anyhow::anyhow!("no host"))?;
    let mine = || -> Result<usize> {
        let out = leader_host.exec("ss", &["-tnp", "state", "established"])?;
        let me = format!("pid={},", std::process::id());
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&me)).count())
    };
    eventually("earlier clients' connections to close", Duration::from_secs(5), || async {
        let n = mine()?;
        ensure!(n == 0, "{n} open");
        Ok(())
    })
    .await?;
    via_follower.promote(follower).await?;
    ensure!(mine()? > 0, "the leader hint was not followed inside the leader's namespace");

    // An agent host in the lab reaches the controllers at their lab addresses, and
    // bulwarkctl runs there as an operator on that host would.
    let ws = lab.host("ws1", Ipv4Addr::new(198, 18, 1, 10))?;
    let leader_ip =
        cluster.host(leader).map(|h| h.addr()).ok_or_else(|| anyhow::anyhow!("no host"))?;
    let got = lab.connect_tcp(&ws, leader_ip, 7000, SHORT).await?;
    ensure!(got == Outcome::Accepted, "agent host to the leader: {got:?}");
    let urls = cluster.controller_urls().join(",");
    let out =
        bulwarkctl_in(&ws, &urls, &cluster.admin, &["record", "get", "policy", "lab/a"]).await?;
    ensure!(out.ok && out.stdout.trim() == "1", "{}{}", out.stdout, out.stderr);

    // The leader is cut off: the other two elect a new one and take writes.
    let cut = Instant::now();
    let old = cluster.host(leader).cloned().ok_or_else(|| anyhow::anyhow!("no host"))?;
    lab.partition(&old)?;
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != leader).collect();
    let new_leader = eventually("a new leader among the others", Duration::from_secs(10), || {
        let cluster = &cluster;
        let others = others.clone();
        async move {
            let mut seen = Vec::new();
            for id in &others {
                seen.push(cluster.status(*id).await?.leader_id);
            }
            match seen.as_slice() {
                [a, b] if a == b && *a != 0 && *a != leader => Ok(*a),
                _ => bail!("leaders seen by {others:?}: {seen:?}"),
            }
        }
    })
    .await?;
    println!("lab cluster: new leader {new_leader} {:?} after the partition", cut.elapsed());
    let reply = cluster.node_client(others[0])?.put("policy", "lab/b", b"2".to_vec(), None).await?;
    ensure!(reply.revision == 2, "revision {}", reply.revision);
    // bulwarkctl from the agent host still works: the old leader is just unreachable.
    let out =
        bulwarkctl_in(&ws, &urls, &cluster.admin, &["record", "get", "policy", "lab/b"]).await?;
    ensure!(out.ok && out.stdout.trim() == "2", "{}{}", out.stdout, out.stderr);
    // The cut-off node, asked through its forward, has not seen the new write.
    let stale = cluster.node_client(leader)?.with_retry_for(Duration::ZERO);
    let got = stale.get("policy", "lab/b", ReadMode::Stale).await?;
    ensure!(got.record.is_none(), "the partitioned node saw a write made without it");

    // Healed, it rejoins: one leader again, and it catches up.
    lab.heal(&old)?;
    cluster.wait_for_leader(Duration::from_secs(10)).await?;
    eventually("the old leader to catch up", Duration::from_secs(10), || async {
        let got = stale.get("policy", "lab/b", ReadMode::Stale).await?;
        ensure!(got.record.is_some(), "not yet");
        Ok(())
    })
    .await?;
    println!("lab cluster test: {:?} in all", started.elapsed());
    Ok(())
}
