//! diff names the agents a change reaches and the rules it adds and removes; history and
//! rollback return the documents to an earlier revision in one step.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_controller::policy::read_paths;
use bulwark_integration_tests::Cluster;
use bulwark_integration_tests::agents::LabAgent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_history_and_rollback() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let pack = read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)?;
    let labels = |role: &str| [("role".to_owned(), role.to_owned())].into_iter().collect();
    let t_mod = admin.create_token(labels("modality"), Duration::from_secs(600), 2).await?.token;
    let t_pacs = admin.create_token(labels("pacs"), Duration::from_secs(600), 1).await?.token;
    LabAgent::enroll_at(&cluster, &cluster.addr(1), &t_mod, "ct-1", "198.18.10.5").await?;
    LabAgent::enroll_at(&cluster, &cluster.addr(1), &t_mod, "mr-1", "198.18.10.6").await?;
    LabAgent::enroll_at(&cluster, &cluster.addr(1), &t_pacs, "pacs-1", "198.18.20.5").await?;

    let v1 = admin.apply_policies(pack.clone(), false).await?.revision;
    // Both modalities and the PACS host get their state; the groups say how.
    let changed = |text: &str| vec![("change.yaml".to_owned(), text.to_owned())];
    let ssh_from_pacs = "apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {name: modalities-extra}\nspec:\n  selector: {role: modality}\n  priority: 150\n  firewall:\n    rules: [{action: allow, direction: inbound, peers: [pacs], services: [ssh]}]\n";
    let diff = admin.apply_policies(changed(ssh_from_pacs), true).await?;
    ensure!(diff.revision == 0 && diff.agents_affected == 2, "{diff:?}");
    let group = diff.impacts.first().context("no impact")?;
    let mut hosts = group.hostnames.clone();
    hosts.sort();
    ensure!(hosts == ["ct-1", "mr-1"], "{group:?}");
    ensure!(group.policies_changed == ["+modalities-extra"], "{group:?}");
    ensure!(
        group.rules_added
            == ["allow inbound from 198.18.20.5/32 on tcp/22 (policy modalities-extra)"],
        "{group:?}"
    );
    // It sets no defaults, so the modalities' deny-all egress stays.
    ensure!(group.rules_removed.is_empty() && group.sections_changed.is_empty(), "{group:?}");
    ensure!(
        admin.get_document("Policy/modalities-extra").await.is_err(),
        "the diff stored something"
    );

    let v2 = admin.apply_policies(changed(ssh_from_pacs), false).await?.revision;
    admin.delete_document("Policy/print-servers").await?;
    let history = admin.policy_history("Policy/modalities-extra").await?;
    ensure!(
        history.len() == 1 && history[0].revision == v2 && history[0].op == "put",
        "{history:?}"
    );

    // Back to the pack as first applied: the extra policy goes, the deleted one returns.
    let back = admin.policy_rollback(v1, false).await?;
    let mut changes: Vec<(String, String)> =
        back.changes.iter().map(|c| (c.key.clone(), c.change.clone())).collect();
    changes.sort();
    ensure!(
        changes
            == [
                ("Policy/modalities-extra".into(), "deleted".into()),
                ("Policy/print-servers".into(), "created".into())
            ],
        "{changes:?}"
    );
    let now: Vec<String> =
        admin.list_documents("").await?.documents.into_iter().map(|d| d.key).collect();
    ensure!(now.len() == 25 && !now.contains(&"Policy/modalities-extra".to_owned()), "{now:?}");
    let again = admin.policy_rollback(v1, false).await?;
    ensure!(again.revision == 0 && again.changes.is_empty(), "{again:?}");
    let err = admin.policy_rollback(back.revision + 100, false).await.unwrap_err();
    ensure!(err.message.contains("is in the future"), "{err}");
    Ok(())
}
