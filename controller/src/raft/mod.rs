//! The openraft pieces: type configuration, the file-backed log store, the sled-backed state
//! machine, and the gRPC peer network.

// openraft's storage traits return `StorageError` (224 bytes) by value; helpers that
// build it follow the same signature rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

pub mod group;
pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

use crate::store::{Applied, Proposal};

pub use log_store::LogStore;
pub use state_machine::StateMachine;

/// A controller node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Bulwark's Raft type configuration.
    pub TypeConfig:
        // Shared, not copied: the log cache, the replication to each follower and the
        // apply all hold the same entry (postcard encodes it exactly as a `Proposal`).
        D = Arc<Proposal>,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// Encodes a value for sled or the wire (postcard: compact, non-self-describing).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}
