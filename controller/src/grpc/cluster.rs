//! ClusterService: status and membership changes, and snapshot save.

use std::pin::Pin;
use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::cluster_service_server::ClusterService;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::node::{MemberInfo, Node, Role, Status as NodeStatus};
use crate::raft::state_machine::snapshot_revision;

/// Snapshot bytes per streamed chunk.
const CHUNK: usize = 1 << 20;

pub struct ClusterApi {
    node: Arc<Node>,
}

impl ClusterApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    fn membership_reply(&self, log_index: u64, target: String) -> Response<pb::MembershipReply> {
        let members = self.node.status().members.into_iter().map(member_to_pb).collect();
        super::audited(pb::MembershipReply { members, log_index }, target)
    }
}

fn member_to_pb(m: MemberInfo) -> pb::Member {
    pb::Member { id: m.id, addr: m.addr, voter: m.voter }
}

impl From<NodeStatus> for pb::NodeStatus {
    fn from(s: NodeStatus) -> Self {
        let role = match s.role {
            Role::Leader => pb::Role::Leader,
            Role::Follower => pb::Role::Follower,
            Role::Learner => pb::Role::Learner,
            Role::Candidate => pb::Role::Candidate,
            Role::Uninitialized => pb::Role::Uninitialized,
        };
        let (leader_id, leader_addr) = s.leader.unwrap_or_default();
        pb::NodeStatus {
            node_id: s.node_id,
            addr: s.addr,
            cluster_name: s.cluster_name,
            role: role as i32,
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            leader_id,
            leader_addr,
            members: s.members.into_iter().map(member_to_pb).collect(),
            revision: s.revision,
            snapshot_index: s.snapshot_index,
            quorum_ack_age_ms: s.quorum_ack_age.map(|d| d.as_millis() as u64),
        }
    }
}

fn check_addr(addr: &str) -> Result<(), Status> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(Status::invalid_argument(format!("address {addr:?} is not host:port"))),
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(self.node.status().into()))
    }

    async fn init(
        &self,
        req: Request<pb::InitRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let members = req
            .into_inner()
            .members
            .into_iter()
            .map(|m| {
                check_addr(&m.addr)?;
                Ok(MemberInfo { id: m.id, addr: m.addr, voter: true })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let target = if members.is_empty() {
            format!("node {} alone", self.node.id)
        } else {
            format!(
                "voters {}",
                members.iter().map(|m| m.id.to_string()).collect::<Vec<_>>().join(",")
            )
        };
        let index = self.node.init(members).await?;
        Ok(self.membership_reply(index, target))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("node id must be at least 1"));
        }
        check_addr(&req.addr)?;
        let target = format!("node {} at {}", req.id, req.addr);
        let index = self.node.add_learner(req.id, req.addr).await?;
        Ok(self.membership_reply(index, target))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let id = req.into_inner().id;
        let index = self.node.promote(id).await?;
        Ok(self.membership_reply(index, format!("node {id}")))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let id = req.into_inner().id;
        let index = self.node.remove(id).await?;
        Ok(self.membership_reply(index, format!("node {id}")))
    }

    type SnapshotSaveStream = ChunkStream;

    async fn snapshot_save(
        &self,
        _: Request<pb::SnapshotSaveRequest>,
    ) -> Result<Response<Self::SnapshotSaveStream>, Status> {
        let snapshot = self.node.snapshot().await?;
        let data = snapshot.snapshot.into_inner();
        let revision = snapshot_revision(&data)
            .map_err(|e| Status::internal(format!("snapshot is undecodable: {e}")))?;
        let last = snapshot.meta.last_log_id;
        let info = pb::SnapshotInfo {
            last_log_index: last.map_or(0, |l| l.index),
            last_log_term: last.map_or(0, |l| l.leader_id.term),
            revision,
            size: data.len() as u64,
            sha256: crate::backup::sha256_hex(&data),
            cluster_name: self.node.cluster_name.clone(),
        };
        let mut chunks: Vec<pb::SnapshotChunk> = data
            .chunks(CHUNK)
            .map(|c| pb::SnapshotChunk { info: None, data: c.to_vec() })
            .collect();
        match chunks.first_mut() {
            Some(first) => first.info = Some(info),
            None => chunks.push(pb::SnapshotChunk { info: Some(info), data: Vec::new() }),
        }
        Ok(Response::new(Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))))
    }
}
