//! The one place node errors become gRPC statuses.
//!
//! Metadata set here is part of the contract:
//! - `x-bulwark-error`: the error kind (`not-leader`, `no-leader`, `no-quorum`, ...), so a
//!   client can tell a server's answer from a transport failure;
//! - `x-bulwark-leader-id` / `x-bulwark-leader-addr`: where to send a call this node refused
//!   because it is not the leader (bulwarkctl follows it);
//! - `x-bulwark-actual-revision`: the current revision after a failed compare-and-set.

use tonic::{Code, Status};

use crate::node::NodeError;
use crate::raft::state_machine::ReadError;

pub const ERROR_KIND: &str = "x-bulwark-error";
pub const LEADER_ID: &str = "x-bulwark-leader-id";
pub const LEADER_ADDR: &str = "x-bulwark-leader-addr";
pub const ACTUAL_REVISION: &str = "x-bulwark-actual-revision";

fn with_meta(code: Code, message: String, pairs: &[(&'static str, String)]) -> Status {
    let mut status = Status::new(code, message);
    for (k, v) in pairs {
        if let Ok(v) = v.parse() {
            status.metadata_mut().insert(*k, v);
        }
    }
    status
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        let kind = |k: &str| (ERROR_KIND, k.to_owned());
        match e {
            NodeError::NotLeader { leader_id, leader_addr, .. } => with_meta(
                Code::Unavailable,
                message,
                &[
                    kind("not-leader"),
                    (LEADER_ID, leader_id.to_string()),
                    (LEADER_ADDR, leader_addr),
                ],
            ),
            NodeError::NoLeader => with_meta(Code::Unavailable, message, &[kind("no-leader")]),
            NodeError::NoQuorum(_) => with_meta(Code::Unavailable, message, &[kind("no-quorum")]),
            NodeError::LeaderUnreachable { .. } => {
                with_meta(Code::Unavailable, message, &[kind("leader-unreachable")])
            }
            NodeError::ShuttingDown => {
                with_meta(Code::Unavailable, message, &[kind("shutting-down")])
            }
            NodeError::Invalid(_) => Status::invalid_argument(message),
            NodeError::Unauthenticated(_) => Status::unauthenticated(message),
            NodeError::Unavailable(_) => with_meta(Code::Unavailable, message, &[kind("busy")]),
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::AlreadyExists(_) => Status::already_exists(message),
            NodeError::Unreachable(_) => {
                with_meta(Code::FailedPrecondition, message, &[kind("unreachable")])
            }
            NodeError::Refused(_) => Status::failed_precondition(message),
            NodeError::Remote(status) => status,
            NodeError::Internal(_) => Status::internal(message),
        }
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Compacted { .. } => Status::out_of_range(e.to_string()),
            ReadError::Storage(_) | ReadError::Corrupt(_) => Status::internal(e.to_string()),
        }
    }
}

/// A compare-and-set that did not match.
pub fn conflict(kind: &str, key: &str, expected: u64, actual: u64) -> Status {
    with_meta(
        Code::FailedPrecondition,
        format!("compare-and-set failed: {kind}/{key} is at revision {actual}, not {expected}"),
        &[(ERROR_KIND, "conflict".into()), (ACTUAL_REVISION, actual.to_string())],
    )
}
