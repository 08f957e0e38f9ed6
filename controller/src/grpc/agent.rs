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
use crate::fleet;
use crate::node::Node;
use crate::policy::model::{
    Action, Direction, InterfaceKind, Mode, Protocol, UserAction, WifiSecurity, Wireless,
};
use crate::policy::resolve::{Resolved, ResolvedRule};
use crate::policy::resolver::Resolver;
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
    resolver: Arc<Resolver>,
}

impl AgentApi {
    pub fn new(node: Arc<Node>, resolver: Arc<Resolver>) -> Self {
        Self { node, resolver }
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
        let expected = r.labels.into_iter().collect();
        let enrolled =
            security::enroll(&self.node, issuing, &r.token, &r.csr_pem, facts, &expected, reenroll)
                .await?;
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

    async fn report(
        &self,
        req: Request<pb::AgentReport>,
    ) -> Result<Response<pb::ReportAck>, Status> {
        let id = agent_id(&req)?;
        if let Some(reason) = security::agent_revoked(&self.node.reader, &id) {
            return Err(Status::permission_denied(format!("agent {id} is revoked: {reason}")));
        }
        let r = req.into_inner();
        let report = fleet::Report {
            desired_revision: r.desired_revision,
            enforcers: r.enforcers.into_iter().map(super::fleet::enforcer_from_pb).collect(),
            events: r.events.into_iter().map(super::fleet::event_from_pb).collect(),
            facts: r.facts.map(|f| HostFacts {
                hostname: f.hostname,
                os: f.os,
                addresses: f.addresses,
                mac: f.mac,
            }),
            agent_version: r.agent_version,
        };
        let events = report.events.len() as u64;
        let stored = fleet::report(&self.node, &id, report).await?;
        self.node.metrics.reports.inc();
        self.node.metrics.events_committed.inc_by(events);
        Ok(Response::new(pb::ReportAck { stored }))
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
        let node = self.node.clone();
        let resolver = self.resolver.clone();
        tokio::spawn(async move {
            let streams = node.metrics.streams_open.clone();
            streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            note_presence(&node, &id, true).await;
            stream_desired(node.clone(), resolver, id.clone(), have, tx).await;
            note_presence(&node, &id, false).await;
            streams.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn action(a: Action) -> String {
    match a {
        Action::Allow => "allow".into(),
        Action::Deny => "deny".into(),
    }
}

fn rule_to_pb(rule: ResolvedRule) -> pb::FirewallRule {
    pb::FirewallRule {
        action: action(rule.action),
        direction: match rule.direction {
            Direction::Inbound => "inbound".into(),
            Direction::Outbound => "outbound".into(),
        },
        any_peer: rule.peers.is_none(),
        addresses: rule.peers.unwrap_or_default().iter().map(ToString::to_string).collect(),
        ports: rule
            .ports
            .iter()
            .map(|p| pb::PortRange {
                protocol: if p.protocol == Protocol::Tcp { "tcp".into() } else { "udp".into() },
                first: p.first.into(),
                last: p.last.into(),
            })
            .collect(),
        interface: match rule.interface {
            InterfaceKind::Any => "any".into(),
            InterfaceKind::Wired => "wired".into(),
            InterfaceKind::Wireless => "wireless".into(),
        },
        log: rule.log,
        policy: rule.policy,
        failsafe: rule.failsafe,
    }
}

fn security_name(s: WifiSecurity) -> String {
    match s {
        WifiSecurity::Wpa2Psk => "wpa2-psk".into(),
        WifiSecurity::Wpa3Sae => "wpa3-sae".into(),
        WifiSecurity::Wpa2Enterprise => "wpa2-enterprise".into(),
        WifiSecurity::Wpa3Enterprise => "wpa3-enterprise".into(),
    }
}

/// The domain resolution as the wire type.
pub fn resolved_to_pb(r: Resolved) -> pb::DesiredState {
    let audit = |m: Mode| m == Mode::Audit;
    pb::DesiredState {
        revision: r.revision,
        agent_id: r.agent_id,
        policies: r.policies,
        firewall: r.firewall.map(|fw| pb::FirewallState {
            default_inbound: action(fw.default_inbound),
            default_outbound: action(fw.default_outbound),
            rules: fw.rules.into_iter().map(rule_to_pb).collect(),
            log_rate_per_minute: fw.log_rate_per_minute,
            audit: audit(fw.mode),
        }),
        wireless: r.wireless.map(|w| pb::WirelessState {
            radios_off: w.value == Wireless::Off,
            allowed: match w.value {
                Wireless::Off => Vec::new(),
                Wireless::Allowlist(list) => list
                    .into_iter()
                    .map(|s| pb::AllowedSsid {
                        ssid: s.ssid,
                        min_security: security_name(s.security),
                    })
                    .collect(),
            },
            audit: audit(w.mode),
            policy: w.policy,
        }),
        passwords: r.passwords.map(|p| pb::PasswordState {
            profile: p.value.profile,
            min_length: p.value.min_length,
            min_classes: p.value.min_classes,
            max_age_days: p.value.max_age_days,
            min_age_days: p.value.min_age_days,
            warn_age_days: p.value.warn_age_days,
            lockout_attempts: p.value.lockout_attempts,
            unlock_time_seconds: p.value.unlock_time_seconds,
            audit: audit(p.mode),
            policy: p.policy,
        }),
        users: r.users.map(|u| pb::UserState {
            alert_new_users: u.value.alert_new_users,
            privileged_groups: u.value.privileged_groups,
            allowed_accounts: u.value.allowed_accounts,
            lock_unexpected: u.value.action == UserAction::Lock,
            audit: audit(u.mode),
            policy: u.policy,
            released_accounts: r.released_accounts,
        }),
        logins: r.logins.map(|l| pb::LoginState {
            record: l.value.record,
            brute_force_threshold: l.value.brute_force_threshold,
            brute_force_window_seconds: l.value.brute_force_window_seconds,
            policy: l.policy,
        }),
    }
}

async fn note_presence(node: &Node, id: &str, connected: bool) {
    if let Err(e) = fleet::set_presence(node, id, connected).await {
        tracing::warn!(agent_id = %id, connected, error = %e, "agent presence not recorded");
    }
}

/// Sends the agent's desired state whenever its revision passes what the agent has (the
/// node's [`Resolver`] wakes the stream when it may have); ends the stream with
/// PERMISSION_DENIED as soon as the agent is revoked.
async fn stream_desired(
    node: Arc<Node>,
    resolver: Arc<Resolver>,
    id: String,
    mut have: u64,
    tx: mpsc::Sender<Result<pb::DesiredState, Status>>,
) {
    let mut wake = resolver.watch(&id);
    // The resolver reflects at least what this node had applied when the agent asked.
    resolver.caught_up(node.reader.revision()).await;
    loop {
        wake.borrow_and_update();
        if let Some(reason) = security::agent_revoked(&node.reader, &id) {
            tracing::info!(agent_id = %id, "closing the stream of a revoked agent");
            let _ = tx
                .send(Err(Status::permission_denied(format!("agent {id} is revoked: {reason}"))))
                .await;
            return;
        }
        match resolver.resolve(&id) {
            Some(state) if state.revision > have => {
                have = state.revision;
                if tx.send(Ok(resolved_to_pb(state))).await.is_err() {
                    return;
                }
            }
            Some(_) => {}
            None => {
                let status =
                    Status::not_found(format!("agent {id} is not enrolled in this cluster"));
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
        tokio::select! {
            changed = wake.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
            // A periodic look, so a stream never outlives a revocation by long.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
