//! The controller's gRPC server: one mutual-TLS listener serving RaftService (peers),
//! ClusterService and StoreService (admins), gRPC health and reflection. Handlers are
//! thin: they convert prost types and call [`Node`]; errors become statuses in
//! [`status`] only.

mod cluster;
mod raft;
pub mod status;
mod store;

use std::future::Future;
use std::sync::Arc;

use bulwark_proto::v1::cluster_service_server::ClusterServiceServer;
use bulwark_proto::v1::raft_service_server::RaftServiceServer;
use bulwark_proto::v1::store_service_server::StoreServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::node::Node;

/// Largest gRPC message accepted (snapshots and big appends travel in one message).
const MAX_MESSAGE: usize = 256 << 20;

/// Serves the node's services on `listener` until `shutdown` resolves.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RaftServiceServer<raft::RaftApi>>().await;
    health.set_serving::<ClusterServiceServer<cluster::ClusterApi>>().await;
    health.set_serving::<StoreServiceServer<store::StoreApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bulwark_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            tracing::error!(error = %e, "reflection descriptors are invalid");
            e
        });
    let mut router = tonic::transport::Server::builder()
        .tls_config(node.tls.server_config())?
        .tcp_nodelay(true)
        .add_service(
            RaftServiceServer::new(raft::RaftApi::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(ClusterServiceServer::new(cluster::ClusterApi::new(node.clone())))
        .add_service(StoreServiceServer::new(store::StoreApi::new(node.clone())))
        .add_service(health_service);
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown).await
}
