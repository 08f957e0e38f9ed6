//! The controller's gRPC server: one listener, TLS 1.3 (rustls), serving RaftService
//! (peers), AgentService (agents; `Enroll` without a client certificate), ClusterService,
//! StoreService, SecurityService, FleetService, PolicyService and RolloutService (admins), gRPC health and reflection.
//! Every request passes [`auth`] first (default deny); handlers are thin: they convert
//! prost types and call [`Node`] or [`crate::security`]; errors become statuses in
//! [`status`] only.

pub(crate) mod agent;
pub mod auth;
mod cluster;
mod event;
pub(crate) mod fleet;
mod policy;
mod raft;
mod rollout;
mod security;
pub mod status;
mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1::agent_service_server::AgentServiceServer;
use bulwark_proto::v1::cluster_service_server::ClusterServiceServer;
use bulwark_proto::v1::event_service_server::EventServiceServer;
use bulwark_proto::v1::fleet_service_server::FleetServiceServer;
use bulwark_proto::v1::policy_service_server::PolicyServiceServer;
use bulwark_proto::v1::raft_service_server::RaftServiceServer;
use bulwark_proto::v1::rollout_service_server::RolloutServiceServer;
use bulwark_proto::v1::security_service_server::SecurityServiceServer;
use bulwark_proto::v1::store_service_server::StoreServiceServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::node::Node;
use crate::policy::resolver::Resolver;

/// Largest gRPC message accepted (snapshots and big appends travel in one message).
const MAX_MESSAGE: usize = 256 << 20;

/// A failure to serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// TLS handshakes in progress at once, per core. After a controller restart every agent
/// reconnects within a second: run all their handshakes at once and the scheduler
/// interleaves them, so each finishes only when nearly all have, past the clients' connect
/// timeout (2 s for `Client`, 5 s for the agent) — they give up, back off and come again,
/// and the work was wasted (bulwark-loadgen: 5,000 agents streaming again after 7.5 s).
/// Taken in arrival order, each handshake completes within milliseconds of its start.
/// Per core, generous: a handshake holds its permit for a network round trip or two while
/// the client sends its certificate. Peer controllers (they offer [`crate::tls::PEER_ALPN`])
/// take no permit: Raft's votes and heartbeats must not queue behind the agents.
const HANDSHAKES_PER_CORE: usize = 64;

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow or failing
/// handshake never holds up the others; at most [`HANDSHAKES_PER_CORE`] per core at once,
/// in arrival order, peers first); established streams go to the server.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> (
    ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(256);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_PER_CORE * cores));
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (config, tx, handshakes) = (config.clone(), tx.clone(), handshakes.clone());
            tokio::spawn(async move {
                let handshake = async {
                    let start = tokio_rustls::LazyConfigAcceptor::new(
                        rustls::server::Acceptor::default(),
                        tcp,
                    )
                    .await?;
                    // A peer controller goes first: an election after a restart of the
                    // cluster must not wait behind thousands of reconnecting agents.
                    let peer = start
                        .client_hello()
                        .alpn()
                        .is_some_and(|mut offered| offered.any(|p| p == crate::tls::PEER_ALPN));
                    let _permit = if peer { None } else { Some(handshakes.acquire().await) };
                    start.into_stream(config).await
                };
                match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}

/// Serves the node's services on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    resolver: Arc<Resolver>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let tls = node.tls.rustls_server_config().map_err(ServeError::Tls)?;
    let (incoming, accept_task) = tls_incoming(listener, Arc::new(tls));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RaftServiceServer<raft::RaftApi>>().await;
    health.set_serving::<ClusterServiceServer<cluster::ClusterApi>>().await;
    health.set_serving::<StoreServiceServer<store::StoreApi>>().await;
    health.set_serving::<AgentServiceServer<agent::AgentApi>>().await;
    health.set_serving::<EventServiceServer<event::EventApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bulwark_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Tls(format!("reflection descriptors: {e}")))?;
    let served = tonic::transport::Server::builder()
        // Finds streams of hosts that vanished without closing their connection (power
        // loss, cable pulled): their agents show offline within 30 s.
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .layer(auth::AuthLayer { node: node.clone() })
        .add_service(
            RaftServiceServer::new(raft::RaftApi::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(ClusterServiceServer::new(cluster::ClusterApi::new(node.clone())))
        .add_service(StoreServiceServer::new(store::StoreApi::new(node.clone())))
        .add_service(AgentServiceServer::new(agent::AgentApi::new(node.clone(), resolver.clone())))
        .add_service(FleetServiceServer::new(fleet::FleetApi::new(node.clone(), resolver)))
        .add_service(EventServiceServer::new(event::EventApi::new(node.clone())))
        .add_service(SecurityServiceServer::new(security::SecurityApi::new(node.clone())))
        .add_service(PolicyServiceServer::new(policy::PolicyApi::new(node.clone())))
        .add_service(RolloutServiceServer::new(rollout::RolloutApi::new(node.clone())))
        .add_service(health_service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept_task.abort();
    Ok(served?)
}

/// The authenticated caller, put there by [`auth`].
pub(crate) fn caller<T>(req: &tonic::Request<T>) -> auth::Caller {
    req.extensions().get::<auth::Caller>().cloned().unwrap_or(auth::Caller::Anonymous)
}

/// Marks a response with what an audited call acted on.
pub(crate) fn audited<T>(message: T, target: String) -> tonic::Response<T> {
    let mut resp = tonic::Response::new(message);
    resp.extensions_mut().insert(auth::AuditTarget(target));
    resp
}

#[cfg(test)]
mod tests;
