//! The peer transport: openraft's RPCs over tonic with mutual TLS. Each request carries
//! the sender's cluster name, so a node of another cluster is refused instead of joining.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_proto::v1::RaftPayload;
use bulwark_proto::v1::raft_service_client::RaftServiceClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, EntryPayload};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, ClientTlsConfig};

use super::{Entry, LogId, NodeId, TypeConfig, decode, encode};

/// Metadata key naming the sender's cluster on every peer request.
pub const CLUSTER_HEADER: &str = "x-bulwark-cluster";

/// Connections to the other controllers, one lazily connected channel per address.
#[derive(Clone)]
pub struct Peers {
    dial: Dial,
    cluster_name: String,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// How TLS connections are made.
#[derive(Clone)]
enum Dial {
    /// tonic's own TLS (administrators' clients).
    Tonic(ClientTlsConfig),
    /// Our rustls configuration, offering the peer ALPN: a controller dialling a peer.
    Peer(Arc<rustls::ClientConfig>),
}

impl Peers {
    pub fn new(tls: ClientTlsConfig, cluster_name: String) -> Self {
        Self { dial: Dial::Tonic(tls), cluster_name, channels: Arc::default() }
    }

    /// A controller's connections to its peers: their handshakes go before the agents' on
    /// a flooded peer (see [`crate::tls::PEER_ALPN`]), so an election right after a restart
    /// of the cluster does not wait for every agent to reconnect first.
    pub fn for_controller(tls: rustls::ClientConfig, cluster_name: String) -> Self {
        Self { dial: Dial::Peer(Arc::new(tls)), cluster_name, channels: Arc::default() }
    }

    /// A channel to `addr` (`host:port`), created on first use and then shared.
    pub fn channel(&self, addr: &str) -> Result<Channel, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let scheme = match self.dial {
            Dial::Tonic(_) => "https",
            // The connector does TLS itself; to tonic the connection is plain.
            Dial::Peer(_) => "http",
        };
        let endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
            .map_err(|_| PeerError::InvalidAddress(addr.to_owned()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.dial {
            Dial::Tonic(tls) => endpoint.tls_config(tls.clone())?.connect_lazy(),
            Dial::Peer(tls) => {
                let (tls, addr) = (tokio_rustls::TlsConnector::from(tls.clone()), addr.to_owned());
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                    dial_peer(tls.clone(), addr.clone())
                }))
            }
        };
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, PeerError> {
        Ok(RaftServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20))
    }

    /// Wraps a message with this cluster's name.
    pub fn request<T>(&self, message: T, timeout: Option<Duration>) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if !self.cluster_name.is_empty()
            && let Ok(v) = self.cluster_name.parse()
        {
            req.metadata_mut().insert(CLUSTER_HEADER, v);
        }
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        req
    }
}

/// TCP, then TLS with our rustls configuration, to the peer at `addr` (`host:port`); the
/// server is verified under the address's host, as tonic would.
async fn dial_peer(
    tls: tokio_rustls::TlsConnector,
    addr: String,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>
{
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => return Err(invalid(format!("peer address {addr} has no port"))),
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| invalid(format!("peer address {addr}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    Ok(hyper_util::rt::TokioIo::new(tls.connect(name, tcp).await?))
}

/// A peer address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid peer address {0:?} (expected host:port)")]
    InvalidAddress(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient { target, addr: node.addr.clone(), peers: self.clone() }
    }
}

/// openraft's handle to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .raft_client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let request = self.peers.request(RaftPayload { data }, Some(option.hard_ttl()));
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| status_to_rpc_error(&status))?.into_inner();
        let result: Result<Resp, E> =
            decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

fn status_to_rpc_error<E: std::error::Error>(
    status: &tonic::Status,
) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        // The peer is down, restarting, or not listening yet: openraft backs off.
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

/// The most entry bytes (keys and values) one AppendEntries carries. openraft 0.9 sends up
/// to `max_payload_entries` (300) entries at once and gives the call one heartbeat interval
/// (100 ms): 300 batches of notes would never fit, and a follower behind by that much would
/// never catch up. A call carries at least one entry.
pub const APPEND_BUDGET: usize = 4 << 20;

/// What an entry weighs against [`APPEND_BUDGET`]: its keys and values, plus a little per
/// command.
fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(p) => p.command.weight(32),
        EntryPayload::Blank | EntryPayload::Membership(_) => 64,
    }
}

/// Keeps the first entries of `rpc` that fit in `budget` (at least one); returns the log id
/// of the last one kept when some were left for the next call.
fn keep_within(rpc: &mut AppendEntriesRequest<TypeConfig>, budget: usize) -> Option<LogId> {
    let mut used = 0;
    let keep = rpc
        .entries
        .iter()
        .position(|e| {
            used += entry_bytes(e);
            used > budget
        })
        .map_or(rpc.entries.len(), |over| over.max(1));
    if keep == rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|e| e.log_id)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let sent_up_to = keep_within(&mut rpc, APPEND_BUDGET);
        let response = self.call(Method::Append, &rpc, &option).await?;
        // The follower took what was sent; openraft sends the rest next. Its commit index
        // is capped at what it holds, so a `leader_commit` beyond that is safe.
        Ok(match (response, sent_up_to) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (response, _) => response,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::store::Proposal;

    fn entry(index: u64, value_len: usize) -> Entry {
        let command = crate::store::Command::Note {
            key: "k".into(),
            value: vec![0; value_len],
            replace: true,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(std::sync::Arc::new(Proposal {
                request_id: None,
                command,
            })),
        }
    }

    fn request(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: sizes.iter().enumerate().map(|(i, n)| entry(i as u64 + 1, *n)).collect(),
        }
    }

    #[test]
    fn an_append_carries_what_fits_in_the_budget_and_at_least_one_entry() {
        let check = |sizes: &[usize], kept: usize, last: Option<u64>| {
            let mut rpc = request(sizes);
            assert_eq!(keep_within(&mut rpc, 1000).map(|l| l.index), last, "{sizes:?}");
            assert_eq!(rpc.entries.len(), kept, "{sizes:?}");
        };
        check(&[100, 100, 100], 3, None);
        check(&[], 0, None);
        check(&[400, 400, 400], 2, Some(2));
        check(&[5000, 10], 1, Some(1));
        check(&[5000], 1, None);
    }
}
