//! Agents stream their resolved desired state from any node; a new PACS host enrolling
//! updates the modalities' firewall with no admin action; a current agent gets nothing.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_controller::policy::read_paths;
use bulwark_integration_tests::Cluster;
use bulwark_integration_tests::agents::LabAgent;
use bulwark_proto::v1 as pb;

async fn next(stream: &mut tonic::Streaming<pb::DesiredState>) -> Result<pb::DesiredState> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .context("no desired state within 10 s")??
        .context("the stream ended")
}

fn pacs_rule(state: &pb::DesiredState) -> Result<&pb::FirewallRule> {
    let fw = state.firewall.as_ref().context("no firewall section")?;
    fw.rules
        .iter()
        .find(|r| {
            r.policy == "modalities"
                && r.direction == "outbound"
                && r.ports.iter().any(|p| p.first == 2762)
        })
        .context("no rule to the PACS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_state_follows_policies_and_segment_membership() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let pack = read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)?;
    admin.apply_policies(pack, false).await?;
    let labels = |role: &str| [("role".to_owned(), role.to_owned())].into_iter().collect();
    let modality_token =
        admin.create_token(labels("modality"), Duration::from_secs(600), 1).await?.token;
    let pacs_token = admin.create_token(labels("pacs"), Duration::from_secs(600), 2).await?.token;
    let ct =
        LabAgent::enroll_at(&cluster, &cluster.addr(1), &modality_token, "ct-1", "198.18.10.5")
            .await?;
    LabAgent::enroll_at(&cluster, &cluster.addr(2), &pacs_token, "pacs-1", "198.18.20.5").await?;

    // The modality streams from node 3 and gets its complete state.
    let ct_client = ct.client_at(&cluster, 3)?;
    let mut stream = ct_client.stream_desired_state(0).await?;
    let first = next(&mut stream).await?;
    ensure!(first.agent_id == ct.id && first.policies == ["modalities", "baseline"], "{first:?}");
    ensure!(first.wireless.as_ref().is_some_and(|w| w.radios_off), "{first:?}");
    ensure!(pacs_rule(&first)?.addresses == ["198.18.20.5/32"], "{:?}", pacs_rule(&first)?);

    // A second PACS host enrolls: the modality's state changes by itself.
    LabAgent::enroll_at(&cluster, &cluster.addr(1), &pacs_token, "pacs-2", "198.18.20.6").await?;
    let second = next(&mut stream).await?;
    ensure!(second.revision > first.revision);
    ensure!(pacs_rule(&second)?.addresses == ["198.18.20.5/32", "198.18.20.6/32"], "{second:?}");

    // Reconnecting with the current revision sends nothing until something changes.
    drop(stream);
    let mut again = ct_client.stream_desired_state(second.revision).await?;
    let update = "apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {name: modalities-audit}\nspec:\n  selector: {role: modality}\n  priority: 500\n  mode: audit\n  passwords: {profile: nist-800-63b}\n";
    let applied = admin.apply_policies(vec![("audit.yaml".into(), update.into())], false).await?;
    let third = next(&mut again).await?;
    ensure!(third.revision == applied.revision, "{} != {}", third.revision, applied.revision);
    ensure!(third.policies == ["modalities-audit", "modalities", "baseline"], "{third:?}");
    let pw = third.passwords.context("no passwords")?;
    ensure!(pw.profile == "nist-800-63b" && pw.audit && pw.policy == "modalities-audit", "{pw:?}");
    Ok(())
}
