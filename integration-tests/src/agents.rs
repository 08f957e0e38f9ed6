//! Lab agents for the security tests: a key made here, a CSR, enrollment with a token
//! through the real `Enroll` call, and a client that presents the issued certificate.
//! (The real agent binary comes with the agent issue.)

use std::time::Duration;

use anyhow::Result;
use bulwark_controller::client::{Client, ClientError};
use bulwark_controller::tls::{TlsFiles, TlsMaterial};
use bulwark_proto::v1 as pb;
use rcgen::{CertificateParams, KeyPair};

use crate::Cluster;

/// A new private key and a CSR for it (PEM).
pub fn key_and_csr() -> Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::new(vec!["ignored.example".to_owned()])?
        .serialize_request(&key)?
        .pem()?;
    Ok((key, csr))
}

/// An enrolled lab agent.
pub struct LabAgent {
    pub id: String,
    pub labels: std::collections::HashMap<String, String>,
    pub files: TlsFiles,
    key: KeyPair,
}

/// Sends `Enroll` without a client certificate to `endpoint`.
pub async fn enroll_raw(
    cluster: &Cluster,
    endpoint: &str,
    token: &str,
    hostname: &str,
    csr_pem: &str,
    reenroll_id: &str,
) -> Result<pb::EnrollReply, ClientError> {
    enroll_raw_at(cluster, endpoint, token, hostname, "198.18.0.10", csr_pem, reenroll_id).await
}

/// [`enroll_raw`] reporting `address` as the host's address.
pub async fn enroll_raw_at(
    cluster: &Cluster,
    endpoint: &str,
    token: &str,
    hostname: &str,
    address: &str,
    csr_pem: &str,
    reenroll_id: &str,
) -> Result<pb::EnrollReply, ClientError> {
    let ca = std::fs::read(&cluster.admin.ca).unwrap_or_default();
    let client = Client::anonymous(&ca, &[endpoint.to_owned()], Duration::ZERO)?;
    let client = cluster.route_hints(client).map_err(|e| ClientError {
        endpoint: "-".into(),
        code: tonic::Code::Internal,
        kind: None,
        message: format!("lab: {e:#}"),
        actual_revision: None,
    })?;
    let facts = pb::HostFacts {
        hostname: hostname.to_owned(),
        os: "Debian GNU/Linux 12".into(),
        addresses: vec![address.into()],
        mac: "02:00:00:00:00:10".into(),
    };
    client
        .enroll(pb::EnrollRequest {
            token: token.to_owned(),
            csr_pem: csr_pem.to_owned(),
            facts: Some(facts),
            agent_id: reenroll_id.to_owned(),
            labels: Default::default(),
        })
        .await
}

impl LabAgent {
    /// Enrolls a new agent with `token` at `endpoint`.
    pub async fn enroll(
        cluster: &Cluster,
        endpoint: &str,
        token: &str,
        hostname: &str,
    ) -> Result<Self> {
        Self::enroll_at(cluster, endpoint, token, hostname, "198.18.0.10").await
    }

    /// Enrolls a new agent that reports `address` as its host address.
    pub async fn enroll_at(
        cluster: &Cluster,
        endpoint: &str,
        token: &str,
        hostname: &str,
        address: &str,
    ) -> Result<Self> {
        let (key, csr) = key_and_csr()?;
        let reply = enroll_raw_at(cluster, endpoint, token, hostname, address, &csr, "").await?;
        let files = cluster.pki.write(
            &format!("agent-{}", reply.agent_id),
            &reply.cert_pem,
            &key.serialize_pem(),
        )?;
        Ok(Self { id: reply.agent_id, labels: reply.labels, files, key })
    }

    /// A client presenting this agent's certificate to every node.
    pub fn client(&self, cluster: &Cluster) -> Result<Client> {
        let endpoints: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
        let tls = TlsMaterial::load(&self.files)?;
        cluster.route_hints(Client::new(&tls, &endpoints, Duration::from_secs(10))?)
    }

    /// A client presenting this agent's certificate to every node, trying node `first`
    /// first and then the next ids in turn (how a fleet spreads over the nodes), retrying
    /// for `retry_for`.
    pub fn client_from(
        &self,
        cluster: &Cluster,
        first: u64,
        retry_for: Duration,
    ) -> Result<Client> {
        let mut ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        let start = ids.iter().position(|&id| id == first).unwrap_or(0);
        ids.rotate_left(start);
        let endpoints: Vec<String> = ids.iter().map(|&id| cluster.addr(id)).collect();
        let tls = TlsMaterial::load(&self.files)?;
        cluster.route_hints(Client::new(&tls, &endpoints, retry_for)?)
    }

    /// A client presenting this agent's certificate to node `id` only.
    pub fn client_at(&self, cluster: &Cluster, id: u64) -> Result<Client> {
        let tls = TlsMaterial::load(&self.files)?;
        cluster.route_hints(Client::new(&tls, &[cluster.addr(id)], Duration::from_secs(5))?)
    }

    /// Renews through `client` with a CSR for the same key; installs the new certificate.
    pub async fn renew(&mut self, cluster: &Cluster, client: &Client) -> Result<pb::RenewReply> {
        let csr =
            CertificateParams::new(Vec::<String>::new())?.serialize_request(&self.key)?.pem()?;
        let reply = client.renew(&csr).await?;
        self.files = cluster.pki.write(
            &format!("agent-{}", self.id),
            &reply.cert_pem,
            &self.key.serialize_pem(),
        )?;
        Ok(reply)
    }
}
