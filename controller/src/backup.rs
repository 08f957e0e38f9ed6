//! Backups: the snapshot file `bulwarkctl snapshot save` writes (a header line with the
//! snapshot's description and SHA-256, then the data) and `bulwark-controller restore`,
//! which checks such a file and seeds a new node's data dir from it: a one-voter cluster
//! holding every record, its history and the audit log, that more nodes then join.
//!
//! File format, version 1:
//! ```text
//! bulwark-snapshot v1 {"cluster_name":...,"revision":R,"last_log_index":I,"last_log_term":T,"size":N,"sha256":"..."}\n
//! <N bytes: the state machine snapshot>
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Membership};
use serde::{Deserialize, Serialize};

use crate::node::StartError;
use crate::raft::state_machine::snapshot_revision;
use crate::raft::{LogId, NodeId, SnapshotMeta, StoredMembership, Vote};

const MAGIC: &str = "bulwark-snapshot v1 ";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// What the header line of a snapshot file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub cluster_name: String,
    pub revision: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub size: u64,
    pub sha256: String,
}

impl SnapshotHeader {
    pub fn line(&self) -> String {
        format!("{MAGIC}{}\n", serde_json::to_string(self).unwrap_or_default())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a Bulwark snapshot file ({reason})")]
    NotASnapshot { path: PathBuf, reason: String },
    #[error(
        "{path}: truncated: the header promises {expected} bytes of data, the file has {found}"
    )]
    Truncated { path: PathBuf, expected: u64, found: u64 },
    #[error("{path}: corrupted: SHA-256 of the data is {found}, the header says {expected}")]
    Corrupted { path: PathBuf, expected: String, found: String },
    #[error("{path}: the data does not decode as a snapshot: {reason}")]
    Undecodable { path: PathBuf, reason: String },
}

/// Reads and checks a snapshot file: header, length, checksum, decodability.
pub fn read_snapshot_file(path: &Path) -> Result<(SnapshotHeader, Vec<u8>), BackupError> {
    let io = |source| BackupError::Io { path: path.to_owned(), source };
    let not = |reason: String| BackupError::NotASnapshot { path: path.to_owned(), reason };
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io)?;
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        return Err(not("no header line".into()));
    };
    let line = std::str::from_utf8(&bytes[..newline]).map_err(|_| not("binary header".into()))?;
    let json = line
        .strip_prefix(MAGIC)
        .ok_or_else(|| not(format!("the first line does not start with {:?}", MAGIC.trim())))?;
    let header: SnapshotHeader =
        serde_json::from_str(json).map_err(|e| not(format!("header: {e}")))?;
    let data = bytes.split_off(newline + 1);
    if data.len() as u64 != header.size {
        return Err(BackupError::Truncated {
            path: path.to_owned(),
            expected: header.size,
            found: data.len() as u64,
        });
    }
    let found = sha256_hex(&data);
    if found != header.sha256 {
        return Err(BackupError::Corrupted {
            path: path.to_owned(),
            expected: header.sha256.clone(),
            found,
        });
    }
    snapshot_revision(&data)
        .map_err(|e| BackupError::Undecodable { path: path.to_owned(), reason: e.to_string() })?;
    Ok((header, data))
}

/// Where and as whom to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub from: PathBuf,
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// The address the node will be a member at (its `--advertise`).
    pub advertise: String,
    pub cluster_name: String,
}

/// Seeds an empty data dir from a snapshot file: the node starts as the only voter of a
/// cluster that holds the snapshot's state, at the snapshot's log position (purged up to
/// it, so nodes added later receive the snapshot, never an empty log).
pub async fn restore(opts: &RestoreOptions) -> Result<SnapshotHeader, StartError> {
    let (header, data) =
        read_snapshot_file(&opts.from).map_err(|e| StartError::Config(e.to_string()))?;
    if opts.node_id == 0 {
        return Err(StartError::Config("--node-id must be at least 1".into()));
    }
    if opts.advertise.is_empty() {
        return Err(StartError::Config("--advertise: the address this node is a member at".into()));
    }
    let dir = &opts.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(StartError::Config(format!(
            "{} is not empty: restore seeds a new, empty data dir",
            dir.display()
        )));
    }
    crate::node::create_data_dir(dir, &opts.cluster_name, opts.node_id)?;
    let store_err =
        |e: &dyn std::fmt::Display| StartError::Store { path: dir.clone(), reason: e.to_string() };
    let db = crate::node::open_sled(dir)?;
    let (mut log, mut sm) =
        crate::raft::state_machine::open_storage(&db, dir).map_err(|e| store_err(&e))?;
    // A term-1 leader at the snapshot's index: the node's own vote, committed.
    let leader = CommittedLeaderId::new(1, opts.node_id);
    let last = LogId::new(leader, header.last_log_index.max(1));
    let members = BTreeMap::from([(opts.node_id, BasicNode { addr: opts.advertise.clone() })]);
    let membership = Membership::new(vec![BTreeSet::from([opts.node_id])], members);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}", header.sha256.get(..12).unwrap_or_default()),
    };
    sm.install_snapshot(&meta, Box::new(Cursor::new(data))).await.map_err(|e| store_err(&e))?;
    let mut vote = Vote::new(1, opts.node_id);
    vote.commit();
    log.save_vote(&vote).await.map_err(|e| store_err(&e))?;
    log.save_committed(Some(last)).await.map_err(|e| store_err(&e))?;
    log.purge(last).await.map_err(|e| store_err(&e))?;
    db.flush_async().await.map_err(|e| store_err(&e))?;
    Ok(header)
}
