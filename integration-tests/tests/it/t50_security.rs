//! The security plane against a running 3-node cluster: who may call what (each refusal
//! with its exact code and message), bootstrap tokens, enrollment, renewal across a leader
//! change, revocation closing open streams, and the admin audit log.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::Client;
use bulwark_controller::pki::Role;
use bulwark_controller::tls::{TlsFiles, TlsMaterial};
use bulwark_integration_tests::agents::{LabAgent, enroll_raw, key_and_csr};
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use tonic::Code;

fn client_for(cluster: &Cluster, files: &TlsFiles, node: u64) -> Result<Client> {
    Ok(Client::new(&TlsMaterial::load(files)?, &[cluster.addr(node)], Duration::ZERO)?)
}

/// Asserts `result` failed with `code` and exactly `message`.
fn refused<T: std::fmt::Debug>(
    result: Result<T, bulwark_controller::client::ClientError>,
    code: Code,
    message: &str,
) -> Result<()> {
    let err = match result {
        Ok(v) => anyhow::bail!("expected {code:?} {message:?}, but the call was served: {v:?}"),
        Err(e) => e,
    };
    ensure!(
        err.code == code && err.message == message,
        "expected {code:?} {message:?}, got {:?} {:?}",
        err.code,
        err.message
    );
    Ok(())
}

/// An admin-shaped certificate for `name`, signed by the lab CA with odd parameters.
fn odd_admin(
    cluster: &Cluster,
    name: &str,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Result<TlsFiles> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::OrganizationalUnitName, "role:admin");
    params.subject_alt_names =
        vec![SanType::URI(format!("spiffe://bulwark/admin/{name}").try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    tweak(&mut params);
    let pem = cluster.pki.ca.sign(&params, &key)?;
    cluster.pki.write(&format!("odd-{name}"), &pem, &key.serialize_pem())
}

/// The call fails at the TLS layer (never reaches a handler) and node 1 logs why.
async fn refused_by_tls(cluster: &Cluster, files: &TlsFiles, why: &[&str]) -> Result<()> {
    let client = client_for(cluster, files, 1)?;
    let before = std::fs::read_to_string(&cluster.nodes[&1].log)?.len();
    let err = client
        .list_agents()
        .await
        .err()
        .context("a certificate the CA must refuse was accepted")?;
    ensure!(err.kind.is_none(), "refused by a handler, not by TLS: {err}");
    let log = eventually("the refusal in node 1's log", Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(&cluster.nodes[&1].log)?;
        let new = log[before..].to_owned();
        ensure!(new.contains("TLS handshake refused"), "not logged yet");
        Ok(new)
    })
    .await?;
    ensure!(why.iter().any(|w| log.contains(w)), "refused for another reason than {why:?}:\n{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_call_what() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let token = admin.create_token(Default::default(), Duration::from_secs(600), 5).await?.token;
    let agent = LabAgent::enroll(&cluster, &cluster.addr(2), &token, "mod-ct-1").await?;
    let other = LabAgent::enroll(&cluster, &cluster.addr(2), &token, "mod-ct-2").await?;
    let agent_client = client_for(&cluster, &agent.files, 1)?;
    let viewer = client_for(&cluster, &cluster.pki.admin_with_role("vera", Role::Viewer)?, 1)?;
    let operator = client_for(&cluster, &cluster.pki.admin_with_role("otto", Role::Operator)?, 1)?;
    let controller = client_for(&cluster, &cluster.nodes[&2].tls, 1)?;
    let ca = std::fs::read(&cluster.admin.ca)?;
    let anonymous = Client::anonymous(&ca, &[cluster.addr(1)], Duration::ZERO)?;

    // Accepted.
    ensure!(admin.list_agents().await?.agents.len() == 2);
    viewer.list_tokens().await?;
    operator.create_token(Default::default(), Duration::from_secs(60), 1).await?;
    controller.status().await?;
    let mut stream = agent_client.stream_desired_state(0).await?;
    ensure!(stream.message().await?.is_some(), "no desired state for the agent");

    // No client certificate.
    refused(
        anonymous.list_agents().await,
        Code::Unauthenticated,
        "/bulwark.v1.FleetService/ListAgents requires a client certificate",
    )?;
    // An agent on an admin service; an agent asking for another agent's state.
    refused(
        agent_client.list_agents().await,
        Code::PermissionDenied,
        &format!(
            "agent/{} may not call /bulwark.v1.FleetService/ListAgents (admins with role viewer or higher)",
            agent.id
        ),
    )?;
    let mut raw = pb::agent_service_client::AgentServiceClient::new(
        tonic::transport::Channel::from_shared(format!("https://{}", cluster.addr(1)))?
            .tls_config(TlsMaterial::load(&agent.files)?.client_config())?
            .connect()
            .await?,
    );
    let status = raw
        .stream_desired_state(pb::DesiredStateRequest {
            have_revision: 0,
            agent_id: other.id.clone(),
        })
        .await
        .unwrap_err();
    ensure!(status.code() == Code::PermissionDenied);
    ensure!(
        status.message()
            == format!("agent {} may not read the desired state of agent {}", agent.id, other.id)
    );
    // A viewer mutating; an operator on cluster operations.
    refused(
        viewer.create_token(Default::default(), Duration::from_secs(60), 1).await,
        Code::PermissionDenied,
        "admin vera has role viewer; /bulwark.v1.SecurityService/CreateToken needs operator or higher",
    )?;
    refused(
        operator.add_learner(9, "127.0.0.1:9").await,
        Code::PermissionDenied,
        "admin otto has role operator; /bulwark.v1.ClusterService/AddLearner needs admin or higher",
    )?;
    // A controller certificate used outside the peer protocol.
    refused(
        controller.list_agents().await,
        Code::PermissionDenied,
        "controller/2 may not call /bulwark.v1.FleetService/ListAgents (admins with role viewer or higher)",
    )?;
    // An admin may call RaftService? No: peers only.
    let mut raft = pb::raft_service_client::RaftServiceClient::new(
        tonic::transport::Channel::from_shared(format!("https://{}", cluster.addr(1)))?
            .tls_config(TlsMaterial::load(&cluster.admin)?.client_config())?
            .connect()
            .await?,
    );
    let status = raft.read_index(pb::ReadIndexRequest {}).await.unwrap_err();
    ensure!(status.code() == Code::PermissionDenied, "{status:?}");
    ensure!(
        status.message()
            == "admin/lab may not call /bulwark.v1.RaftService/ReadIndex (controllers only)"
    );

    // Roles live in the cluster: raising vera to operator takes effect at once.
    admin.set_admin_role("vera", "operator").await?;
    viewer.create_token(Default::default(), Duration::from_secs(60), 1).await?;

    // Certificates the TLS layer refuses.
    let now = time::OffsetDateTime::now_utc();
    let expired = odd_admin(&cluster, "expired", |p| {
        p.not_before = now - time::Duration::days(10);
        p.not_after = now - time::Duration::days(1);
    })?;
    refused_by_tls(&cluster, &expired, &["invalid peer certificate: certificate expired"]).await?;
    let early = odd_admin(&cluster, "early", |p| {
        p.not_before = now + time::Duration::days(1);
        p.not_after = now + time::Duration::days(10);
    })?;
    refused_by_tls(&cluster, &early, &["invalid peer certificate: certificate not valid yet"])
        .await?;
    let server_only = odd_admin(&cluster, "server-only", |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    })?;
    refused_by_tls(
        &cluster,
        &server_only,
        &["certificate does not allow extended key usage for client authentication"],
    )
    .await?;
    let stranger_ca =
        bulwark_integration_tests::certs::TestPki::create(&cluster.dir().join("stranger"))?;
    // Trusting our CA, presenting the other CA's certificate.
    let mallory = TlsFiles { ca: cluster.admin.ca.clone(), ..stranger_ca.admin("mallory")? };
    refused_by_tls(
        &cluster,
        &mallory,
        &["invalid peer certificate: UnknownIssuer", "invalid peer certificate: BadSignature"],
    )
    .await?;
    let self_key = KeyPair::generate()?;
    let mut self_params = CertificateParams::new(Vec::<String>::new())?;
    self_params.subject_alt_names = vec![SanType::URI("spiffe://bulwark/admin/selfie".try_into()?)];
    let self_signed = self_params.self_signed(&self_key)?;
    let selfie = cluster.pki.write("selfie", &self_signed.pem(), &self_key.serialize_pem())?;
    refused_by_tls(
        &cluster,
        &selfie,
        &["invalid peer certificate: UnknownIssuer", "invalid peer certificate: BadSignature"],
    )
    .await?;

    // A revoked agent: refused on every node.
    admin.revoke_agent(&agent.id, "stolen laptop").await?;
    for id in [1, 2, 3] {
        let c = client_for(&cluster, &agent.files, id)?;
        refused(
            c.stream_desired_state(0).await.map(|_| ()),
            Code::PermissionDenied,
            &format!("agent {} is revoked: stolen laptop", agent.id),
        )?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_fail_closed_and_count_uses_exactly() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let labels =
        [("role", "modality"), ("site", "north")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let created = admin.create_token(labels.clone().into(), Duration::from_secs(600), 5).await?;
    ensure!(
        created.token.starts_with("bwt_") && created.token.len() == 68,
        "token {:?}",
        created.token
    );
    let info = created.info.context("no token info")?;
    // Only the hash is stored: the token appears nowhere in the store or the logs.
    let raw =
        admin.list("bulwark.token", bulwark_controller::client::ReadMode::Linearizable).await?;
    ensure!(
        raw.records
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.value).contains(&created.token[4..]))
    );

    // 20 hosts enroll at once with a 5-use token, through all three nodes: exactly 5 succeed.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let endpoint = cluster.addr(i % 3 + 1);
        let token = created.token.clone();
        let (_, csr) = key_and_csr()?;
        let lab = cluster.admin.ca.clone();
        let ca = std::fs::read(&lab)?;
        tasks.spawn(async move {
            let client = Client::anonymous(&ca, &[endpoint], Duration::ZERO)?;
            let req = pb::EnrollRequest {
                token,
                csr_pem: csr,
                facts: Some(pb::HostFacts { hostname: format!("ws-{i}"), ..Default::default() }),
                ..Default::default()
            };
            anyhow::Ok(client.enroll(req).await)
        });
    }
    let mut ok = Vec::new();
    let mut refusals = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r?? {
            Ok(reply) => ok.push(reply),
            Err(e) => refusals.push(e),
        }
    }
    ensure!(ok.len() == 5, "{} enrollments succeeded: {refusals:?}", ok.len());
    let used_up = format!("the bootstrap token {} has no uses left", info.id);
    for e in &refusals {
        ensure!(e.code == Code::Unauthenticated && e.message == used_up, "{e}");
    }
    // Labels land on the enrolled agents.
    let agents = admin.list_agents().await?.agents;
    ensure!(agents.len() == 5, "{} agents", agents.len());
    for a in &agents {
        ensure!(a.labels == labels.clone().into(), "labels {:?}", a.labels);
        ensure!(a.token_id == info.id && a.hostname.starts_with("ws-"));
    }

    // Unknown, empty, revoked and expired tokens fail closed with their reason.
    let (_, csr) = key_and_csr()?;
    let ep = cluster.addr(1);
    refused(
        enroll_raw(&cluster, &ep, "bwt_0000", "h", &csr, "").await,
        Code::Unauthenticated,
        "the bootstrap token is not valid (unknown to this cluster)",
    )?;
    refused(
        enroll_raw(&cluster, &ep, "", "h", &csr, "").await,
        Code::Unauthenticated,
        "no bootstrap token was given",
    )?;
    let revoked = admin.create_token(Default::default(), Duration::from_secs(600), 3).await?;
    let revoked_id = revoked.info.map(|i| i.id).unwrap_or_default();
    admin.revoke_token(&revoked_id).await?;
    refused(
        enroll_raw(&cluster, &ep, &revoked.token, "h", &csr, "").await,
        Code::Unauthenticated,
        &format!("the bootstrap token {revoked_id} has been revoked"),
    )?;
    let short = admin.create_token(Default::default(), Duration::from_secs(1), 3).await?;
    let short_id = short.info.map(|i| i.id).unwrap_or_default();
    let started = Instant::now();
    eventually("the short token to expire", Duration::from_secs(5), || async {
        ensure!(started.elapsed() > Duration::from_millis(1100), "not yet");
        Ok(())
    })
    .await?;
    refused(
        enroll_raw(&cluster, &ep, &short.token, "h", &csr, "").await,
        Code::Unauthenticated,
        &format!("the bootstrap token {short_id} has expired"),
    )?;
    // A CSR that is not one does not use up a token.
    let one = admin.create_token(Default::default(), Duration::from_secs(600), 1).await?;
    let err = enroll_raw(&cluster, &ep, &one.token, "h", "garbage", "").await.unwrap_err();
    ensure!(
        err.code == Code::InvalidArgument
            && err.message.contains("not a valid certificate request"),
        "{err}"
    );
    LabAgent::enroll(&cluster, &ep, &one.token, "after-bad-csr").await?;

    // Re-enrolling an existing id needs an operator's permit, once.
    let agent_id = agents[0].id.clone();
    let again = admin.create_token(Default::default(), Duration::from_secs(600), 5).await?;
    let err = enroll_raw(&cluster, &ep, &again.token, "h", &csr, &agent_id).await.unwrap_err();
    ensure!(
        err.message
            == format!(
                "agent {agent_id} is already enrolled; an operator must run `bulwarkctl agent permit-reenroll {agent_id}` first"
            ),
        "{err}"
    );
    admin.permit_reenroll(&agent_id).await?;
    let reply = enroll_raw(&cluster, &ep, &again.token, "h", &csr, &agent_id).await?;
    ensure!(reply.agent_id == agent_id);
    ensure!(
        enroll_raw(&cluster, &ep, &again.token, "h", &csr, &agent_id).await.is_err(),
        "the permit was reusable"
    );

    // No secret in any node's log.
    for id in [1, 2, 3] {
        let log = std::fs::read_to_string(&cluster.nodes[&id].log)?;
        ensure!(!log.contains(&created.token[4..]), "node {id} logged a token");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_survives_a_leader_change_and_revocation_closes_open_streams() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let token = admin.create_token(Default::default(), Duration::from_secs(600), 1).await?.token;
    let mut agent = LabAgent::enroll(&cluster, &cluster.addr(1), &token, "pacs-1").await?;

    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    cluster.kill(leader)?;
    let client = agent.client(&cluster)?;
    let renewed = agent.renew(&cluster, &client).await?;
    ensure!(renewed.not_after > 0);
    // The renewed certificate is this agent's and works.
    let client = agent.client(&cluster)?;
    client.stream_desired_state(0).await?;
    cluster.restart(leader)?;

    // An open stream on a follower closes within a second of the revocation.
    let follower = eventually("a follower", Duration::from_secs(10), || async {
        let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
        Ok([1, 2, 3].into_iter().find(|&id| id != leader).unwrap_or(1))
    })
    .await?;
    cluster.wait_ready(follower).await?;
    let mut stream = client_for(&cluster, &agent.files, follower)?.stream_desired_state(0).await?;
    stream.message().await?;
    let revoked_at = Instant::now();
    admin.revoke_agent(&agent.id, "decommissioned").await?;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .context("the stream stayed open after the revocation")?;
    let took = revoked_at.elapsed();
    let status = ended.err().context("the stream ended without an error")?;
    ensure!(status.code() == Code::PermissionDenied, "{status:?}");
    ensure!(status.message() == format!("agent {} is revoked: decommissioned", agent.id));
    ensure!(took < Duration::from_secs(1), "closed {took:?} after the revocation");

    // The audit log names who did it, what, from where, and the result.
    let entries = admin
        .list_audit(pb::ListAuditRequest {
            since: 0,
            who: "lab".into(),
            method: "RevokeAgent".into(),
        })
        .await?;
    let entry = entries.last().context("no audit entry for the revocation")?;
    ensure!(entry.who == "admin/lab" && entry.code == "Ok", "{entry:?}");
    ensure!(
        entry.target == format!("agent {}", agent.id) && entry.peer.starts_with("127.0.0.1:"),
        "{entry:?}"
    );
    let tokens = admin
        .list_audit(pb::ListAuditRequest {
            since: 0,
            who: String::new(),
            method: "CreateToken".into(),
        })
        .await?;
    ensure!(tokens.len() == 1 && tokens[0].target.starts_with("token "), "{tokens:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_is_rate_limited_per_source_address() -> Result<()> {
    let options = ClusterOptions {
        extra_args: vec!["--enroll-rate".into(), "3".into()],
        ..Default::default()
    };
    let cluster = Cluster::start_with(1, options).await?;
    let (_, csr) = key_and_csr()?;
    let ep = cluster.addr(1);
    for _ in 0..3 {
        let err = enroll_raw(&cluster, &ep, "bwt_unknown", "h", &csr, "").await.unwrap_err();
        ensure!(err.code == Code::Unauthenticated, "{err}");
    }
    refused(
        enroll_raw(&cluster, &ep, "bwt_unknown", "h", &csr, "").await,
        Code::ResourceExhausted,
        "too many enrollments from 127.0.0.1; retry in a minute",
    )?;
    Ok(())
}
