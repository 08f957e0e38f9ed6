//! Staged rollouts on a real 3-node cluster with lab agents streaming from different nodes
//! and reporting like agents: a canary rollout that advances, one that halts (and is
//! aborted), and incremental resolution (a membership change reaches only the agents that
//! refer to the segment).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::Client;
use bulwark_controller::policy::read_paths;
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::{Cluster, eventually};
use bulwark_proto::v1 as pb;

type Stream = tonic::Streaming<pb::DesiredState>;

async fn next(stream: &mut Stream) -> Result<pb::DesiredState> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("no desired state within 10 s")??
        .context("the stream ended")
}

/// Nothing arrives on `stream` for `quiet`.
async fn nothing(stream: &mut Stream, quiet: Duration) -> Result<()> {
    match tokio::time::timeout(quiet, stream.message()).await {
        Err(_) => Ok(()),
        Ok(got) => anyhow::bail!("expected nothing, got {got:?}"),
    }
}

const AUDIT: &str = "apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {name: modalities-audit}\nspec:\n  selector: {role: modality}\n  priority: 500\n  mode: audit\n  passwords: {profile: nist-800-63b}\n";

fn pack() -> Result<Vec<(String, String)>> {
    read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)
}

/// A cluster with the pack released, and two modalities streaming (ring=canary from node
/// 2, ring=main from node 3) with their first state.
struct Setup {
    cluster: Cluster,
    admin: Client,
    canary: (LabAgent, Client, Stream, pb::DesiredState),
    other: (LabAgent, Client, Stream, pb::DesiredState),
}

async fn setup() -> Result<Setup> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;
    let labels = |ring: &str| {
        [("role".to_owned(), "modality".to_owned()), ("ring".to_owned(), ring.to_owned())]
            .into_iter()
            .collect()
    };
    let mut enrolled = Vec::new();
    for (ring, host, addr, node) in
        [("canary", "ct-1", "198.18.10.5", 2), ("main", "ct-2", "198.18.10.6", 3)]
    {
        let token = admin.create_token(labels(ring), Duration::from_secs(600), 1).await?.token;
        let agent = LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, host, addr).await?;
        enrolled.push((agent, node));
    }
    // Every node has applied both enrollments (a linearizable read) before the streams.
    for node in [2, 3] {
        cluster.node_client(node)?.list_agents().await?;
    }
    let mut agents = Vec::new();
    for (agent, node) in enrolled {
        let client = agent.client_at(&cluster, node)?;
        let mut stream = client.stream_desired_state(0).await?;
        let first = next(&mut stream).await?;
        ensure!(first.policies == ["modalities", "baseline"], "{first:?}");
        agents.push((agent, client, stream, first));
    }
    let other = agents.pop().context("two agents")?;
    let canary = agents.pop().context("two agents")?;
    Ok(Setup { cluster, admin, canary, other })
}

fn report(revision: u64, state: pb::EnforcerState, reason: &str) -> pb::AgentReport {
    let enforcer = |name: &str| pb::EnforcerStatus {
        enforcer: name.into(),
        revision,
        state: state.into(),
        reason: reason.into(),
        ..Default::default()
    };
    pb::AgentReport {
        desired_revision: revision,
        enforcers: vec![enforcer("firewall"), enforcer("passwords")],
        agent_version: "lab".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_rollout_advances_when_the_canaries_confirm() -> Result<()> {
    let Setup { cluster, admin, canary, other } = setup().await?;
    let (ct1, ct1_client, mut ct1_stream, ct1_first) = canary;
    let (_ct2, _ct2_client, mut ct2_stream, ct2_first) = other;

    // Staged: stored, but nobody gets it.
    let staged =
        admin.apply_policies_with(vec![("audit.yaml".into(), AUDIT.into())], false, true).await?;
    ensure!(staged.revision > 0 && staged.agents_affected == 2, "{staged:?}");
    nothing(&mut ct1_stream, Duration::from_secs(2)).await?;
    let status = admin.rollout("status").await?;
    ensure!(status.phase == "none" && status.stored_revision == staged.revision, "{status:?}");
    ensure!(status.released_revision < staged.revision, "{status:?}");

    // The canary gets it first, with a newer revision; the other modality gets nothing.
    let started =
        admin.rollout_start(staged.revision, "ring=canary", 0, Duration::from_secs(60)).await?;
    ensure!(started.phase == "running" && started.canaries.len() == 1, "{started:?}");
    ensure!(started.canaries[0].agent_id == ct1.id, "{started:?}");
    let canary_state = next(&mut ct1_stream).await?;
    ensure!(canary_state.revision > ct1_first.revision, "{canary_state:?}");
    ensure!(
        canary_state.policies == ["modalities-audit", "modalities", "baseline"],
        "{canary_state:?}"
    );
    nothing(&mut ct2_stream, Duration::from_secs(2)).await?;
    let pending = cluster.node_client(3)?.rollout("status").await?;
    ensure!(pending.canaries[0].state == "pending", "{pending:?}");

    // The canary applied it, compliant: the rollout completes and everyone gets it.
    ct1_client.report(report(canary_state.revision, pb::EnforcerState::Compliant, "")).await?;
    let done = eventually("the rollout completes", Duration::from_secs(15), || async {
        let s = admin.rollout("status").await?;
        ensure!(s.phase == "completed", "{s:?}");
        Ok(s)
    })
    .await?;
    ensure!(done.released_revision == staged.revision, "{done:?}");
    let released = next(&mut ct2_stream).await?;
    ensure!(released.revision > ct2_first.revision, "{released:?}");
    ensure!(released.policies == ["modalities-audit", "modalities", "baseline"], "{released:?}");

    // Every rollout call is in the audit log.
    let audit = admin.list_audit(Default::default()).await?;
    ensure!(audit.iter().any(|e| e.method.ends_with("RolloutService/Start")), "{audit:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failure_halts_the_rollout_and_abort_keeps_the_released_state() -> Result<()> {
    let Setup { cluster: _cluster, admin, canary, other } = setup().await?;
    let (_ct1, ct1_client, mut ct1_stream, ct1_first) = canary;
    let (_ct2, _ct2_client, mut ct2_stream, _) = other;
    let staged =
        admin.apply_policies_with(vec![("audit.yaml".into(), AUDIT.into())], false, true).await?;
    // 50 percent of two agents, by a stable hash; ct-1 is named explicitly here.
    admin.rollout_start(staged.revision, "ring=canary", 0, Duration::from_secs(60)).await?;
    let canary_state = next(&mut ct1_stream).await?;
    ensure!(canary_state.policies[0] == "modalities-audit", "{canary_state:?}");

    // The canary fails to apply it: the rollout halts, and says why.
    let failed = report(canary_state.revision, pb::EnforcerState::Failed, "nft: syntax error");
    ct1_client.report(failed).await?;
    let halted = eventually("the rollout halts", Duration::from_secs(15), || async {
        let s = admin.rollout("status").await?;
        ensure!(s.phase == "halted", "{s:?}");
        Ok(s)
    })
    .await?;
    ensure!(halted.reason.contains("nft: syntax error"), "{halted:?}");
    ensure!(halted.canaries[0].state.starts_with("failed"), "{halted:?}");
    // While a rollout is active, an unstaged apply is refused.
    let changed = AUDIT.replace("priority: 500", "priority: 400");
    let err = admin.apply_policies(vec![("audit.yaml".into(), changed)], false).await;
    ensure!(
        err.as_ref().is_err_and(|e| e.to_string().contains("abort the rollout")),
        "an unstaged apply during a rollout: {err:?}"
    );
    nothing(&mut ct2_stream, Duration::from_secs(2)).await?;

    // Abort: the canary goes back to the released state (with a newer revision); the other
    // modality never saw the change.
    let aborted = admin.rollout("abort").await?;
    ensure!(aborted.phase == "aborted", "{aborted:?}");
    let back = next(&mut ct1_stream).await?;
    ensure!(back.revision > canary_state.revision, "{back:?}");
    ensure!(back.policies == ct1_first.policies, "{back:?}");
    nothing(&mut ct2_stream, Duration::from_secs(2)).await?;

    // Canaries that never confirm: the rollout halts when the wait is over.
    admin.rollout_start(staged.revision, "", 50, Duration::from_secs(2)).await?;
    let timed_out = eventually("the rollout times out", Duration::from_secs(15), || async {
        let s = admin.rollout("status").await?;
        ensure!(s.phase == "halted", "{s:?}");
        Ok(s)
    })
    .await?;
    ensure!(timed_out.reason.contains("did not confirm within 2s"), "{timed_out:?}");
    admin.rollout("abort").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_reaches_only_the_agents_that_refer_to_the_segment() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;
    let labels = |role: &str| [("role".to_owned(), role.to_owned())].into_iter().collect();
    let mut enrolled = Vec::new();
    for (role, host, addr) in
        [("modality", "ct-1", "198.18.10.5"), ("print-server", "prn-1", "198.18.50.5")]
    {
        let token = admin.create_token(labels(role), Duration::from_secs(600), 1).await?.token;
        enrolled.push(LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, host, addr).await?);
    }
    cluster.node_client(2)?.list_agents().await?;
    let mut streams = Vec::new();
    for agent in &enrolled {
        let client = agent.client_at(&cluster, 2)?;
        let mut stream = client.stream_desired_state(0).await?;
        let first = next(&mut stream).await?;
        streams.push((client, stream, first));
    }
    // A PACS host enrols: the modality (its firewall names the PACS segment) gets a new
    // state; the print server, which does not refer to PACS, gets nothing.
    let token = admin.create_token(labels("pacs"), Duration::from_secs(600), 1).await?.token;
    LabAgent::enroll_at(&cluster, &cluster.addr(3), &token, "pacs-1", "198.18.20.5").await?;
    let (_, ct_stream, ct_first) = &mut streams[0];
    let ct_next = next(ct_stream).await?;
    ensure!(ct_next.revision > ct_first.revision, "{ct_next:?}");
    let fw = ct_next.firewall.as_ref().context("no firewall")?;
    ensure!(fw.rules.iter().any(|r| r.addresses.iter().any(|a| a == "198.18.20.5/32")), "{fw:?}");
    let (_, prn_stream, _) = &mut streams[1];
    nothing(prn_stream, Duration::from_secs(3)).await?;
    Ok(())
}
