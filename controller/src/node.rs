//! A controller node: its data directory, its Raft instance, and the operations the gRPC
//! services expose (writes, linearizable reads, membership changes, status).
//!
//! Writes that reach a follower are forwarded to the leader over the peer transport; a
//! read is linearizable by asking the leader for a read index (ReadIndex) and waiting until
//! this node has applied up to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bulwark_proto::v1::cluster_service_client::ClusterServiceClient;
use bulwark_proto::v1::{RaftPayload, ReadIndexRequest, StatusRequest};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::fleet::batch::{self, NoteBatcher};
use crate::raft::group::{self, WriteGroup};
use crate::raft::network::{PeerError, Peers};
use crate::raft::state_machine::{Reader, open_storage};
use crate::raft::{NodeId, Raft, Snapshot, decode, encode};
use crate::store::{InvalidCommand, Proposal, WriteOutcome};
use crate::tls::{TlsError, TlsFiles, TlsMaterial};

/// Timing and log-compaction settings.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept in the log behind the snapshot, so slightly lagging followers catch up
    /// from the log instead of a snapshot.
    pub snapshot_keep_logs: u64,
    /// How long a write or a linearizable read may wait for a quorum.
    pub quorum_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            snapshot_threshold: 10_000,
            snapshot_keep_logs: 1_000,
            quorum_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// The address peers and clients reach this node at (`host:port`).
    pub advertise: String,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub tls: TlsFiles,
    pub tuning: Tuning,
    /// The CA key: with it this node signs agent certificates (enrollment, renewal).
    pub ca_key: Option<PathBuf>,
    /// Lifetime of agent certificates.
    pub agent_cert_ttl: Duration,
    /// Enrollments per minute accepted from one source address.
    pub enroll_rate: u32,
    /// How long and how many agent events are kept.
    pub event_retention: crate::fleet::Retention,
}

/// Why a node could not start. Each message names the problem and the flag or path.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data dir {path}: {source}", path = path.display())]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(
        "data dir {path} belongs to node {found_node} of cluster {found_cluster:?}, but this is node {node} of cluster {cluster:?}; use an empty --data-dir for a new node",
        path = path.display()
    )]
    ForeignDataDir {
        path: PathBuf,
        found_node: NodeId,
        found_cluster: String,
        node: NodeId,
        cluster: String,
    },
    #[error("data dir {path} is in use by another bulwark-controller process", path = path.display())]
    DataDirLocked { path: PathBuf },
    #[error("cannot open the store in {path}: {reason}", path = path.display())]
    Store { path: PathBuf, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

impl StartError {
    /// The process exit code for this error: 2 for what the operator must fix in flags,
    /// files or the data dir; 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Raft(_) | StartError::Store { .. } => 1,
            _ => 2,
        }
    }
}

/// Why an operation failed; `grpc::status` maps each to a gRPC status once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    #[error("node {id} is not the leader; the leader is node {leader_id} at {leader_addr}")]
    NotLeader { id: NodeId, leader_id: NodeId, leader_addr: String },
    #[error("no leader is elected: is a majority of voters up and reachable?")]
    NoLeader,
    #[error("no quorum: {0}")]
    NoQuorum(String),
    #[error("the leader, node {id} at {addr}, is unreachable: {reason}")]
    LeaderUnreachable { id: NodeId, addr: String, reason: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Refused(String),
    /// A status returned by the leader for a forwarded call, passed on unchanged.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InvalidCommand> for NodeError {
    fn from(e: InvalidCommand) -> Self {
        NodeError::Invalid(e.to_string())
    }
}

/// The result of a committed write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub outcome: WriteOutcome,
    pub log_index: u64,
}

/// A member as reported by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// The node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Learner,
    Candidate,
    Uninitialized,
}

/// One node's own view of the cluster.
#[derive(Debug, Clone)]
pub struct Status {
    pub node_id: NodeId,
    pub addr: String,
    pub cluster_name: String,
    pub role: Role,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub leader: Option<(NodeId, String)>,
    pub members: Vec<MemberInfo>,
    pub revision: u64,
    pub snapshot_index: u64,
    /// On a leader: time since a majority last acknowledged it.
    pub quorum_ack_age: Option<Duration>,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Stale,
}

/// The identity file in a data dir, so a data dir is never used for another node or cluster.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct DataDirIdentity {
    cluster_name: String,
    node_id: NodeId,
}

const IDENTITY_FILE: &str = "bulwark-node.json";

/// Creates `path` with the identity of node `node_id` of `cluster_name` (for restore).
pub fn create_data_dir(path: &Path, cluster_name: &str, node_id: NodeId) -> Result<(), StartError> {
    let io = |source| StartError::DataDir { path: path.to_owned(), source };
    std::fs::create_dir_all(path).map_err(io)?;
    let ours = DataDirIdentity { cluster_name: cluster_name.to_owned(), node_id };
    let bytes =
        serde_json::to_vec_pretty(&ours).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    write_atomically(&path.join(IDENTITY_FILE), &bytes).map_err(io)
}

fn check_data_dir(config: &NodeConfig) -> Result<(), StartError> {
    let path = &config.data_dir;
    let io = |source| StartError::DataDir { path: path.clone(), source };
    std::fs::create_dir_all(path).map_err(io)?;
    let file = path.join(IDENTITY_FILE);
    let ours =
        DataDirIdentity { cluster_name: config.cluster_name.clone(), node_id: config.node_id };
    match std::fs::read(&file) {
        Ok(bytes) => {
            let found: DataDirIdentity = serde_json::from_slice(&bytes).map_err(|e| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a bulwark node identity: {e}", file.display()),
                ))
            })?;
            if found != ours {
                return Err(StartError::ForeignDataDir {
                    path: path.clone(),
                    found_node: found.node_id,
                    found_cluster: found.cluster_name,
                    node: ours.node_id,
                    cluster: ours.cluster_name,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::read_dir(path).map_err(io)?.next().is_some() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the directory is not empty and holds no bulwark node identity",
                )));
            }
            let bytes = serde_json::to_vec_pretty(&ours)
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            write_atomically(&file, &bytes).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes `bytes` to `path` through a temp file, fsyncs it, renames it, fsyncs the dir.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

pub(crate) fn open_sled(path: &Path) -> Result<sled::Db, StartError> {
    let sled_dir = path.join("sled");
    sled::Config::new().path(&sled_dir).open().map_err(|e| match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            StartError::DataDirLocked { path: path.to_owned() }
        }
        sled::Error::Io(io) if io.to_string().contains("lock") => {
            StartError::DataDirLocked { path: path.to_owned() }
        }
        other => StartError::Store { path: sled_dir.clone(), reason: other.to_string() },
    })
}

/// A running node. Cheap to share: services hold an `Arc<Node>`.
pub struct Node {
    pub id: NodeId,
    pub addr: String,
    pub cluster_name: String,
    pub raft: Raft,
    pub reader: Reader,
    pub peers: Peers,
    pub tls: TlsMaterial,
    /// Present when started with `--ca-key`.
    pub issuing: Option<crate::security::Issuing>,
    pub enroll_limiter: crate::grpc::agent::RateLimiter,
    /// Random per process start: streams served before a restart are over.
    pub boot: u64,
    pub metrics: crate::metrics::Metrics,
    /// Groups note writes (reports, presence, beats) into one Raft entry.
    pub notes: NoteBatcher,
    /// Groups the writes this node proposes as leader into Raft entries.
    writes: WriteGroup,
    tuning: Tuning,
}

impl Node {
    /// Checks the data dir and TLS files, opens the store and starts Raft.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, StartError> {
        if config.cluster_name.is_empty()
            || config.cluster_name.parse::<tonic::metadata::MetadataValue<_>>().is_err()
        {
            return Err(StartError::Config(format!(
                "--cluster-name {:?} must be non-empty printable ASCII",
                config.cluster_name
            )));
        }
        if config.node_id == 0 {
            return Err(StartError::Config("--node-id must be at least 1".into()));
        }
        let tls = TlsMaterial::load(&config.tls)?;
        let issuing = match &config.ca_key {
            Some(key) => Some(crate::security::Issuing {
                ca: crate::pki::Ca::load(&config.tls.ca, key)
                    .map_err(|e| StartError::Config(format!("--ca-key: {e}")))?,
                agent_validity: config.agent_cert_ttl,
            }),
            None => None,
        };
        check_data_dir(&config)?;
        let db = open_sled(&config.data_dir)?;
        let (log, sm) = open_storage(&db, &config.data_dir).map_err(|e| StartError::Store {
            path: config.data_dir.clone(),
            reason: e.to_string(),
        })?;
        let reader = sm.reader();
        let t = &config.tuning;
        let raft_config = openraft::Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: t.heartbeat.as_millis() as u64,
            election_timeout_min: t.election_timeout_min.as_millis() as u64,
            election_timeout_max: t.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_threshold),
            max_in_snapshot_log_to_keep: t.snapshot_keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let peer_tls =
            tls.rustls_peer_config().map_err(|e| StartError::Config(format!("TLS: {e}")))?;
        let peers = Peers::for_controller(peer_tls, config.cluster_name.clone());
        let raft = Raft::new(config.node_id, Arc::new(raft_config), peers.clone(), log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        tracing::info!(node_id = config.node_id, addr = %config.advertise, "raft started");
        Ok(Arc::new_cyclic(|node: &Weak<Node>| Node {
            notes: NoteBatcher::spawn(batch::Limits::default(), write_through(node.clone())),
            writes: WriteGroup::spawn(raft.clone(), group::Limits::default()),
            id: config.node_id,
            addr: config.advertise,
            cluster_name: config.cluster_name,
            raft,
            reader,
            peers,
            tls,
            issuing,
            enroll_limiter: crate::grpc::agent::RateLimiter::new(config.enroll_rate),
            tuning: config.tuning,
            boot: rand::random(),
            metrics: crate::metrics::Metrics::default(),
        }))
    }

    fn metrics(&self) -> openraft::RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    fn member_addr(m: &openraft::RaftMetrics<NodeId, BasicNode>, id: NodeId) -> Option<String> {
        m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// The known leader other than this node, or an error when there is none.
    fn remote_leader(&self) -> Result<Option<(NodeId, String)>, NodeError> {
        let m = self.metrics();
        match m.current_leader {
            Some(id) if id == self.id => Ok(None),
            Some(id) => Ok(Some((id, Self::member_addr(&m, id).ok_or(NodeError::NoLeader)?))),
            None => Err(NodeError::NoLeader),
        }
    }

    fn not_leader(&self) -> NodeError {
        match self.remote_leader() {
            Ok(Some((leader_id, leader_addr))) => {
                NodeError::NotLeader { id: self.id, leader_id, leader_addr }
            }
            // Leadership moved while the call ran and no new leader is known yet: transient.
            Ok(None) => NodeError::Unavailable("leadership changed during the call; retry".into()),
            Err(e) => e,
        }
    }

    /// Fails fast, before proposing, when this leader has not heard from a quorum within
    /// its lease: a write then could not commit, and must not be applied later.
    fn check_quorum(&self) -> Result<(), NodeError> {
        let m = self.metrics();
        let lease = self.tuning.election_timeout_max.as_millis() as u64;
        match m.millis_since_quorum_ack {
            Some(ms) if ms <= lease => Ok(()),
            Some(ms) => Err(NodeError::NoQuorum(format!(
                "node {} is leader but has not heard from a majority of voters for {ms} ms; is a majority of voters up?",
                self.id
            ))),
            // A single-voter cluster is its own quorum.
            None => Ok(()),
        }
    }

    /// Commits a proposal: on the leader directly, elsewhere by forwarding to the leader.
    #[tracing::instrument(level = "debug", skip(self, proposal))]
    pub async fn write(&self, proposal: Proposal) -> Result<Written, NodeError> {
        proposal.command.validate()?;
        match self.remote_leader()? {
            None => self.write_local(proposal).await,
            Some((id, addr)) => self.forward_write(id, &addr, proposal).await,
        }
    }

    /// Commits a proposal on this node, which must be the leader.
    pub async fn write_local(&self, proposal: Proposal) -> Result<Written, NodeError> {
        self.check_quorum()?;
        let t = self.tuning.quorum_timeout;
        match tokio::time::timeout(t, self.writes.write(proposal)).await {
            Err(_) => Err(NodeError::NoQuorum(format!(
                "the write was not committed within {} s; is a majority of voters up?",
                t.as_secs_f32()
            ))),
            Ok(None) => Err(NodeError::ShuttingDown),
            Ok(Some(Ok((outcome, log_id)))) => Ok(Written { outcome, log_index: log_id.index }),
            Ok(Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))))) => {
                Err(self.not_leader())
            }
            Ok(Some(Err(e))) => Err(raft_error(e)),
        }
    }

    async fn forward_write(
        &self,
        id: NodeId,
        addr: &str,
        proposal: Proposal,
    ) -> Result<Written, NodeError> {
        let unreachable =
            |reason: String| NodeError::LeaderUnreachable { id, addr: addr.to_owned(), reason };
        let data = encode(&proposal).map_err(|e| NodeError::Internal(e.to_string()))?;
        let mut client = self.peers.raft_client(addr).map_err(|e| unreachable(e.to_string()))?;
        let timeout = self.tuning.quorum_timeout + Duration::from_secs(1);
        let reply = client
            .forward_write(self.peers.request(RaftPayload { data }, Some(timeout)))
            .await
            .map_err(|status| forwarded_status(status, unreachable))?;
        decode(&reply.into_inner().data).map_err(|e| NodeError::Internal(e.to_string()))
    }

    /// Waits until a read on this node is at least as new as the latest commit.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn read_barrier(&self, consistency: Consistency) -> Result<(), NodeError> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        let index = match self.remote_leader()? {
            None => self.read_index().await?,
            Some((id, addr)) => {
                let unreachable = |reason: String| NodeError::LeaderUnreachable {
                    id,
                    addr: addr.clone(),
                    reason,
                };
                let mut client =
                    self.peers.raft_client(&addr).map_err(|e| unreachable(e.to_string()))?;
                let req = self.peers.request(ReadIndexRequest {}, Some(self.tuning.quorum_timeout));
                let reply =
                    client.read_index(req).await.map_err(|s| forwarded_status(s, unreachable))?;
                reply.into_inner().index
            }
        };
        self.raft
            .wait(Some(self.tuning.quorum_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|e| {
                NodeError::NoQuorum(format!(
                    "this node did not catch up to the read index {index}: {e}"
                ))
            })?;
        Ok(())
    }

    /// On the leader: confirms leadership with a quorum and returns the index a read must
    /// wait for (ReadIndex).
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        self.check_quorum()?;
        let t = self.tuning.quorum_timeout;
        match tokio::time::timeout(t, self.raft.get_read_log_id()).await {
            Err(_) => Err(NodeError::NoQuorum(format!(
                "leadership was not confirmed by a majority within {} s",
                t.as_secs_f32()
            ))),
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(_))) => Err(self.not_leader()),
            Ok(Err(e)) => Err(raft_error(e)),
        }
    }

    /// This node's own view.
    pub fn status(&self) -> Status {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, n)| MemberInfo { id: *id, addr: n.addr.clone(), voter: voters.contains(id) })
            .collect();
        let role = if members.is_empty() {
            Role::Uninitialized
        } else {
            match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Follower | ServerState::Shutdown => {
                    if voters.contains(&self.id) {
                        Role::Follower
                    } else {
                        Role::Learner
                    }
                }
            }
        };
        let leader = m.current_leader.and_then(|id| Self::member_addr(&m, id).map(|a| (id, a)));
        Status {
            node_id: self.id,
            addr: self.addr.clone(),
            cluster_name: self.cluster_name.clone(),
            role,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader,
            members,
            revision: self.reader.revision(),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            quorum_ack_age: m.millis_since_quorum_ack.map(Duration::from_millis),
        }
    }

    /// Asks the node at `addr` for its status, to check it before it joins.
    pub async fn probe(&self, addr: &str) -> Result<bulwark_proto::v1::NodeStatus, String> {
        let channel = self.peers.channel(addr).map_err(|e: PeerError| e.to_string())?;
        let mut client = ClusterServiceClient::new(channel);
        client
            .status(self.peers.request(StatusRequest {}, Some(Duration::from_secs(3))))
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_owned())
    }

    /// Checks that the node at `addr` is node `id` of this cluster and not yet a member of
    /// another one.
    async fn check_joiner(&self, id: NodeId, addr: &str) -> Result<(), NodeError> {
        let remote = self.probe(addr).await.map_err(|reason| {
            NodeError::Unreachable(format!("cannot reach node {id} at {addr}: {reason}"))
        })?;
        if remote.node_id != id {
            return Err(NodeError::Refused(format!(
                "the controller at {addr} is node {}, not node {id}",
                remote.node_id
            )));
        }
        if remote.cluster_name != self.cluster_name {
            return Err(NodeError::Refused(format!(
                "node {id} at {addr} belongs to cluster {:?}, not {:?}",
                remote.cluster_name, self.cluster_name
            )));
        }
        let ours: BTreeSet<NodeId> = self.status().members.iter().map(|m| m.id).collect();
        if !remote.members.is_empty()
            && !remote.members.iter().any(|m| ours.contains(&m.id) && m.id != id)
        {
            return Err(NodeError::Refused(format!(
                "node {id} at {addr} already belongs to another cluster (its data dir holds members {:?}); wipe its data dir to add it here",
                remote.members.iter().map(|m| m.id).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// Initializes a new cluster with `members` as voters (this node alone when empty).
    pub async fn init(&self, members: Vec<MemberInfo>) -> Result<u64, NodeError> {
        let mut nodes = BTreeMap::new();
        nodes.insert(self.id, BasicNode { addr: self.addr.clone() });
        for m in members {
            if m.id == self.id {
                if m.addr != self.addr {
                    return Err(NodeError::Invalid(format!(
                        "member {} is this node, which listens at {}, not {}",
                        m.id, self.addr, m.addr
                    )));
                }
                continue;
            }
            self.check_joiner(m.id, &m.addr).await?;
            nodes.insert(m.id, BasicNode { addr: m.addr });
        }
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                // Report the members once this node has applied the initial membership.
                self.raft
                    .wait(Some(Duration::from_secs(5)))
                    .metrics(|m| m.membership_config.membership().nodes().next().is_some(), "init")
                    .await
                    .map_err(|e| {
                        NodeError::Internal(format!("initial membership not applied: {e}"))
                    })?;
                Ok(0)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(NodeError::AlreadyExists("the cluster is already initialized".into()))
            }
            Err(RaftError::APIError(e)) => Err(NodeError::Invalid(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    fn require_leader(&self) -> Result<(), NodeError> {
        match self.remote_leader()? {
            None => Ok(()),
            Some(_) => Err(self.not_leader()),
        }
    }

    /// Adds a learner and returns once it has caught up (by log or snapshot).
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<u64, NodeError> {
        self.require_leader()?;
        let status = self.status();
        if let Some(m) = status.members.iter().find(|m| m.id == id) {
            if m.addr == addr {
                return Ok(0);
            }
            return Err(NodeError::AlreadyExists(format!(
                "node id {id} is already in use by the member at {}",
                m.addr
            )));
        }
        if let Some(m) = status.members.iter().find(|m| m.addr == addr) {
            return Err(NodeError::AlreadyExists(format!(
                "address {addr} is already used by node {}",
                m.id
            )));
        }
        self.check_joiner(id, &addr).await?;
        tracing::info!(id, %addr, "adding learner");
        let resp = self.raft.add_learner(id, BasicNode { addr }, true).await;
        self.membership_result(resp)
    }

    /// Makes learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<u64, NodeError> {
        self.require_leader()?;
        let status = self.status();
        match status.members.iter().find(|m| m.id == id) {
            None => {
                return Err(NodeError::NotFound(format!(
                    "node {id} is not a member; add it as a learner first"
                )));
            }
            Some(m) if m.voter => return Ok(0),
            Some(_) => {}
        }
        tracing::info!(id, "promoting learner to voter");
        let resp = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await;
        self.membership_result(resp)
    }

    /// Removes voter or learner `id`.
    pub async fn remove(&self, id: NodeId) -> Result<u64, NodeError> {
        self.require_leader()?;
        let status = self.status();
        let change = match status.members.iter().find(|m| m.id == id) {
            None => return Err(NodeError::NotFound(format!("node {id} is not a member"))),
            Some(m) if m.voter => {
                if status.members.iter().filter(|m| m.voter).count() == 1 {
                    return Err(NodeError::Refused(format!(
                        "node {id} is the last voter; a cluster needs one"
                    )));
                }
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            }
            Some(_) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        tracing::info!(id, "removing member");
        let resp = self.raft.change_membership(change, false).await;
        self.membership_result(resp)
    }

    fn membership_result(
        &self,
        resp: Result<
            openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
            RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
        >,
    ) -> Result<u64, NodeError> {
        match resp {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_leader())
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(NodeError::Refused(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }

    /// Builds a snapshot of everything applied so far and returns it.
    pub async fn snapshot(&self) -> Result<Snapshot, NodeError> {
        let applied = self.metrics().last_applied.map_or(0, |l| l.index);
        self.raft.trigger().snapshot().await.map_err(fatal)?;
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot.map_or(0, |l| l.index) >= applied, "snapshot built")
            .await
            .map_err(|e| NodeError::Internal(format!("snapshot was not built: {e}")))?;
        self.raft
            .get_snapshot()
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?
            .ok_or_else(|| NodeError::Internal("no snapshot after building one".into()))
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// The note batcher's way to commit: [`Node::write`], while the node exists (the batcher
/// holds no strong reference, so dropping the node stops it).
fn write_through(node: Weak<Node>) -> batch::WriteFn {
    Arc::new(move |command| {
        let node = node.clone();
        Box::pin(async move {
            match node.upgrade() {
                Some(node) => node.write(command.into()).await,
                None => Err(NodeError::ShuttingDown),
            }
        })
    })
}

fn fatal(e: openraft::error::Fatal<NodeId>) -> NodeError {
    match e {
        openraft::error::Fatal::Stopped => NodeError::ShuttingDown,
        other => NodeError::Internal(other.to_string()),
    }
}

fn raft_error<E: std::fmt::Display>(e: RaftError<NodeId, E>) -> NodeError {
    match e {
        RaftError::Fatal(f) => fatal(f),
        RaftError::APIError(e) => NodeError::Internal(e.to_string()),
    }
}

/// A status from the leader for a forwarded call: transport failures mean the leader is
/// unreachable; anything else is the leader's answer, passed on.
fn forwarded_status(status: tonic::Status, unreachable: impl Fn(String) -> NodeError) -> NodeError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            if status.metadata().get(crate::grpc::status::ERROR_KIND).is_none() =>
        {
            unreachable(status.message().to_owned())
        }
        _ => NodeError::Remote(status),
    }
}
