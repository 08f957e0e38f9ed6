//! The Raft log and vote on sled.
//!
//! Invariant: nothing is reported to openraft as persisted before sled has flushed it. The
//! vote is flushed in `save_vote` before it returns; appended entries are flushed before the
//! `LogFlushed` callback fires, so a client write is acknowledged only once its entry is on
//! disk on a majority.
//!
//! Group commit: `append` writes the entries to sled and hands the callback to a flusher
//! task, so Raft keeps working while the disk syncs. The flusher takes every callback that
//! queued up while the previous fsync ran, syncs once, and completes them in order: one
//! fsync covers many appends under load, and a lone append still syncs at once.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, OnceLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote, decode, encode};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// The Raft log (tree `raft_log`, keyed by big-endian index) and its metadata
/// (tree `raft_meta`). Cheap to clone: clones share the same trees.
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// The flusher thread's queue, started on first append.
    flusher: Arc<OnceLock<std::sync::mpsc::Sender<LogFlushed<TypeConfig>>>>,
}

/// The flusher thread: syncs sled once for every batch of queued callbacks, then completes
/// them in order. A plain thread with a blocking `flush`, because sled's `flush_async`
/// hands each call to its own thread pool, which costs more than the sync under load.
fn run_flusher(db: sled::Db, rx: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let flushed = db.flush();
        for callback in batch {
            let result =
                flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
            callback.log_io_completed(result);
        }
    }
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            db: db.clone(),
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            flusher: Arc::default(),
        })
    }

    fn flusher(&self) -> Result<&std::sync::mpsc::Sender<LogFlushed<TypeConfig>>, StorageError> {
        if let Some(tx) = self.flusher.get() {
            return Ok(tx);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let db = self.db.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || run_flusher(db, rx))
            .map_err(|e| logs_err(ErrorVerb::Write, &e))?;
        Ok(self.flusher.get_or_init(|| tx))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let err = |e: &dyn std::error::Error| io_err(subject.clone(), ErrorVerb::Read, e);
        match self.meta.get(key).map_err(|e| err(&e))? {
            Some(bytes) => Ok(Some(decode(&bytes).map_err(|e| err(&e))?)),
            None => Ok(None),
        }
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let err = |e: &dyn std::error::Error| io_err(subject.clone(), ErrorVerb::Write, e);
        let bytes = encode(value).map_err(|e| err(&e))?;
        self.meta.insert(key, bytes).map_err(|e| err(&e))?;
        self.db.flush_async().await.map_err(|e| err(&e))?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let Some((_, bytes)) = self.log.last().map_err(|e| logs_err(ErrorVerb::Read, &e))? else {
            return Ok(None);
        };
        let entry: Entry = decode(&bytes).map_err(|e| logs_err(ErrorVerb::Read, &e))?;
        Ok(Some(entry.log_id))
    }

    /// Removes every entry with an index in `range` (inclusive bounds, as sled keys).
    fn remove_range(&self, from: u64, to_inclusive: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(from.to_be_bytes()..=to_inclusive.to_be_bytes()).keys() {
            batch.remove(key.map_err(|e| logs_err(ErrorVerb::Delete, &e))?);
        }
        self.log.apply_batch(batch).map_err(|e| logs_err(ErrorVerb::Delete, &e))
    }
}

pub(crate) fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &dyn std::error::Error,
) -> StorageError {
    StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::error(e.to_string())) }
}

fn logs_err(verb: ErrorVerb, e: &dyn std::error::Error) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

fn bound_to_key(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let range = (bound_to_key(range.start_bound()), bound_to_key(range.end_bound()));
        // An empty range (start > end) would make sled panic; it holds nothing.
        if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
            (&range.0, &range.1)
            && s > e
        {
            return Ok(Vec::new());
        }
        self.log
            .range(range)
            .values()
            .map(|v| {
                let v = v.map_err(|e| logs_err(ErrorVerb::Read, &e))?;
                decode(&v).map_err(|e| logs_err(ErrorVerb::Read, &e))
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED, ErrorSubject::Logs)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-applying from the last applied entry.
        let bytes =
            encode(&committed).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        self.meta
            .insert(COMMITTED, bytes)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        self.log.apply_batch(batch).map_err(|e| logs_err(ErrorVerb::Write, &e))?;
        // The flusher only stops when every store handle is gone; if it did, report it.
        if let Err(unsent) = self.flusher()?.send(callback) {
            unsent.0.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "truncating log");
        self.remove_range(log_id.index, u64::MAX)?;
        self.db.flush_async().await.map_err(|e| logs_err(ErrorVerb::Delete, &e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "purging log");
        // Record the purge point first: a crash in between leaves entries that are
        // already covered by it, never a gap.
        self.write_meta(LAST_PURGED, &log_id, ErrorSubject::Logs).await?;
        self.remove_range(0, log_id.index)
    }
}
