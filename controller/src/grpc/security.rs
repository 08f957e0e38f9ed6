//! SecurityService: bootstrap tokens, admin roles and the audit log.

use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::security_service_server::SecurityService;
use tonic::{Request, Response, Status};

use super::{audited, caller};
use crate::node::{Consistency, Node};
use crate::pki::Role;
use crate::pki::tokens::{TokenRecord, token_id};
use crate::security;

pub struct SecurityApi {
    node: Arc<Node>,
}

impl SecurityApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn token_to_pb(t: TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: token_id(&t.hash),
        labels: t.labels.into_iter().collect(),
        created_at: t.created_at as i64,
        expires_at: t.expires_at as i64,
        uses_left: t.uses_left,
        uses_total: t.uses_total,
        revoked: t.revoked,
        created_by: t.created_by,
    }
}

#[tonic::async_trait]
impl SecurityService for SecurityApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenReply>, Status> {
        let by = caller(&req);
        let r = req.into_inner();
        let labels = r.labels.into_iter().collect();
        let (token, record) = security::create_token(
            &self.node,
            labels,
            Duration::from_secs(r.ttl_seconds),
            r.uses,
            &by,
        )
        .await?;
        let info = token_to_pb(record);
        let target = format!("token {}", info.id);
        Ok(audited(pb::CreateTokenReply { token, info: Some(info) }, target))
    }

    async fn list_tokens(
        &self,
        _: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let tokens =
            security::list_tokens(&self.node.reader)?.into_iter().map(token_to_pb).collect();
        Ok(Response::new(pb::ListTokensReply { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let id = req.into_inner().id;
        let record = security::revoke_token(&self.node, &id).await?;
        Ok(audited(token_to_pb(record), format!("token {id}")))
    }

    async fn set_admin_role(
        &self,
        req: Request<pb::SetAdminRoleRequest>,
    ) -> Result<Response<pb::AdminRole>, Status> {
        let r = req.into_inner();
        let role: Role = r.role.parse().map_err(Status::invalid_argument)?;
        security::set_role(&self.node, &r.name, role).await?;
        let target = format!("admin {} -> {role}", r.name);
        Ok(audited(pb::AdminRole { name: r.name, role: role.to_string() }, target))
    }

    async fn list_admin_roles(
        &self,
        _: Request<pb::ListAdminRolesRequest>,
    ) -> Result<Response<pb::ListAdminRolesReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let roles = security::list_roles(&self.node.reader)?
            .into_iter()
            .map(|(name, role)| pb::AdminRole { name, role: role.to_string() })
            .collect();
        Ok(Response::new(pb::ListAdminRolesReply { roles }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let r = req.into_inner();
        let since_ms = (r.since.max(0) as u64).saturating_mul(1000);
        let entries = security::list_audit(&self.node.reader, since_ms, &r.who, &r.method)?
            .into_iter()
            .map(pb::AuditEntry::from)
            .collect();
        Ok(Response::new(pb::ListAuditReply { entries }))
    }
}

impl From<security::AuditEntry> for pb::AuditEntry {
    fn from(e: security::AuditEntry) -> Self {
        Self {
            at_unix_ms: e.at_unix_ms as i64,
            who: e.who,
            method: e.method,
            target: e.target,
            peer: e.peer,
            code: e.code,
            message: e.message,
        }
    }
}

/// The other way, for clients (the compliance report).
impl From<pb::AuditEntry> for security::AuditEntry {
    fn from(e: pb::AuditEntry) -> Self {
        Self {
            at_unix_ms: e.at_unix_ms.max(0) as u64,
            who: e.who,
            method: e.method,
            target: e.target,
            peer: e.peer,
            code: e.code,
            message: e.message,
        }
    }
}
