//! The Bulwark controller: a Raft-replicated (openraft) store of typed, revisioned
//! records on sled, served over mutual-TLS gRPC (tonic + rustls).
//!
//! [`run`] is what the `bulwark-controller` binary calls; [`client`] is what `bulwarkctl`,
//! the lab and the benchmarks use to talk to a cluster.

pub mod backup;
pub mod client;
pub mod config;
pub mod console;
pub mod ctl;
pub mod fleet;
pub mod grpc;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod policy;
pub mod raft;
pub mod report;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod tls;

use std::future::Future;

use tokio::net::TcpListener;

pub use node::{NodeConfig, StartError};

/// Binds the controller's listener, naming the address when it is taken.
pub async fn bind(addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr: addr.to_owned(), source })
}

/// Runs a controller node on `listener` until `shutdown` resolves, then stops Raft.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    http: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartError> {
    let retention = config.event_retention;
    let node = node::Node::start(config).await?;
    fleet::spawn_beats(node.clone());
    fleet::spawn_retention(node.clone(), retention);
    metrics::spawn_leader_watch(node.clone());
    let http_task = http.map(|l| tokio::spawn(metrics::serve(node.clone(), l)));
    policy::rollout::spawn_driver(node.clone());
    let resolver = policy::resolver::Resolver::spawn(node.clone())
        .map_err(|e| StartError::Raft(format!("cannot load the state to resolve from: {e}")))?;
    let served = grpc::serve(node.clone(), resolver, listener, shutdown).await;
    if let Some(task) = http_task {
        task.abort();
    }
    node.shutdown().await;
    served.map_err(|e| match e {
        grpc::ServeError::Tls(why) => StartError::Config(format!("TLS: {why}")),
        other => StartError::Raft(format!("gRPC server failed: {other}")),
    })
}
