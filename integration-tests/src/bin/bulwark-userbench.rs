//! User alert latency (`scripts/bench-users`; as root): a one-node controller and a real
//! `bulwark-agent` in a network lab of the run's own, the agent on a temporary host root
//! with a small set of account files (never the machine's /etc). RUNS times the real
//! `useradd --prefix ROOT benchN` is timed from its return (the account files are renamed
//! into place) to the `user-added` event arriving on a `FollowEvents` stream, which
//! serves committed events only. Prints p50 / p99 / max (nearest rank) against the 500 ms
//! target.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bulwark_controller::ctl::bench::quantile_ms;
use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::wait::next_event_for_user;
use bulwark_integration_tests::{Cluster, ClusterOptions, Lab, eventually};
use bulwark_proto::v1 as pb;
use clap::Parser;

/// New-user alerts only: no firewall (nothing to enforce), no login monitor.
const POLICY: &str = "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: users-bench}
spec:
  selector: {}
  priority: 10
  users:
    alertNewUsers: true
    privilegedGroups: [sudo, adm, wheel]
    action: alert
";

/// useradd on an agent's host root -> user-added committed at the controller.
#[derive(Debug, Parser)]
#[command(name = "bulwark-userbench")]
struct Args {
    /// How many users to add, one at a time.
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        std::process::Command::new("useradd").arg("--help").output().is_ok(),
        "useradd is missing: install the package passwd"
    );
    let lab = Lab::new().context("the bench needs root for its network lab")?;
    let options = ClusterOptions { lab: Some(lab.clone()), log: "warn", ..Default::default() };
    let cluster = Cluster::start_with(1, options).await?;
    let admin = cluster.client()?;
    admin.apply_policies(vec![("users.yaml".into(), POLICY.into())], false).await?;
    let ws = lab.host("ws1", Ipv4Addr::new(198, 18, 50, 5))?;
    let labels: HashMap<String, String> = [("role".to_owned(), "workstation".to_owned())].into();
    let token = admin.create_token(labels, Duration::from_secs(600), 1).await?.token;
    let agent = AgentProc::start_on_host_with_accounts(&cluster, &ws, &token, &[]).await?;
    let root = agent.root.display().to_string();
    eventually("the users monitor running", Duration::from_secs(30), || async {
        let agents = admin.list_agents().await?.agents;
        let a = agents.iter().find(|a| a.id == agent.id).context("agent not listed")?;
        let m = a.enforcers.iter().find(|e| e.enforcer == "users");
        ensure!(m.is_some_and(|m| m.state == pb::EnforcerState::Compliant as i32), "{m:?}");
        Ok(())
    })
    .await?;

    let mut follow = admin
        .follow_events(pb::ListEventsRequest {
            kinds: vec!["user-added".into()],
            agent_id: agent.id.clone(),
            ..Default::default()
        })
        .await?;
    let mut latencies = Vec::with_capacity(args.runs);
    for i in 0..args.runs {
        let name = format!("bench{i}");
        let out =
            std::process::Command::new("useradd").args(["--prefix", &root, &name]).output()?;
        ensure!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
        let changed = Instant::now();
        next_event_for_user(&mut follow, &name).await?;
        latencies.push(changed.elapsed());
    }
    latencies.sort();
    println!(
        "useradd -> user-added committed at the controller (FollowEvents), n = {}: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 < 500 ms)",
        latencies.len(),
        quantile_ms(&latencies, 0.5),
        quantile_ms(&latencies, 0.99),
        quantile_ms(&latencies, 1.0)
    );
    Ok(())
}
