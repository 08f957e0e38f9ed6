//! Real agents in lab network namespaces enforce the radiology pack with real nft, against
//! a three-node controller cluster in the lab: segmentation on real traffic, a new PACS
//! reachable without an admin action, drift repaired, a foreign table untouched; the
//! failsafe keeps the controllers reachable, commit-confirmed rolls back a change that
//! loses them, and an agent restarted with every controller down enforces its cache.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::Client;
use bulwark_controller::policy::decode::Severity;
use bulwark_controller::policy::{load_sources, read_paths};
use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::http::get;
use bulwark_integration_tests::netlab::{Lab, LabHost, Outcome};
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;

const SHORT: Duration = Duration::from_millis(700);

fn pack() -> Result<Vec<(String, String)>> {
    read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)
}

async fn token(admin: &Client, role: &str) -> Result<String> {
    let labels: HashMap<String, String> = [("role".to_owned(), role.to_owned())].into();
    Ok(admin.create_token(labels, Duration::from_secs(600), 5).await?.token)
}

/// Every listed agent online, on its desired revision, with a compliant firewall.
async fn all_compliant(admin: &Client, ids: &[&str]) -> Result<()> {
    eventually("every agent online and compliant", Duration::from_secs(30), || async {
        let agents = admin.list_agents().await?.agents;
        for id in ids {
            let a = agents.iter().find(|a| a.id == *id).context("agent not listed")?;
            let fw = a.enforcers.iter().find(|e| e.enforcer == "firewall");
            ensure!(
                a.online
                    && a.applied_revision == a.desired_revision
                    && fw.is_some_and(|f| f.state == pb::EnforcerState::Compliant as i32),
                "{} ({}) not there yet: online {}, revision {}/{}, firewall {:?}",
                a.hostname,
                a.id,
                a.online,
                a.applied_revision,
                a.desired_revision,
                fw
            );
        }
        Ok(())
    })
    .await
}

async fn connects(lab: &Lab, from: &LabHost, to: &LabHost, port: u16) -> Result<Outcome> {
    lab.connect_tcp(from, to.addr(), port, SHORT).await
}

/// Breaks the table with `nft <what> table inet bulwark` and times the repair.
async fn break_and_time_repair(agent: &AgentProc, what: &str) -> Result<Duration> {
    let rules = agent.bulwark_rules();
    ensure!(rules > 0, "no rules to break");
    let started = Instant::now();
    agent.nft(&[what, "table", "inet", "bulwark"])?;
    eventually("the table repaired", Duration::from_secs(10), || async {
        ensure!(agent.bulwark_rules() == rules, "{} of {rules} rules", agent.bulwark_rules());
        Ok(())
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pack_segments_real_traffic_and_drift_is_repaired() -> Result<()> {
    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;

    let ct_host = lab.host("ct1", Ipv4Addr::new(198, 18, 10, 5))?;
    let pacs_host = lab.host("pacs1", Ipv4Addr::new(198, 18, 20, 5))?;
    let ws_host = lab.host("ws1", Ipv4Addr::new(198, 18, 30, 5))?;
    let jump_host = lab.host("jump1", Ipv4Addr::new(198, 18, 40, 5))?;
    // A table shaped like Docker's, there before the agent: it must survive every apply.
    ct_host.exec("nft", &["add", "table", "ip", "nat"])?;
    ct_host.exec(
        "nft",
        &["add chain ip nat POSTROUTING { type nat hook postrouting priority srcnat; policy accept; }"],
    )?;
    ct_host.exec("nft", &["add rule ip nat POSTROUTING oifname \"docker0\" masquerade"])?;
    let foreign = ct_host.exec("nft", &["list", "table", "ip", "nat"])?.stdout;

    let ct = AgentProc::start(&cluster, &ct_host, &token(&admin, "modality").await?, &[]).await?;
    let pacs = AgentProc::start(&cluster, &pacs_host, &token(&admin, "pacs").await?, &[]).await?;
    let ws =
        AgentProc::start(&cluster, &ws_host, &token(&admin, "reading-workstation").await?, &[])
            .await?;
    let jump =
        AgentProc::start(&cluster, &jump_host, &token(&admin, "jump-host").await?, &[]).await?;
    all_compliant(&admin, &[&ct.id, &pacs.id, &ws.id, &jump.id]).await?;

    // Segmentation on real traffic.
    let _dicom = pacs_host.listen_tcp(104)?;
    let _ssh = ct_host.listen_tcp(22)?;
    let _jetdirect = pacs_host.listen_tcp(9100)?;
    let ok = connects(&lab, &ct_host, &pacs_host, 104).await?;
    ensure!(ok == Outcome::Accepted, "modality -> PACS:104 (DICOM): {ok:?}");
    let ssh = connects(&lab, &ws_host, &ct_host, 22).await?;
    ensure!(ssh == Outcome::TimedOut, "workstation -> modality:22 must be dropped: {ssh:?}");
    let admin_ssh = connects(&lab, &jump_host, &ct_host, 22).await?;
    ensure!(admin_ssh == Outcome::Accepted, "jump host -> modality:22 (failsafe): {admin_ssh:?}");
    let print = connects(&lab, &ct_host, &pacs_host, 9100).await?;
    ensure!(print != Outcome::Accepted, "modality -> :9100 must be dropped on output: {print:?}");
    let counters = ct.nft(&["list", "chain", "inet", "bulwark", "output"])?;
    ensure!(
        counters
            .lines()
            .any(|l| l.contains("9100") && l.contains("drop") && !l.contains("packets 0 ")),
        "the print-port drop rule counted nothing:\n{counters}"
    );

    // A second PACS enrolls: the modality reaches it with no admin action.
    let pacs2_host = lab.host("pacs2", Ipv4Addr::new(198, 18, 20, 6))?;
    let _dicom2 = pacs2_host.listen_tcp(104)?;
    let before = connects(&lab, &ct_host, &pacs2_host, 104).await?;
    ensure!(before != Outcome::Accepted, "pacs2 reachable before it enrolled");
    let pacs2 = AgentProc::start(&cluster, &pacs2_host, &token(&admin, "pacs").await?, &[]).await?;
    eventually("the modality reaches the new PACS", Duration::from_secs(20), || async {
        let o = connects(&lab, &ct_host, &pacs2_host, 104).await?;
        ensure!(o == Outcome::Accepted, "{o:?}");
        Ok(())
    })
    .await?;
    all_compliant(&admin, &[&ct.id, &pacs2.id]).await?;

    // Drift: a flushed table and a deleted table come back by themselves.
    let flush = break_and_time_repair(&ct, "flush").await?;
    let delete = break_and_time_repair(&ct, "delete").await?;
    eprintln!("drift repaired: flushed table in {flush:?}, deleted table in {delete:?}");
    let shown = eventually("drift events reported", Duration::from_secs(10), || async {
        let shown = admin.show_agent(&ct.id, 10).await?;
        let repaired = shown.events.iter().filter(|e| e.kind == "drift-repaired").count();
        ensure!(repaired >= 2, "{} drift-repaired events", repaired);
        Ok(shown)
    })
    .await?;
    ensure!(
        shown.events.iter().any(|e| e.before.contains("table inet bulwark missing")),
        "{:?}",
        shown.events
    );
    // The agent's own /metrics (127.0.0.1:9464 in its namespace) counts the repairs.
    let metrics = lab.forward(&ct_host, "127.0.0.1:9464".parse()?)?;
    let (code, text) = get(&metrics.to_string(), "/metrics").await?;
    ensure!(code == 200, "{code}");
    for expected in [
        "bulwark_agent_drift_repairs_total 2",
        "bulwark_agent_controller_connected 1",
        "bulwark_agent_spool_events",
    ] {
        ensure!(text.contains(expected), "agent /metrics lacks {expected:?}:\n{text}");
    }
    let after = ct_host.exec("nft", &["list", "table", "ip", "nat"])?.stdout;
    ensure!(after == foreign, "the foreign table changed:\n{}", String::from_utf8_lossy(&after));
    Ok(())
}

const CUT_CONTROLLERS: &str = "apiVersion: bulwark.io/v1
kind: Segment
metadata: {name: controllers}
spec: {cidrs: [198.18.0.0/24]}
---
apiVersion: bulwark.io/v1
kind: Service
metadata: {name: bulwark-api}
spec: {ports: [7000/tcp]}
---
apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: cut-controllers}
spec:
  selector: {role: modality}
  priority: 100
  firewall:
    rules:
      - {action: deny, direction: outbound, peers: [controllers], services: [bulwark-api]}
      - {action: deny, direction: inbound, peers: [controllers]}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_commit_confirmed_and_the_cached_state() -> Result<()> {
    let lab = Lab::new()?;
    let mut cluster = Cluster::start_in_lab(&lab, 3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;
    let ct_host = lab.host("ct1", Ipv4Addr::new(198, 18, 10, 5))?;
    let args = ["--confirm-within", "3s", "--check-every", "5s"];
    let mut ct =
        AgentProc::start(&cluster, &ct_host, &token(&admin, "modality").await?, &args).await?;
    all_compliant(&admin, &[&ct.id]).await?;

    // A policy that would cut the modality off its controllers: the failsafe keeps them.
    let mut sources = pack()?;
    sources.push(("cut.yaml".into(), CUT_CONTROLLERS.into()));
    let diagnostics = load_sources(&sources, &[]).diagnostics;
    ensure!(diagnostics.iter().all(|d| d.severity != Severity::Error), "{diagnostics:?}");
    admin.apply_policies(sources, false).await?;
    eventually("the cut-controllers rules in force", Duration::from_secs(20), || async {
        let rules = ct.nft(&["list", "chain", "inet", "bulwark", "output"])?;
        ensure!(rules.contains("cut-controllers"), "not yet");
        Ok(())
    })
    .await?;
    all_compliant(&admin, &[&ct.id]).await?;
    let c1 = cluster.host(1).context("no lab host for node 1")?;
    let fresh = lab.connect_tcp(&ct_host, c1.addr(), 7000, SHORT).await?;
    ensure!(fresh == Outcome::Accepted, "a new connection to a controller: {fresh:?}");

    // New connections to the controllers fail right after the next change (the stream that
    // delivers it stays up): commit-confirmed restores the confirmed ruleset.
    ct_host.exec(
        "nft",
        &["add table inet labcut; add chain inet labcut out { type filter hook output priority -10; }; add rule inet labcut out tcp dport 7000 ct state new drop"],
    )?;
    admin.delete_document("Policy/cut-controllers").await?;
    eventually("the rollback", Duration::from_secs(20), || async {
        let state = ct.firewall_state();
        ensure!(state.starts_with("failed"), "firewall {state}");
        Ok(())
    })
    .await?;
    let status = ct.status()?;
    let reason = status["enforcers"][0]["reason"].as_str().unwrap_or_default().to_owned();
    ensure!(reason.contains("rolled back") && reason.contains("no controller"), "{reason}");
    let rules = ct.nft(&["list", "chain", "inet", "bulwark", "output"])?;
    ensure!(rules.contains("cut-controllers"), "the confirmed ruleset is not back:\n{rules}");
    ct_host.exec("nft", &["delete", "table", "inet", "labcut"])?;
    eventually("the rollback reported", Duration::from_secs(20), || async {
        let shown = admin.show_agent(&ct.id, 20).await?;
        ensure!(
            shown.events.iter().any(|e| e.kind == "commit-confirmed-rollback"),
            "{:?}",
            shown.events
        );
        Ok(())
    })
    .await?;

    // Every controller down, the host rebooted (no table): the agent enforces its cache.
    ct.stop().await?;
    for id in 1..=3 {
        cluster.kill(id)?;
    }
    ct.nft(&["delete", "table", "inet", "bulwark"])?;
    ensure!(ct.bulwark_rules() == 0);
    ct.run()?;
    eventually("the cached policy enforced", Duration::from_secs(10), || async {
        ensure!(ct.bulwark_rules() > 0, "no rules yet");
        Ok(())
    })
    .await?;
    let ssh = lab
        .connect_tcp(&lab.host("ws1", Ipv4Addr::new(198, 18, 30, 5))?, ct_host.addr(), 22, SHORT)
        .await?;
    ensure!(ssh == Outcome::TimedOut, "inbound SSH from a workstation: {ssh:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_renews_its_certificate_and_stays_online() -> Result<()> {
    let lab = Lab::new()?;
    // Short-lived agent certificates: the agent renews on its own, two thirds into them.
    let options = ClusterOptions {
        lab: Some(lab.clone()),
        extra_args: vec!["--agent-cert-ttl".into(), "12s".into()],
        ..Default::default()
    };
    let cluster = Cluster::start_with(3, options).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;
    let ct_host = lab.host("ct1", Ipv4Addr::new(198, 18, 10, 5))?;
    let ct = AgentProc::start(&cluster, &ct_host, &token(&admin, "modality").await?, &[]).await?;
    all_compliant(&admin, &[&ct.id]).await?;
    let first_expiry = ct.cert_not_after()?;
    eventually("the certificate renewed", Duration::from_secs(20), || async {
        let now = ct.cert_not_after()?;
        ensure!(now > first_expiry, "still the certificate expiring at {first_expiry}");
        Ok(())
    })
    .await?;
    // Past the first certificate's expiry, the agent is online with the new one.
    tokio::time::sleep(Duration::from_secs(8)).await;
    all_compliant(&admin, &[&ct.id]).await?;
    Ok(())
}
