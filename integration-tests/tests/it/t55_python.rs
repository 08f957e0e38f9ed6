//! An independent client: Python's grpcio, generated from the repository's .proto files,
//! lists agents with the admin certificate and is refused without one. The API is plain
//! gRPC that any language can use.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::Cluster;
use bulwark_integration_tests::agents::LabAgent;

fn python(args: &[String]) -> Result<(i32, serde_json::Value)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/list_agents.py");
    let out =
        Command::new("python3").arg(&script).args(args).output().context(
            "python3 is needed for this test (.ci/run installs grpcio and grpcio-tools)",
        )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !stderr.contains("No module named 'grpc"),
        "the Python gRPC packages are missing: pip install grpcio grpcio-tools (.ci/run does)\n{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().with_context(|| format!("no output; stderr:\n{stderr}"))?;
    Ok((out.status.code().unwrap_or(-1), serde_json::from_str(line)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_lists_agents_over_mutual_tls() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let token = cluster
        .client()?
        .create_token(Default::default(), Duration::from_secs(600), 2)
        .await?
        .token;
    let a = LabAgent::enroll(&cluster, &cluster.addr(1), &token, "reading-ws-1").await?;
    let b = LabAgent::enroll(&cluster, &cluster.addr(2), &token, "reading-ws-2").await?;
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let s = |p: &std::path::Path| p.display().to_string();
    let base = vec![s(&proto), cluster.addr(3), s(&cluster.admin.ca)];

    let mut with_cert = base.clone();
    with_cert.extend([s(&cluster.admin.cert), s(&cluster.admin.key)]);
    let (code, reply) = python(&with_cert)?;
    ensure!(code == 0, "{reply}");
    let mut ids: Vec<String> = reply["agents"]
        .as_array()
        .context("no agents array")?
        .iter()
        .filter_map(|a| a["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    ensure!(ids == want, "{reply}");

    let (code, reply) = python(&base)?;
    ensure!(code == 3, "{reply}");
    ensure!(reply["error"] == "UNAUTHENTICATED", "{reply}");
    ensure!(
        reply["message"] == "/bulwark.v1.FleetService/ListAgents requires a client certificate",
        "{reply}"
    );
    Ok(())
}
