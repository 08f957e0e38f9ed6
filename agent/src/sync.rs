//! The agent's link to the controllers: one long-lived mTLS stream of desired state
//! (resumed by revision, failing over to the next controller with exponential backoff and
//! jitter), the reporter that sends status and spooled events on the same connection, and
//! certificate renewal before expiry.

use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::agent_service_client::AgentServiceClient;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint};

use crate::cache::Cache;
use crate::enforce::StatusBoard;
use crate::enroll::{error_chain, key_and_csr};
use crate::identity::StateDir;

/// The connection state other parts of the agent look at.
#[derive(Clone)]
pub struct Link {
    /// Bumped after every successful exchange with a controller (the stream opened or
    /// delivered, a report acknowledged): commit-confirmed waits on it.
    contact: Arc<watch::Sender<u64>>,
    /// The controller connection in use, if any.
    channel: Arc<watch::Sender<Option<(String, Channel)>>>,
    /// Asks the stream to reconnect (after the certificate was renewed).
    reconnect: Arc<Notify>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            contact: Arc::new(watch::channel(0).0),
            channel: Arc::new(watch::channel(None).0),
            reconnect: Arc::new(Notify::new()),
        }
    }
}

impl Link {
    pub fn contact(&self) {
        self.contact.send_modify(|n| *n += 1);
    }

    pub fn subscribe_contact(&self) -> watch::Receiver<u64> {
        self.contact.subscribe()
    }

    /// The URL of the controller streamed from, if connected.
    pub fn controller(&self) -> Option<String> {
        self.channel.borrow().as_ref().map(|(u, _)| u.clone())
    }

    /// Waits for a connection to a controller.
    async fn connected(&self) -> (String, Channel) {
        let mut rx = self.channel.subscribe();
        loop {
            if let Some(c) = rx.borrow_and_update().clone() {
                return c;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Returns once some controller answers a health check on a *new* connection: proof that
/// the host's current ruleset lets the agent reach its controllers afresh (established
/// connections would pass any ruleset). Callers bound it with a timeout.
pub async fn reach_any(state: &StateDir, controllers: &[String], link: &Link) {
    loop {
        for url in controllers {
            let Ok(channel) = connect(state, url).await else { continue };
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let check =
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), check).await {
                link.contact();
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Delay before attempt `n` (from 1): 250 ms doubling to 30 s, times a jitter in [0.5, 1).
fn backoff(n: u32) -> Duration {
    let base = Duration::from_millis(250 * (1u64 << n.saturating_sub(1).min(7)));
    base.min(Duration::from_secs(30)).mul_f64(rand::thread_rng().gen_range(0.5..1.0))
}

async fn connect(state: &StateDir, url: &str) -> Result<Channel, String> {
    let tls = state.client_tls().map_err(|e| e.to_string())?;
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("not a URL: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| error_chain(&e))
}

/// Streams desired states into `cache` (persisted first) and `desired`, forever.
pub async fn stream_desired(
    state: StateDir,
    controllers: Vec<String>,
    cache: Cache,
    desired: watch::Sender<Option<Arc<pb::DesiredState>>>,
    link: Link,
) {
    let mut have = desired.borrow().as_ref().map_or(0, |d| d.revision);
    let mut attempt = 0u32;
    let mut next = 0usize;
    loop {
        let url = &controllers[next % controllers.len()];
        next += 1;
        match connect(&state, url).await {
            Err(e) => tracing::warn!(controller = %url, error = %e, "cannot reach controller"),
            Ok(channel) => {
                let mut client = AgentServiceClient::new(channel.clone());
                let req = pb::DesiredStateRequest { have_revision: have, agent_id: String::new() };
                match client.stream_desired_state(req).await {
                    Err(status) => {
                        tracing::warn!(controller = %url, code = ?status.code(), error = status.message(), "controller refused the stream");
                    }
                    Ok(stream) => {
                        attempt = 0;
                        tracing::info!(controller = %url, have_revision = have, "streaming desired state");
                        link.channel.send_replace(Some((url.clone(), channel)));
                        link.contact();
                        let mut stream = stream.into_inner();
                        loop {
                            let message = tokio::select! {
                                m = stream.message() => m,
                                () = link.reconnect.notified() => {
                                    tracing::info!("reconnecting with the renewed certificate");
                                    break;
                                }
                            };
                            match message {
                                Ok(Some(state)) => {
                                    if let Err(e) = cache.set_desired(&state).await {
                                        // Not applied unless it is on disk first.
                                        tracing::error!(error = %e, "cannot persist the desired state");
                                        break;
                                    }
                                    tracing::info!(revision = state.revision, "new desired state");
                                    have = state.revision;
                                    desired.send_replace(Some(Arc::new(state)));
                                    link.contact();
                                }
                                Ok(None) => {
                                    tracing::warn!(controller = %url, "the controller ended the stream");
                                    break;
                                }
                                Err(status) => {
                                    tracing::warn!(controller = %url, code = ?status.code(), error = status.message(), "stream broke");
                                    break;
                                }
                            }
                        }
                        link.channel.send_replace(None);
                    }
                }
            }
        }
        attempt += 1;
        // Try every controller once quickly, then back off.
        let delay = if (attempt as usize) < controllers.len() {
            Duration::from_millis(100)
        } else {
            backoff(attempt - controllers.len() as u32 + 1)
        };
        tokio::time::sleep(delay).await;
    }
}

/// What the reporter needs besides the link.
pub struct Reporter {
    pub cache: Cache,
    pub board: StatusBoard,
    pub link: Link,
    pub desired: watch::Receiver<Option<Arc<pb::DesiredState>>>,
    pub facts: watch::Receiver<pb::HostFacts>,
    /// A report goes out at least this often (a heartbeat).
    pub heartbeat: Duration,
}

/// Most events per report.
const BATCH: usize = 500;

impl Reporter {
    /// Sends a report whenever an enforcer's status changes, events are spooled, facts
    /// change, or the heartbeat is due; drops spooled events once acknowledged.
    pub async fn run(mut self) {
        let mut statuses = self.board.subscribe();
        let mut sent_facts: Option<pb::HostFacts> = None;
        loop {
            let (url, channel) = self.link.connected().await;
            let facts = self.facts.borrow_and_update().clone();
            let events = match self.cache.spooled(BATCH) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the event spool");
                    Vec::new()
                }
            };
            let report = pb::AgentReport {
                desired_revision: self.desired.borrow().as_ref().map_or(0, |d| d.revision),
                enforcers: self.board.snapshot(),
                events,
                facts: (sent_facts.as_ref() != Some(&facts)).then(|| facts.clone()),
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            statuses.borrow_and_update();
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                AgentServiceClient::new(channel).report(report),
            )
            .await;
            let more = match sent {
                Ok(Ok(ack)) => {
                    let ack = ack.into_inner();
                    self.link.contact();
                    sent_facts = Some(facts);
                    if let Err(e) = self.cache.unspool(&ack.stored).await {
                        tracing::error!(error = %e, "cannot drop acknowledged events");
                    }
                    ack.stored.len() == BATCH
                }
                Ok(Err(status)) => {
                    tracing::warn!(controller = %url, error = status.message(), "report refused");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(controller = %url, "report timed out");
                    continue;
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = statuses.changed() => {}
                () = self.board.spool_rung() => {}
                _ = self.facts.changed() => {}
                () = tokio::time::sleep(self.heartbeat) => {}
            }
        }
    }
}

/// Renews the certificate two thirds into its life (retrying every minute on failure),
/// then makes the stream reconnect with it. Offline, the agent keeps enforcing whatever
/// its certificate's state.
pub async fn renew_forever(state: StateDir, link: Link) {
    loop {
        let Ok(info) = state.info() else { return };
        let now = crate::enforce::reconcile::now_ms() / 1000;
        let wait = (info.renew_at() - now).max(0) as u64;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match renew_once(&state, &link).await {
            Ok(not_after) => {
                tracing::info!(not_after, "certificate renewed");
                link.reconnect.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate renewal failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

async fn renew_once(state: &StateDir, link: &Link) -> Result<i64, String> {
    let (_, channel) = link.connected().await;
    let (key, csr_pem) = key_and_csr().map_err(|e| e.to_string())?;
    let reply = AgentServiceClient::new(channel)
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let mut info = state.info().map_err(|e| e.to_string())?;
    info.cert_issued_at = crate::enforce::reconcile::now_ms() / 1000;
    info.cert_not_after = reply.not_after;
    let ca = String::from_utf8_lossy(&state.ca_pem().map_err(|e| e.to_string())?).into_owned();
    state.store(&info, &key.serialize_pem(), &reply.cert_pem, &ca).map_err(|e| e.to_string())?;
    Ok(reply.not_after)
}
