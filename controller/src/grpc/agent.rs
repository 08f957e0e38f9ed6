//! AgentService: enrollment (token + CSR, no client certificate), certificate renewal, and
//! the desired-state stream (closed as soon as the agent is revoked).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::agent_service_server::AgentService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{Caller, Peer};
use super::caller;
use crate::node::Node;
use crate::security::{self, HostFacts};

/// A token bucket per source address for `Enroll`.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: f64::from(per_minute), buckets: Mutex::default() }
    }

    /// Takes one token for `ip`; false when the bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(ip).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0)
            .min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct AgentApi {
    node: Arc<Node>,
}

impl AgentApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn issuing(&self) -> Result<&security::Issuing, Status> {
        self.node.issuing.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "controller {} cannot issue agent certificates: it was started without --ca-key",
                self.node.id
            ))
        })
    }
}

fn agent_id<T>(req: &Request<T>) -> Result<String, Status> {
    match caller(req) {
        Caller::Agent(id) => Ok(id),
        other => Err(Status::permission_denied(format!("{} is not an agent", other.name()))),
    }
}

type DesiredStream = ReceiverStream<Result<pb::DesiredState, Status>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollReply>, Status> {
        let issuing = self.issuing()?;
        if let Some(Peer(Some(addr))) = req.extensions().get::<Peer>()
            && !self.node.enroll_limiter.allow(addr.ip())
        {
            return Err(Status::resource_exhausted(format!(
                "too many enrollments from {}; retry in a minute",
                addr.ip()
            )));
        }
        let r = req.into_inner();
        let facts = r.facts.unwrap_or_default();
        let facts = HostFacts {
            hostname: facts.hostname,
            os: facts.os,
            addresses: facts.addresses,
            mac: facts.mac,
        };
        let reenroll = (!r.agent_id.is_empty()).then_some(r.agent_id.as_str());
        let enrolled =
            security::enroll(&self.node, issuing, &r.token, &r.csr_pem, facts, reenroll).await?;
        Ok(Response::new(pb::EnrollReply {
            agent_id: enrolled.agent.id,
            cert_pem: enrolled.cert_pem,
            ca_pem: issuing.ca.cert_pem().to_owned(),
            labels: enrolled.agent.labels.into_iter().collect(),
            not_after: enrolled.agent.cert_not_after as i64,
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewReply>, Status> {
        let id = agent_id(&req)?;
        let issuing = self.issuing()?;
        let (cert_pem, not_after) =
            security::renew(&self.node, issuing, &id, &req.into_inner().csr_pem).await?;
        Ok(Response::new(pb::RenewReply { cert_pem, not_after: not_after as i64 }))
    }

    type StreamDesiredStateStream = DesiredStream;

    async fn stream_desired_state(
        &self,
        req: Request<pb::DesiredStateRequest>,
    ) -> Result<Response<DesiredStream>, Status> {
        let id = agent_id(&req)?;
        let r = req.into_inner();
        if !r.agent_id.is_empty() && r.agent_id != id {
            return Err(Status::permission_denied(format!(
                "agent {id} may not read the desired state of agent {}",
                r.agent_id
            )));
        }
        let have = r.have_revision;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream_desired(self.node.clone(), id, have, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sends the agent's desired state whenever the applied revision passes what it has;
/// ends the stream with PERMISSION_DENIED as soon as the agent is revoked.
async fn stream_desired(
    node: Arc<Node>,
    id: String,
    mut have: u64,
    tx: mpsc::Sender<Result<pb::DesiredState, Status>>,
) {
    let mut applied = node.reader.subscribe();
    loop {
        let revision = *applied.borrow_and_update();
        if let Some(reason) = security::agent_revoked(&node.reader, &id) {
            tracing::info!(agent_id = %id, "closing the stream of a revoked agent");
            let _ = tx
                .send(Err(Status::permission_denied(format!("agent {id} is revoked: {reason}"))))
                .await;
            return;
        }
        if revision > have {
            if tx.send(Ok(pb::DesiredState { revision })).await.is_err() {
                return;
            }
            have = revision;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
            // A periodic look, so a stream never outlives a revocation by long.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
