//! FleetService: the enrolled agents with their status, revocation and re-enrollment
//! permits; and the wire form of what agents report.

use std::collections::BTreeMap;
use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::fleet_service_server::FleetService;
use tonic::{Request, Response, Status};

use super::{audited, caller};
use crate::fleet::{self, AgentEvent, EnforcerReport, EnforcerState, FleetEntry};
use crate::node::{Consistency, Node};
use crate::policy::resolver::Resolver;
use crate::security::{self, AgentRecord};

pub struct FleetApi {
    node: Arc<Node>,
    resolver: Arc<Resolver>,
}

impl FleetApi {
    pub fn new(node: Arc<Node>, resolver: Arc<Resolver>) -> Self {
        Self { node, resolver }
    }

    /// The fleet view with each agent's desired revision as this node resolves it.
    async fn fleet_view(&self) -> Result<Vec<(FleetEntry, u64)>, Status> {
        self.resolver.caught_up(self.node.reader.revision()).await;
        let entries = fleet::view(&self.node.reader, fleet::now_ms())?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let desired = self.resolver.resolve(&e.agent.id).map_or(0, |r| r.revision);
                (e, desired)
            })
            .collect())
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

fn state_from_pb(s: i32) -> EnforcerState {
    match pb::EnforcerState::try_from(s) {
        Ok(pb::EnforcerState::Compliant) => EnforcerState::Compliant,
        Ok(pb::EnforcerState::DriftedRepaired) => EnforcerState::DriftedRepaired,
        Ok(pb::EnforcerState::Failed) => EnforcerState::Failed,
        Ok(pb::EnforcerState::AuditNoncompliant) => EnforcerState::AuditNoncompliant,
        _ => EnforcerState::NotManaged,
    }
}

fn state_to_pb(s: EnforcerState) -> pb::EnforcerState {
    match s {
        EnforcerState::NotManaged => pb::EnforcerState::NotManaged,
        EnforcerState::Compliant => pb::EnforcerState::Compliant,
        EnforcerState::DriftedRepaired => pb::EnforcerState::DriftedRepaired,
        EnforcerState::Failed => pb::EnforcerState::Failed,
        EnforcerState::AuditNoncompliant => pb::EnforcerState::AuditNoncompliant,
    }
}

pub fn enforcer_from_pb(e: pb::EnforcerStatus) -> EnforcerReport {
    EnforcerReport {
        state: state_from_pb(e.state),
        enforcer: e.enforcer,
        revision: e.revision,
        reason: e.reason,
        checked_at_ms: e.checked_at_ms,
        details: e.details.into_iter().collect(),
    }
}

pub fn enforcer_to_pb(e: EnforcerReport) -> pb::EnforcerStatus {
    pb::EnforcerStatus {
        state: state_to_pb(e.state).into(),
        enforcer: e.enforcer,
        revision: e.revision,
        reason: e.reason,
        checked_at_ms: e.checked_at_ms,
        details: e.details.into_iter().collect(),
    }
}

pub fn event_from_pb(e: pb::AgentEvent) -> AgentEvent {
    AgentEvent {
        id: e.id,
        kind: e.kind,
        enforcer: e.enforcer,
        at_ms: e.at_ms,
        revision: e.revision,
        summary: e.summary,
        before: e.before,
        after: e.after,
        fields: e.fields,
    }
}

pub fn event_to_pb(e: AgentEvent) -> pb::AgentEvent {
    pb::AgentEvent {
        id: e.id,
        kind: e.kind,
        enforcer: e.enforcer,
        at_ms: e.at_ms,
        revision: e.revision,
        summary: e.summary,
        before: e.before,
        after: e.after,
        fields: e.fields,
    }
}

fn entry_to_pb(e: FleetEntry, desired_revision: u64) -> pb::Agent {
    let status = e.status.unwrap_or_default();
    pb::Agent {
        online: e.online,
        node: e.node,
        last_seen_ms: e.last_seen_ms,
        applied_revision: status.applied_revision(),
        desired_revision,
        agent_version: status.agent_version,
        enforcers: status.enforcers.into_iter().map(enforcer_to_pb).collect(),
        ..agent_to_pb(e.agent, e.revoked)
    }
}

/// A label selector `k=v,k2=v2` (empty: everything).
fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, Status> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
            _ => Err(Status::invalid_argument(format!(
                "selector part {p:?} is not key=value (e.g. role=modality,site=north)"
            ))),
        })
        .collect()
}

/// The `--status` filter of `agent list`.
#[derive(Debug, Clone, Copy)]
enum StatusFilter {
    Any,
    Online,
    Offline,
    Compliant,
    Drifted,
    Failed,
    Revoked,
}

impl StatusFilter {
    fn parse(s: &str) -> Result<Self, Status> {
        Ok(match s {
            "" => Self::Any,
            "online" => Self::Online,
            "offline" => Self::Offline,
            "compliant" => Self::Compliant,
            "drifted" => Self::Drifted,
            "failed" => Self::Failed,
            "revoked" => Self::Revoked,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown status {other:?}: use online, offline, compliant, drifted, failed or revoked"
                )));
            }
        })
    }

    fn matches(self, e: &FleetEntry) -> bool {
        let has = |s| e.status.as_ref().is_some_and(|st| st.any(s));
        match self {
            Self::Any => true,
            Self::Online => e.online,
            Self::Offline => !e.online && e.revoked.is_none(),
            Self::Failed => has(EnforcerState::Failed),
            Self::Drifted => {
                has(EnforcerState::DriftedRepaired) || has(EnforcerState::AuditNoncompliant)
            }
            Self::Compliant => e.status.as_ref().is_some_and(|st| {
                st.enforcers.iter().all(|x| {
                    matches!(x.state, EnforcerState::Compliant | EnforcerState::NotManaged)
                })
            }),
            Self::Revoked => e.revoked.is_some(),
        }
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        let r = req.into_inner();
        let selector = parse_selector(&r.selector)?;
        let status = StatusFilter::parse(&r.status)?;
        self.node.read_barrier(Consistency::Linearizable).await?;
        let revision = self.node.reader.revision();
        let mut agents = Vec::new();
        for (e, desired) in self.fleet_view().await? {
            let selected = selector.iter().all(|(k, v)| e.agent.labels.get(k) == Some(v));
            if selected && status.matches(&e) {
                agents.push(entry_to_pb(e, desired));
            }
        }
        Ok(Response::new(pb::ListAgentsReply { agents, revision }))
    }

    async fn show_agent(
        &self,
        req: Request<pb::ShowAgentRequest>,
    ) -> Result<Response<pb::ShowAgentReply>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(Consistency::Linearizable).await?;
        let Some((entry, desired)) =
            self.fleet_view().await?.into_iter().find(|(e, _)| e.agent.id == r.id)
        else {
            return Err(Status::not_found(format!("agent {} is not enrolled", r.id)));
        };
        let n = if r.events == 0 { 20 } else { r.events.min(1000) as usize };
        let events = fleet::recent_events(&self.node.reader, &r.id, n)?;
        Ok(Response::new(pb::ShowAgentReply {
            agent: Some(entry_to_pb(entry, desired)),
            events: events.into_iter().map(event_to_pb).collect(),
        }))
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

    async fn unlock_account(
        &self,
        req: Request<pb::UnlockAccountRequest>,
    ) -> Result<Response<pb::AgentReply>, Status> {
        let by = caller(&req);
        let r = req.into_inner();
        let agent = security::release_account(&self.node, &r.id, &r.user, &by).await?;
        let reason = security::agent_revoked(&self.node.reader, &r.id);
        Ok(audited(
            pb::AgentReply { agent: Some(agent_to_pb(agent, reason)) },
            format!("agent {} account {}", r.id, r.user),
        ))
    }
}
