//! AgentService: enrollment (token + CSR, no client certificate), certificate renewal, and
//! the desired-state stream (closed as soon as the agent is revoked).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::agent_service_server::AgentService;
use futures::Stream;
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};

use super::auth::{Caller, Peer};
use super::caller;
use crate::fleet;
use crate::node::{Consistency, Node};
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

/// The desired-state stream: polled by the connection's own task (no task or channel of
/// its own, which cost about 10 KiB per connected agent).
type DesiredStream = Pin<Box<dyn Stream<Item = Result<pb::DesiredState, Status>> + Send>>;

/// How often an idle stream looks for its agent's revocation by itself.
const REVOCATION_LOOK: Duration = Duration::from_secs(30);

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
        let state = Desired {
            wake: self.resolver.watch(&id),
            resolver: self.resolver.clone(),
            have: r.have_revision,
            caught_up: false,
            done: false,
            unknown_confirmed: false,
            open: Open::new(self.node.clone(), id),
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(state, Desired::next))))
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

/// An agent's open stream: counted in the metrics and recorded as the agent's presence on
/// this node from creation until it is dropped (the agent hung up, or the stream ended).
struct Open {
    node: Arc<Node>,
    id: String,
    /// Closes when the "connected" presence write is over; "disconnected" is written after
    /// it. Not the write's `JoinHandle`: that would keep the finished task's memory (about
    /// 500 bytes) for as long as the stream is open.
    connected: Option<oneshot::Receiver<()>>,
}

impl Open {
    fn new(node: Arc<Node>, id: String) -> Self {
        node.metrics.streams_open.fetch_add(1, Ordering::Relaxed);
        let (written, connected) = oneshot::channel();
        {
            let (node, id) = (node.clone(), id.clone());
            tokio::spawn(async move {
                note_presence(&node, &id, true).await;
                drop(written);
            });
        }
        Self { node, id, connected: Some(connected) }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.node.metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
        let (node, id, connected) =
            (self.node.clone(), std::mem::take(&mut self.id), self.connected.take());
        // Streams are dropped on the runtime's threads; a runtime shutting down has no
        // presence to record any more.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(connected) = connected {
                    let _ = connected.await;
                }
                note_presence(&node, &id, false).await;
            });
        }
    }
}

/// The state of one desired-state stream between two messages.
struct Desired {
    resolver: Arc<Resolver>,
    wake: watch::Receiver<u64>,
    /// The revision the agent has.
    have: u64,
    /// Whether the resolver has reflected what this node had applied when the stream opened.
    caught_up: bool,
    /// A final error was sent: the stream ends.
    done: bool,
    /// The agent was unknown here once, and this node has since caught up with the leader.
    unknown_confirmed: bool,
    open: Open,
}

impl Desired {
    /// The next message: the agent's desired state whenever its revision passes what the
    /// agent has (the node's [`Resolver`] wakes the stream when it may have), or
    /// PERMISSION_DENIED as soon as the agent is revoked, which ends the stream.
    async fn next(mut self) -> Option<(Result<pb::DesiredState, Status>, Self)> {
        if self.done {
            return None;
        }
        let node = self.open.node.clone();
        let id = self.open.id.clone();
        if !self.caught_up {
            self.resolver.caught_up(node.reader.revision()).await;
            self.caught_up = true;
        }
        loop {
            self.wake.borrow_and_update();
            if let Some(reason) = security::agent_revoked(&node.reader, &id) {
                tracing::info!(agent_id = %id, "closing the stream of a revoked agent");
                self.done = true;
                let denied = Status::permission_denied(format!("agent {id} is revoked: {reason}"));
                return Some((Err(denied), self));
            }
            // Decided before any await: a resolution (or a temporary holding one) kept
            // across an await is part of every waiting stream's state.
            let known = match self.resolver.resolve(&id) {
                Some(state) if state.revision > self.have => {
                    self.have = state.revision;
                    return Some((Ok(resolved_to_pb(state)), self));
                }
                Some(_) => true,
                None => false,
            };
            if !known {
                if self.unknown_confirmed {
                    self.done = true;
                    let status =
                        Status::not_found(format!("agent {id} is not enrolled in this cluster"));
                    return Some((Err(status), self));
                }
                // This node may not have applied the enrollment yet (it just restarted and
                // replays its log, or lags behind): catch up with the leader's commit
                // before telling the agent it is unknown, which it may take as final.
                self.unknown_confirmed = true;
                // Boxed: a read barrier may call the leader, a future of kilobytes that
                // would otherwise be part of every stream's state while it waits.
                if let Err(e) = Box::pin(node.read_barrier(Consistency::Linearizable)).await {
                    self.done = true;
                    let status = Status::unavailable(format!(
                        "controller {} does not know agent {id} yet and cannot check with the leader: {e}",
                        node.id
                    ));
                    return Some((Err(status), self));
                }
                self.resolver.caught_up(node.reader.revision()).await;
                continue;
            }
            tokio::select! {
                changed = self.wake.changed() => if changed.is_err() { return None },
                // A revocation wakes the stream through the resolver (the revoked agent's
                // own inputs changed); this slow look is only a safety net. Once a second,
                // it cost a store read and a full resolution per stream per second: 10,000
                // a second with 10,000 agents connected, for nothing (bulwark-loadgen).
                () = tokio::time::sleep(REVOCATION_LOOK) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_output<A, F>(_: fn(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A controller holds one [`Desired::next`] future per connected agent for as long as the
    /// agent is connected: it was 2.6 KB while the read barrier's future (a call to the
    /// leader) and a resolution were held inline.
    #[test]
    fn the_waiting_desired_state_stream_stays_small() {
        let size = size_of_output(Desired::next);
        assert!(size <= 1024, "Desired::next's future is {size} bytes");
    }
}
