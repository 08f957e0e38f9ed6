//! RaftService: openraft's RPCs from peers, plus forwarded writes and read-index requests.

use std::sync::Arc;

use bulwark_proto::v1::raft_service_server::RaftService;
use bulwark_proto::v1::{RaftPayload, ReadIndexReply, ReadIndexRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft::network::CLUSTER_HEADER;
use crate::raft::{decode, encode};
use crate::store::Proposal;

pub struct RaftApi {
    node: Arc<Node>,
}

impl RaftApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Refuses peers of another cluster: a node with a foreign data dir must not vote here.
    fn check_peer<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match req.metadata().get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()) {
            Some(name) if name == self.node.cluster_name => Ok(()),
            Some(name) => Err(Status::failed_precondition(format!(
                "peer belongs to cluster {name:?}; node {} belongs to {:?}",
                self.node.id, self.node.cluster_name
            ))),
            None => Err(Status::permission_denied("RaftService is for controller peers only")),
        }
    }
}

fn decode_payload<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    decode(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_peer(&req)?;
        let rpc = decode_payload(req)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.check_peer(&req)?;
        let rpc = decode_payload(req)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_peer(&req)?;
        let rpc = decode_payload(req)?;
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward_write(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.check_peer(&req)?;
        let proposal: Proposal = decode_payload(req)?;
        let written = self.node.write_local(proposal).await?;
        reply(&written)
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        self.check_peer(&req)?;
        let index = self.node.read_index().await?;
        Ok(Response::new(ReadIndexReply { index }))
    }
}
