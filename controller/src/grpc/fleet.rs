//! FleetService: the enrolled agents, revocation and re-enrollment permits.

use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::fleet_service_server::FleetService;
use tonic::{Request, Response, Status};

use super::{audited, caller};
use crate::node::{Consistency, Node};
use crate::security::{self, AgentRecord};

pub struct FleetApi {
    node: Arc<Node>,
}

impl FleetApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

pub fn agent_to_pb(a: AgentRecord, revoked: Option<String>) -> pb::Agent {
    pb::Agent {
        id: a.id,
        hostname: a.hostname,
        os: a.os,
        addresses: a.addresses,
        mac: a.mac,
        labels: a.labels.into_iter().collect(),
        enrolled_at: a.enrolled_at as i64,
        cert_not_after: a.cert_not_after as i64,
        token_id: a.token_id,
        revoked: revoked.is_some(),
        revoked_reason: revoked.unwrap_or_default(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let revision = self.node.reader.revision();
        let agents = security::agents(&self.node.reader)?;
        let agents = agents.into_iter().map(|(a, r, _)| agent_to_pb(a, r)).collect();
        Ok(Response::new(pb::ListAgentsReply { agents, revision }))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::AgentReply>, Status> {
        let by = caller(&req);
        let r = req.into_inner();
        let agent = security::revoke_agent(&self.node, &r.id, &r.reason, &by).await?;
        let reason = security::agent_revoked(&self.node.reader, &r.id);
        Ok(audited(
            pb::AgentReply { agent: Some(agent_to_pb(agent, reason)) },
            format!("agent {}", r.id),
        ))
    }

    async fn permit_reenroll(
        &self,
        req: Request<pb::PermitReenrollRequest>,
    ) -> Result<Response<pb::AgentReply>, Status> {
        let by = caller(&req);
        let id = req.into_inner().id;
        let agent = security::permit_reenroll(&self.node, &id, &by).await?;
        Ok(audited(pb::AgentReply { agent: Some(agent_to_pb(agent, None)) }, format!("agent {id}")))
    }

    async fn show_agent(
        &self,
        _: Request<pb::ShowAgentRequest>,
    ) -> Result<Response<pb::ShowAgentReply>, Status> {
        Err(Status::unimplemented("agent status is being built"))
    }
}
