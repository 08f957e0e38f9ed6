//! Applying policy documents to a running cluster: all at once at one revision, or nothing.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use bulwark_controller::policy::read_paths;
use bulwark_integration_tests::Cluster;
use tonic::Code;

fn pack() -> Result<Vec<(String, String)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    read_paths(&[dir]).map_err(anyhow::Error::msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_atomic_validated_and_referentially_safe() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let files = pack()?;

    // A dry run stores nothing.
    let dry = admin.apply_policies(files.clone(), true).await?;
    ensure!(
        dry.revision == 0
            && dry.changes.len() == 25
            && dry.changes.iter().all(|c| c.change == "created")
    );
    ensure!(admin.list_documents("").await?.documents.is_empty());

    // The pack: 25 documents in one revision.
    let before = admin.list("", bulwark_controller::client::ReadMode::Linearizable).await?.revision;
    let applied = admin.apply_policies(files.clone(), false).await?;
    ensure!(applied.revision == before + 1, "revision {} after {before}", applied.revision);
    let listed = admin.list_documents("").await?;
    ensure!(
        listed.documents.len() == 25
            && listed.documents.iter().all(|d| d.mod_revision == applied.revision)
    );
    ensure!(admin.list_documents("Policy").await?.documents.len() == 6);
    // Applying it again changes nothing.
    let again = admin.apply_policies(files.clone(), false).await?;
    ensure!(again.revision == 0 && again.changes.iter().all(|c| c.change == "unchanged"));

    // Ten documents, one of them invalid: nothing is stored.
    let mut text = String::new();
    for i in 0..9 {
        text.push_str(&format!(
            "apiVersion: bulwark.io/v1\nkind: Service\nmetadata: {{name: extra-{i}}}\nspec: {{ports: [{}/tcp]}}\n---\n",
            8000 + i
        ));
    }
    text.push_str("apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  firewall:\n    rules: [{action: allow, direction: inbound, peers: [nowhere]}]\n");
    let err = admin.apply_policies(vec![("ten.yaml".into(), text)], false).await.unwrap_err();
    ensure!(err.code == Code::InvalidArgument, "{err}");
    ensure!(
        err.message
            == "invalid request: 1 error; nothing was stored:\nten.yaml:51:57: spec.firewall.rules[0].peers[0]: unknown segment \"nowhere\"",
        "{err}"
    );
    ensure!(admin.list_documents("").await?.documents.len() == 25);

    // A later apply may refer to stored documents; an update is one more revision.
    let update = "apiVersion: bulwark.io/v1\nkind: Policy\nmetadata: {name: pacs-audit}\nspec:\n  selector: {role: pacs}\n  mode: audit\n  firewall:\n    rules: [{action: allow, direction: inbound, peers: [ris], services: [hl7-mllp]}]\n";
    let r = admin.apply_policies(vec![("audit.yaml".into(), update.into())], false).await?;
    ensure!(r.revision > applied.revision && r.changes[0].change == "created");
    let doc = admin.get_document("Policy/pacs-audit").await?;
    ensure!(doc.json.contains("\"Audit\""), "{}", doc.json);

    // A service still in use cannot be deleted; an unused one can.
    let err = admin.delete_document("Service/hl7-mllp").await.unwrap_err();
    ensure!(err.code == Code::FailedPrecondition, "{err}");
    ensure!(
        err.message
            == "Service/hl7-mllp is still used by Policy/modalities, Policy/pacs, Policy/pacs-audit, Policy/reading-workstations, Policy/ris",
        "{err}"
    );
    admin.delete_document("Policy/pacs-audit").await?;
    let err = admin.get_document("Policy/pacs-audit").await.unwrap_err();
    ensure!(err.code == Code::NotFound, "{err}");

    // Only operators and admins may apply.
    let viewer = cluster.pki.admin_with_role("vic", bulwark_controller::pki::Role::Viewer)?;
    let viewer = bulwark_controller::client::Client::new(
        &bulwark_controller::tls::TlsMaterial::load(&viewer)?,
        &[cluster.addr(1)],
        std::time::Duration::ZERO,
    )?;
    let err = viewer.apply_policies(files, false).await.unwrap_err();
    ensure!(err.code == Code::PermissionDenied, "{err}");
    ensure!(viewer.list_documents("Segment").await?.documents.len() == 8);
    Ok(())
}
