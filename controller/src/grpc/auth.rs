//! Authorization, default deny: every gRPC method is in [`rule`]'s table with who may call
//! it; anything else is refused. The caller's identity comes from the SAN URI of its
//! client certificate (already verified against the cluster CA by rustls); admin roles come
//! from the cluster (`bulwark.role` records) or else from the certificate.
//!
//! The layer puts a [`Caller`] into the request's extensions for handlers (an agent may
//! only act for its own id) and records every mutating call in the admin audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};

use crate::node::Node;
use crate::pki::identity::identity_from_der;
use crate::pki::{Identity, Role};
use crate::security::{self, AuditEntry};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone, even without a client certificate.
    Anyone,
    /// Another controller of this cluster.
    Peer,
    /// An enrolled, non-revoked agent.
    Agent,
    /// An admin with at least this role.
    Admin(Role),
    /// A controller, or an admin with at least this role.
    PeerOrAdmin(Role),
}

/// A method's rule: who may call it, and whether a call is recorded in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub who: Who,
    pub audited: bool,
}

const fn r(who: Who, audited: bool) -> Option<Rule> {
    Some(Rule { who, audited })
}

/// The rule for a gRPC path (`/package.Service/Method`); `None` means refused.
pub fn rule(path: &str) -> Option<Rule> {
    use Role::{Admin, Operator, Viewer};
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match (service, method) {
        ("grpc.health.v1.Health", _) => r(Who::Anyone, false),
        ("grpc.reflection.v1.ServerReflection", _) => r(Who::Admin(Viewer), false),
        ("bulwark.v1.RaftService", _) => r(Who::Peer, false),
        ("bulwark.v1.ClusterService", "Status") => r(Who::PeerOrAdmin(Viewer), false),
        ("bulwark.v1.ClusterService", "SnapshotSave") => r(Who::Admin(Admin), true),
        ("bulwark.v1.ClusterService", "Init" | "AddLearner" | "Promote" | "RemoveNode") => {
            r(Who::Admin(Admin), true)
        }
        ("bulwark.v1.StoreService", "Get" | "List" | "Watch") => r(Who::Admin(Viewer), false),
        ("bulwark.v1.StoreService", "Put" | "Delete") => r(Who::Admin(Admin), true),
        ("bulwark.v1.AgentService", "Enroll") => r(Who::Anyone, false),
        ("bulwark.v1.AgentService", "Renew" | "StreamDesiredState" | "Report") => {
            r(Who::Agent, false)
        }
        ("bulwark.v1.SecurityService", "CreateToken" | "RevokeToken") => {
            r(Who::Admin(Operator), true)
        }
        ("bulwark.v1.SecurityService", "SetAdminRole") => r(Who::Admin(Admin), true),
        ("bulwark.v1.SecurityService", "ListTokens" | "ListAdminRoles" | "ListAudit") => {
            r(Who::Admin(Viewer), false)
        }
        ("bulwark.v1.FleetService", "ListAgents" | "ShowAgent") => r(Who::Admin(Viewer), false),
        ("bulwark.v1.FleetService", "RevokeAgent" | "PermitReenroll" | "UnlockAccount") => {
            r(Who::Admin(Operator), true)
        }
        ("bulwark.v1.PolicyService", "Apply" | "DeleteDocument" | "Rollback") => {
            r(Who::Admin(Operator), true)
        }
        ("bulwark.v1.PolicyService", "ListDocuments" | "GetDocument" | "History") => {
            r(Who::Admin(Viewer), false)
        }
        ("bulwark.v1.RolloutService", "Start" | "Pause" | "Resume" | "Abort") => {
            r(Who::Admin(Operator), true)
        }
        ("bulwark.v1.RolloutService", "Status") => r(Who::Admin(Viewer), false),
        ("bulwark.v1.EventService", "ListEvents" | "FollowEvents") => r(Who::Admin(Viewer), false),
        _ => None,
    }
}

/// The authenticated caller of a request, for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    Controller(u64),
    Agent(String),
    Admin { name: String, role: Role },
}

impl Caller {
    /// How the audit log and error messages name the caller.
    pub fn name(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Controller(id) => format!("controller/{id}"),
            Caller::Agent(id) => format!("agent/{id}"),
            Caller::Admin { name, .. } => format!("admin/{name}"),
        }
    }
}

/// What a successful audited call acted on; handlers put it in the response extensions.
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// Set by a handler that committed its audit entry in the same Raft entry as its change.
#[derive(Debug, Clone, Copy)]
pub struct AuditRecorded;

/// Where a request came from, for audit and rate limiting.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

fn who_needs(who: Who) -> String {
    match who {
        Who::Anyone => "anyone".into(),
        Who::Peer => "controllers only".into(),
        Who::Agent => "agents only".into(),
        Who::Admin(role) => format!("admins with role {role} or higher"),
        Who::PeerOrAdmin(role) => format!("controllers and admins with role {role} or higher"),
    }
}

/// Who presented `cert` (no certificate: anonymous), with the role stored for admins.
pub fn identify(node: &Node, cert: Option<&[u8]>) -> Result<Caller, Status> {
    let Some(der) = cert else { return Ok(Caller::Anonymous) };
    match identity_from_der(der) {
        Ok(Identity::Controller(id)) => Ok(Caller::Controller(id)),
        Ok(Identity::Agent(id)) => Ok(Caller::Agent(id)),
        Ok(Identity::Admin { name, issued_role }) => {
            let role = security::stored_role(&node.reader, &name).unwrap_or(issued_role);
            Ok(Caller::Admin { name, role })
        }
        Err(why) => Err(Status::unauthenticated(format!("client certificate refused: {why}"))),
    }
}

/// Decides one request. `Err` is the status to answer with.
pub fn authorize(node: &Node, path: &str, cert: Option<&[u8]>) -> Result<(Rule, Caller), Status> {
    let rule = rule(path)
        .ok_or_else(|| Status::permission_denied(format!("{path} is not a Bulwark method")))?;
    let caller = identify(node, cert)?;
    if rule.who == Who::Anyone {
        return Ok((rule, caller));
    }
    let allowed = match (&caller, rule.who) {
        (Caller::Anonymous, _) => {
            return Err(Status::unauthenticated(format!("{path} requires a client certificate")));
        }
        (Caller::Controller(_), Who::Peer | Who::PeerOrAdmin(_)) => true,
        (Caller::Agent(id), Who::Agent) => {
            if let Some(reason) = security::agent_revoked(&node.reader, id) {
                return Err(Status::permission_denied(format!("agent {id} is revoked: {reason}")));
            }
            true
        }
        (Caller::Admin { name, role }, Who::Admin(need) | Who::PeerOrAdmin(need)) => {
            if role < &need {
                return Err(Status::permission_denied(format!(
                    "admin {name} has role {role}; {path} needs {need} or higher"
                )));
            }
            true
        }
        _ => false,
    };
    if !allowed {
        return Err(Status::permission_denied(format!(
            "{} may not call {path} ({})",
            caller.name(),
            who_needs(rule.who)
        )));
    }
    Ok((rule, caller))
}

/// The tower layer that applies [`authorize`] to every request.
#[derive(Clone)]
pub struct AuthLayer {
    pub node: Arc<Node>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner, node: self.node.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    node: Arc<Node>,
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let addr = info.and_then(|i| i.get_ref().remote_addr());
        let certs = info.and_then(|i| i.peer_certs());
        let cert = certs.as_ref().and_then(|c| c.first()).map(|c| c.to_vec());
        let (rule, caller) = match authorize(&self.node, &path, cert.as_deref()) {
            Ok(ok) => ok,
            Err(status) => {
                tracing::info!(%path, peer = ?addr, code = ?status.code(), reason = status.message(), "refused");
                let audited = rule(&path).is_some_and(|r| r.audited);
                let node = self.node.clone();
                return Box::pin(async move {
                    if audited {
                        // A refused attempt at a mutating call is recorded too.
                        let who = identify(&node, cert.as_deref())
                            .map_or_else(|_| "unidentified".to_owned(), |c| c.name());
                        let entry = AuditEntry {
                            who,
                            ..AuditEntry::new(
                                &Caller::Anonymous,
                                &path,
                                String::new(),
                                addr,
                                status.code(),
                                status.message().to_owned(),
                            )
                        };
                        if let Err(e) = security::record_audit(&node, entry).await {
                            tracing::error!(%path, error = %e, "could not record the audit entry");
                        }
                    }
                    Ok(status.into_http())
                });
            }
        };
        req.extensions_mut().insert(caller.clone());
        req.extensions_mut().insert(Peer(addr));
        // Swap in the clone that was polled ready (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let node = self.node.clone();
        let started = std::time::Instant::now();
        Box::pin(async move {
            let response = inner.call(req).await?;
            let method = crate::metrics::MethodLabel {
                method: path.rsplit('/').next().unwrap_or_default().to_owned(),
            };
            node.metrics
                .rpc_seconds
                .get_or_create(&method)
                .observe(started.elapsed().as_secs_f64());
            if rule.audited && response.extensions().get::<AuditRecorded>().is_none() {
                let code = response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(Code::Ok, Code::from_i32);
                let message = response
                    .headers()
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .map(percent_decode)
                    .unwrap_or_default();
                let target = response
                    .extensions()
                    .get::<AuditTarget>()
                    .map(|t| t.0.clone())
                    .unwrap_or_default();
                let entry = AuditEntry::new(&caller, &path, target, addr, code, message);
                if let Err(e) = security::record_audit(&node, entry).await {
                    tracing::error!(%path, who = %caller.name(), error = %e, "could not record the audit entry");
                }
            }
            Ok(response)
        })
    }
}

/// Decodes grpc-message's percent-encoding.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
