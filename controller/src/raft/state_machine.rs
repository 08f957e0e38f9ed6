//! The state machine on sled: typed records, the cluster-wide revision, the change history
//! watchers resume from, and the current snapshot.
//!
//! Layout of tree `sm` (one tree, so every apply is one atomic sled batch):
//! - `r/<kind>\0<key>` → [`Record`]
//! - `h/<revision, big-endian><index>` → [`Change`] (the newest [`HISTORY_KEEP`] revisions;
//!   a transaction's changes share one revision)
//! - `m/applied`, `m/membership`, `m/revision` → applied log id, membership, revision
//! - `a/<key>` → an admin audit entry (no revision, never replaced)
//! - `n/<key>` → a note: agent status, presence, agent events, node beats (no revision)
//! - `d/<request id>` → the [`WriteOutcome`] of a recent client request, and
//!   `x/<sequence>` → the request ids one entry remembered (16 bytes each; a grouped entry
//!   holds several), keyed by the first one's number in the order ids were remembered, so
//!   the newest [`DEDUPE_WINDOW`] ids are kept whatever the entries held (older data dirs
//!   keyed one id by its log index, which sorts before)
//!
//! Tree `sm_snapshot` holds the newest snapshot (meta and data).

use std::collections::HashMap;
use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::io_err;
use super::{
    Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, decode,
    encode,
};
use crate::fleet;
use crate::store::{Applied, Change, ChangeOp, Command, Proposal, Record, WriteOutcome};

/// The outcome of an entry that changed nothing, or no revision-taking record.
fn unchanged(revision: u64) -> WriteOutcome {
    WriteOutcome { revision, conflict: None }
}

/// How many changes the history keeps for watchers; older revisions are compacted.
pub const HISTORY_KEEP: u64 = 100_000;

/// How many request ids are remembered (the newest), to apply a retried write once. Counted
/// in ids, not log entries: an entry of the leader's write group carries up to 256.
pub const DEDUPE_WINDOW: u64 = 100_000;

const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const REVISION: &[u8] = b"m/revision";
const RECORD_PREFIX: &[u8] = b"r/";
const HISTORY_PREFIX: &[u8] = b"h/";
const DEDUPE_PREFIX: &[u8] = b"d/";
const AUDIT_PREFIX: &[u8] = b"a/";
const NOTE_PREFIX: &[u8] = b"n/";
const EXPIRY_PREFIX: &[u8] = b"x/";
const CURRENT_SNAPSHOT: &[u8] = b"current";

fn record_key(kind: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(RECORD_PREFIX.len() + kind.len() + 1 + key.len());
    k.extend_from_slice(RECORD_PREFIX);
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn kind_prefix(kind: &str) -> Vec<u8> {
    let mut k = record_key(kind, "");
    if kind.is_empty() {
        k.truncate(RECORD_PREFIX.len());
    }
    k
}

/// `h/<revision><index>`: a transaction's changes share a revision, in order.
fn history_key(revision: u64, index: u32) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..10].copy_from_slice(&history_prefix(revision));
    k[10..].copy_from_slice(&index.to_be_bytes());
    k
}

fn history_prefix(revision: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(HISTORY_PREFIX);
    k[2..].copy_from_slice(&revision.to_be_bytes());
    k
}

fn dedupe_key(id: u128) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..2].copy_from_slice(DEDUPE_PREFIX);
    k[2..].copy_from_slice(&id.to_be_bytes());
    k
}

fn expiry_key(sequence: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(EXPIRY_PREFIX);
    k[2..].copy_from_slice(&sequence.to_be_bytes());
    k
}

/// The big-endian number after the 2-byte prefix of an `h/` or `x/` key: a history key's
/// revision, or the number of the first id an expiry key lists.
fn key_number(key: &[u8]) -> u64 {
    const { assert!(HISTORY_PREFIX.len() == EXPIRY_PREFIX.len()) };
    let mut be = [0u8; 8];
    be.copy_from_slice(&key[HISTORY_PREFIX.len()..HISTORY_PREFIX.len() + 8]);
    u64::from_be_bytes(be)
}

/// The number the next remembered request id takes: one past the newest `x/` key's ids.
fn next_remembered(tree: &sled::Tree) -> sled::Result<u64> {
    let Some(last) = tree.scan_prefix(EXPIRY_PREFIX).next_back() else {
        return Ok(0);
    };
    let (key, ids) = last?;
    Ok(key_number(&key) + ids.len() as u64 / 16)
}

/// A metadata key of tree `sm` and its encoded value.
type MetaPair = (&'static [u8], Vec<u8>);

/// The serialized form of a snapshot: every record, the retained history and the revision.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    revision: u64,
    /// Raw `r/`, `h/`, `d/`, `x/`, `a/` and `n/` pairs of tree `sm`.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Errors reading records outside of Raft (gRPC reads and watches).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("corrupt record in storage: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error(
        "revision {requested} has been compacted; the oldest retained change is revision {oldest}"
    )]
    Compacted { requested: u64, oldest: u64 },
}

/// A stored note as (key without `n/`, value).
fn note_pair(kv: sled::Result<(sled::IVec, sled::IVec)>) -> Result<(String, Vec<u8>), ReadError> {
    let (k, v) = kv?;
    Ok((String::from_utf8_lossy(&k[NOTE_PREFIX.len()..]).into_owned(), v.to_vec()))
}

/// Read access to the applied records, for any number of concurrent readers.
#[derive(Clone)]
pub struct Reader {
    tree: sled::Tree,
    revision: watch::Receiver<u64>,
    notes: watch::Receiver<u64>,
}

impl Reader {
    /// The revision of everything applied on this node so far.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// A receiver that changes whenever the applied revision does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.clone()
    }

    pub fn get(&self, kind: &str, key: &str) -> Result<Option<Record>, ReadError> {
        match self.tree.get(record_key(kind, key))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record of `kind` (all kinds when empty), in key order, with the revision they
    /// were read at. The revision is read first, so records are at least that new.
    pub fn list(&self, kind: &str) -> Result<(Vec<Record>, u64), ReadError> {
        let revision = self.revision();
        let records = self
            .tree
            .scan_prefix(kind_prefix(kind))
            .values()
            .map(|v| Ok(decode(&v?)?))
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok((records, revision))
    }

    /// A receiver that changes whenever notes were applied (status reports, presence...).
    pub fn subscribe_notes(&self) -> watch::Receiver<u64> {
        self.notes.clone()
    }

    pub fn note(&self, key: &str) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self.tree.get([NOTE_PREFIX, key.as_bytes()].concat())?.map(|v| v.to_vec()))
    }

    /// Notes whose key starts with `prefix`, in key order, as (key without `n/`, value).
    pub fn notes(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        self.tree.scan_prefix([NOTE_PREFIX, prefix.as_bytes()].concat()).map(note_pair).collect()
    }

    /// Up to `limit` notes under `prefix` with keys after `prefix` + `after` (from the
    /// first when `after` is empty), in key order, as (key without `n/`, value).
    pub fn notes_after(
        &self,
        prefix: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        let start = [NOTE_PREFIX, prefix.as_bytes(), after.as_bytes()].concat();
        let full_prefix = [NOTE_PREFIX, prefix.as_bytes()].concat();
        use std::ops::Bound;
        let from = if after.is_empty() { Bound::Included(start) } else { Bound::Excluded(start) };
        let range = self.tree.range::<Vec<u8>, _>((from, Bound::Unbounded));
        range
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&full_prefix)))
            .take(limit)
            .map(note_pair)
            .collect()
    }

    /// The keys (without `n/`) of the notes under `prefix`, in order; values are not read.
    pub fn note_keys(&self, prefix: &str) -> Result<Vec<String>, ReadError> {
        self.tree
            .scan_prefix([NOTE_PREFIX, prefix.as_bytes()].concat())
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[NOTE_PREFIX.len()..]).into_owned()))
            .collect()
    }

    /// The last `n` notes under `prefix`, newest first.
    pub fn last_notes(&self, prefix: &str, n: usize) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
        self.tree
            .scan_prefix([NOTE_PREFIX, prefix.as_bytes()].concat())
            .rev()
            .take(n)
            .map(note_pair)
            .collect()
    }

    /// Audit entries with keys from `from` on, in key order.
    pub fn audit_from(&self, from: &str) -> Result<Vec<Vec<u8>>, ReadError> {
        let start = [AUDIT_PREFIX, from.as_bytes()].concat();
        self.tree
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(AUDIT_PREFIX)))
            .map(|kv| Ok(kv?.1.to_vec()))
            .collect()
    }

    /// The oldest revision the history still holds (`None`: no change retained).
    pub fn oldest_retained(&self) -> Result<Option<u64>, ReadError> {
        let Some(k) = self.tree.scan_prefix(HISTORY_PREFIX).keys().next() else {
            return Ok(None);
        };
        Ok(Some(key_number(&k?)))
    }

    /// Fails when the history no longer holds revision `after + 1` (it was compacted).
    pub fn check_retained(&self, after: u64) -> Result<(), ReadError> {
        match self.oldest_retained()? {
            Some(oldest) if after + 1 < oldest => {
                Err(ReadError::Compacted { requested: after + 1, oldest })
            }
            _ => Ok(()),
        }
    }

    /// Changes with revision in `(after, up_to]`, in order. Fails when the history no longer
    /// holds revision `after + 1`.
    pub fn changes(&self, after: u64, up_to: u64) -> Result<Vec<Change>, ReadError> {
        if after >= up_to {
            return Ok(Vec::new());
        }
        self.check_retained(after)?;
        self.tree
            .range(history_key(after + 1, 0)..=history_key(up_to, u32::MAX))
            .values()
            .map(|v| Ok(decode(&v?)?))
            .collect()
    }
}

/// One `apply` call's writes: the sled batch, and what it already wrote, so later entries
/// of the same call see earlier ones.
#[derive(Default)]
struct Batch {
    ops: sled::Batch,
    records: HashMap<Vec<u8>, Option<Record>>,
    requests: HashMap<u128, WriteOutcome>,
    /// Note keys written in this batch.
    notes: std::collections::HashSet<Vec<u8>>,
    /// Event marks written in this batch: agent → highest event id stored.
    marks: HashMap<String, String>,
}

/// The applied state, owned by openraft's state machine worker.
pub struct StateMachine {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: u64,
    revision_tx: watch::Sender<u64>,
    /// Counts applies that stored notes.
    notes_tx: watch::Sender<u64>,
    snapshot_seq: u64,
    /// The `x/` sequence number of the next request id remembered.
    remembered: u64,
    /// How many request ids are remembered ([`DEDUPE_WINDOW`]; smaller in tests).
    dedupe_window: u64,
}

fn sm_err(verb: ErrorVerb, e: &dyn std::error::Error) -> StorageError {
    io_err(ErrorSubject::StateMachine, verb, e)
}

impl StateMachine {
    pub fn open(db: &sled::Db) -> Result<Self, StorageError> {
        let read = |e: &dyn std::error::Error| sm_err(ErrorVerb::Read, e);
        let tree = db.open_tree("sm").map_err(|e| read(&e))?;
        let snapshots = db.open_tree("sm_snapshot").map_err(|e| read(&e))?;
        let get = |key: &[u8]| tree.get(key).map_err(|e| read(&e));
        let last_applied = match get(APPLIED)? {
            Some(b) => decode(&b).map_err(|e| read(&e))?,
            None => None,
        };
        let membership = match get(MEMBERSHIP)? {
            Some(b) => decode(&b).map_err(|e| read(&e))?,
            None => StoredMembership::default(),
        };
        let revision = match get(REVISION)? {
            Some(b) => decode(&b).map_err(|e| read(&e))?,
            None => 0,
        };
        let remembered = next_remembered(&tree).map_err(|e| read(&e))?;
        let (revision_tx, _) = watch::channel(revision);
        let (notes_tx, _) = watch::channel(0);
        Ok(Self {
            remembered,
            dedupe_window: DEDUPE_WINDOW,
            db: db.clone(),
            tree,
            snapshots,
            last_applied,
            membership,
            revision,
            revision_tx,
            notes_tx,
            snapshot_seq: 0,
        })
    }

    pub fn reader(&self) -> Reader {
        Reader {
            tree: self.tree.clone(),
            revision: self.revision_tx.subscribe(),
            notes: self.notes_tx.subscribe(),
        }
    }

    fn meta_pairs(&self) -> Result<[MetaPair; 3], StorageError> {
        let err = |e: &dyn std::error::Error| sm_err(ErrorVerb::Write, e);
        Ok([
            (APPLIED, encode(&self.last_applied).map_err(|e| err(&e))?),
            (MEMBERSHIP, encode(&self.membership).map_err(|e| err(&e))?),
            (REVISION, encode(&self.revision).map_err(|e| err(&e))?),
        ])
    }

    fn current_record(
        &self,
        overlay: &HashMap<Vec<u8>, Option<Record>>,
        key: &[u8],
    ) -> Result<Option<Record>, StorageError> {
        if let Some(r) = overlay.get(key) {
            return Ok(r.clone());
        }
        let read = |e: &dyn std::error::Error| sm_err(ErrorVerb::Read, e);
        match self.tree.get(key).map_err(|e| read(&e))? {
            Some(b) => Ok(Some(decode(&b).map_err(|e| read(&e))?)),
            None => Ok(None),
        }
    }

    /// Applies one command into `batch`. A put or an effective delete takes the next
    /// revision; a transaction takes one revision for all its changes.
    fn apply_command(
        &mut self,
        cmd: Command,
        batch: &mut Batch,
    ) -> Result<WriteOutcome, StorageError> {
        // Audit entries, notes and events go through `apply_change` like the rest and take
        // no revision there.
        let ops = match cmd {
            Command::Txn(ops) => ops,
            single => vec![single],
        };
        for op in &ops {
            if let Some(actual) = self.failed_expectation(op, batch)? {
                return Ok(WriteOutcome { revision: self.revision, conflict: Some(actual) });
            }
        }
        let revision = self.revision + 1;
        let mut index = 0u32;
        for op in ops {
            if self.apply_change(op, batch, revision, index)? {
                index += 1;
            }
        }
        if index > 0 {
            self.revision = revision;
            if revision > HISTORY_KEEP {
                let old = revision - HISTORY_KEEP;
                for key in self.tree.scan_prefix(history_prefix(old)).keys() {
                    batch.ops.remove(key.map_err(|e| sm_err(ErrorVerb::Read, &e))?);
                }
            }
        }
        Ok(unchanged(self.revision))
    }

    /// Applies a put or delete at `revision` (its `index`-th change); false if it changed
    /// nothing (a delete of a missing record).
    fn apply_change(
        &mut self,
        cmd: Command,
        batch: &mut Batch,
        revision: u64,
        index: u32,
    ) -> Result<bool, StorageError> {
        let cmd = match cmd {
            Command::Put { .. } | Command::Delete { .. } => cmd,
            // An audit entry beside the changes it records; takes no revision.
            Command::Audit { key, entry } => {
                self.put_audit(&key, entry, batch)?;
                return Ok(false);
            }
            // Moved, not copied: a batch of notes carries thousands of values.
            Command::Note { key, value, replace } => {
                self.put_note(&key, value, replace, batch)?;
                return Ok(false);
            }
            Command::ForgetNote { key } => {
                self.forget_note(&key, batch);
                return Ok(false);
            }
            Command::Events { agent, events } => {
                self.put_events(agent, events, batch)?;
                return Ok(false);
            }
            // Rejected by validation.
            Command::Txn(_) | Command::Batch(_) => return Ok(false),
        };
        let (Command::Put { kind, key, .. } | Command::Delete { kind, key, .. }) = &cmd else {
            return Ok(false);
        };
        let rkey = record_key(kind, key);
        let current = self.current_record(&batch.records, &rkey)?;
        let change = match cmd {
            Command::Put { kind, key, value, .. } => {
                let create_revision = current.map_or(revision, |r| r.create_revision);
                let record = Record { kind, key, value, create_revision, mod_revision: revision };
                Change { revision, op: ChangeOp::Put, record }
            }
            _ => match current {
                // Deleting nothing changes nothing and takes no revision.
                None => return Ok(false),
                Some(mut record) => {
                    record.mod_revision = revision;
                    Change { revision, op: ChangeOp::Delete, record }
                }
            },
        };
        let err = |e: &dyn std::error::Error| sm_err(ErrorVerb::Write, e);
        match change.op {
            ChangeOp::Put => {
                batch.ops.insert(rkey.clone(), encode(&change.record).map_err(|e| err(&e))?);
                batch.records.insert(rkey, Some(change.record.clone()));
            }
            ChangeOp::Delete => {
                batch.ops.remove(rkey.clone());
                batch.records.insert(rkey, None);
            }
        }
        batch.ops.insert(&history_key(revision, index), encode(&change).map_err(|e| err(&e))?);
        Ok(true)
    }

    /// Appends an audit entry unless its key exists (the log is append-only).
    fn put_audit(&self, key: &str, entry: Vec<u8>, batch: &mut Batch) -> Result<(), StorageError> {
        let akey = [AUDIT_PREFIX, key.as_bytes()].concat();
        if !self.tree.contains_key(&akey).map_err(|e| sm_err(ErrorVerb::Read, &e))? {
            batch.ops.insert(akey, entry);
        }
        Ok(())
    }

    /// Stores a note; `replace: false` keeps an existing one (also one earlier in `batch`).
    fn put_note(
        &self,
        key: &str,
        value: Vec<u8>,
        replace: bool,
        batch: &mut Batch,
    ) -> Result<(), StorageError> {
        let nkey = [NOTE_PREFIX, key.as_bytes()].concat();
        let exists = || -> Result<bool, StorageError> {
            Ok(batch.notes.contains(&nkey)
                || self.tree.contains_key(&nkey).map_err(|e| sm_err(ErrorVerb::Read, &e))?)
        };
        if replace || !exists()? {
            batch.ops.insert(nkey.clone(), value);
            batch.notes.insert(nkey);
        }
        Ok(())
    }

    /// Stores the events of `agent` past its mark as one note, indexes it, and moves the
    /// mark (keys: [`crate::fleet`]). The note's value is a postcard `Vec` of the events,
    /// built from their encodings without decoding them: postcard writes a sequence as
    /// its length (a varint) followed by its elements.
    fn put_events(
        &self,
        agent: String,
        events: Vec<(String, Vec<u8>)>,
        batch: &mut Batch,
    ) -> Result<(), StorageError> {
        let mark_key = [NOTE_PREFIX, fleet::event_mark_key(&agent).as_bytes()].concat();
        let mark = match batch.marks.get(&agent) {
            Some(mark) => Some(mark.clone()),
            None => self
                .tree
                .get(&mark_key)
                .map_err(|e| sm_err(ErrorVerb::Read, &e))?
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
        };
        let new: Vec<(String, Vec<u8>)> =
            events.into_iter().filter(|(id, _)| mark.as_ref().is_none_or(|m| id > m)).collect();
        let (Some((first, _)), Some((last, _))) = (new.first(), new.last()) else {
            return Ok(());
        };
        let key = fleet::EventKey { first, agent: &agent, last, count: new.len() }.to_string();
        let index = fleet::event_index_key(&agent, first);
        let mut value = encode(&new.len()).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        value.reserve(new.iter().map(|(_, e)| e.len()).sum());
        for (_, event) in &new {
            value.extend_from_slice(event);
        }
        let last = last.clone();
        for (k, v) in [
            ([NOTE_PREFIX, b"event/", key.as_bytes()].concat(), value),
            ([NOTE_PREFIX, index.as_bytes()].concat(), key.into_bytes()),
            (mark_key, last.clone().into_bytes()),
        ] {
            batch.ops.insert(k.clone(), v);
            batch.notes.insert(k);
        }
        batch.marks.insert(agent, last);
        Ok(())
    }

    fn forget_note(&self, key: &str, batch: &mut Batch) {
        let nkey = [NOTE_PREFIX, key.as_bytes()].concat();
        batch.ops.remove(nkey.clone());
        batch.notes.insert(nkey);
    }

    /// For a put or delete with an expectation that does not hold: the actual revision.
    fn failed_expectation(
        &self,
        cmd: &Command,
        batch: &Batch,
    ) -> Result<Option<u64>, StorageError> {
        let (kind, key, Some(expected)) = (match cmd {
            Command::Put { kind, key, expect_mod_revision, .. }
            | Command::Delete { kind, key, expect_mod_revision } => {
                (kind, key, *expect_mod_revision)
            }
            Command::Txn(_)
            | Command::Batch(_)
            | Command::Audit { .. }
            | Command::Note { .. }
            | Command::ForgetNote { .. }
            | Command::Events { .. } => return Ok(None),
        }) else {
            return Ok(None);
        };
        let current = self.current_record(&batch.records, &record_key(kind, key))?;
        let actual = current.map_or(0, |r| r.mod_revision);
        Ok((actual != expected).then_some(actual))
    }

    /// Applies an entry's proposal: one request, or each member of a [`Command::Batch`] as
    /// a request of its own. The ids it remembers are listed under one `x/` key, numbered
    /// on from the ids remembered before.
    fn apply_entry(
        &mut self,
        proposal: Proposal,
        batch: &mut Batch,
    ) -> Result<Applied, StorageError> {
        let mut ids = Vec::new();
        let applied = match proposal.command {
            Command::Batch(members) => Applied::Batch(
                members
                    .into_iter()
                    .map(|member| self.apply_request(member, batch, &mut ids))
                    .collect::<Result<_, _>>()?,
            ),
            _ => Applied::One(self.apply_request(proposal, batch, &mut ids)?),
        };
        if !ids.is_empty() {
            let count = ids.len() as u64 / 16;
            batch.ops.insert(&expiry_key(self.remembered), ids);
            self.remembered += count;
        }
        Ok(applied)
    }

    /// Applies a request once per request id: a retried id returns the first outcome. The
    /// id is appended to `ids` (big-endian) when this is its first application.
    fn apply_request(
        &mut self,
        proposal: Proposal,
        batch: &mut Batch,
        ids: &mut Vec<u8>,
    ) -> Result<WriteOutcome, StorageError> {
        let Some(id) = proposal.request_id else {
            return self.apply_command(proposal.command, batch);
        };
        if let Some(outcome) = batch.requests.get(&id) {
            return Ok(outcome.clone());
        }
        let dkey = dedupe_key(id);
        if let Some(bytes) = self.tree.get(dkey).map_err(|e| sm_err(ErrorVerb::Read, &e))? {
            tracing::debug!(request_id = id, "request already applied; returning its outcome");
            return decode(&bytes).map_err(|e| sm_err(ErrorVerb::Read, &e));
        }
        let outcome = self.apply_command(proposal.command, batch)?;
        batch.ops.insert(&dkey, encode(&outcome).map_err(|e| sm_err(ErrorVerb::Write, &e))?);
        ids.extend_from_slice(&id.to_be_bytes());
        batch.requests.insert(id, outcome.clone());
        Ok(outcome)
    }

    /// Forgets the request ids older than the newest `dedupe_window`, an `x/` key at a
    /// time once all its ids are older (those stored before this apply: its own are not in
    /// the tree yet, and go with a later apply if need be).
    fn expire_requests(&self, batch: &mut Batch) -> Result<(), StorageError> {
        let Some(bound) = self.remembered.checked_sub(self.dedupe_window) else {
            return Ok(());
        };
        for kv in self.tree.range(expiry_key(0)..expiry_key(bound)) {
            let (key, ids) = kv.map_err(|e| sm_err(ErrorVerb::Read, &e))?;
            if key_number(&key) + ids.len() as u64 / 16 > bound {
                break;
            }
            batch.ops.remove(key);
            for id in ids.chunks(16) {
                batch.ops.remove([DEDUPE_PREFIX, id].concat());
            }
        }
        Ok(())
    }

    fn snapshot_from_stored(&self) -> Result<Option<Snapshot>, StorageError> {
        let read = |e: &dyn std::error::Error| sm_err(ErrorVerb::Read, e);
        let Some(bytes) = self.snapshots.get(CURRENT_SNAPSHOT).map_err(|e| read(&e))? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes).map_err(|e| read(&e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

/// Builds a snapshot from a consistent copy taken on the state machine worker, so applying
/// can continue while it is encoded and stored.
pub struct SnapshotBuilder {
    db: sled::Db,
    snapshots: sled::Tree,
    meta: SnapshotMeta,
    /// The copy, or the error reading it (returned from `build_snapshot`).
    payload: Result<SnapshotPayload, sled::Error>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sig = Some(self.meta.signature());
        let err = |e: &dyn std::error::Error| {
            io_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Write, e)
        };
        let payload = self.payload.as_ref().map_err(|e| err(e))?;
        let data = encode(payload).map_err(|e| err(&e))?;
        let stored = StoredSnapshot { meta: self.meta.clone(), data };
        self.snapshots
            .insert(CURRENT_SNAPSHOT, encode(&stored).map_err(|e| err(&e))?)
            .map_err(|e| err(&e))?;
        self.db.flush_async().await.map_err(|e| err(&e))?;
        tracing::info!(
            last_log_index = self.meta.last_log_id.map_or(0, |l| l.index),
            revision = payload.revision,
            bytes = stored.data.len(),
            "built snapshot"
        );
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Batch::default();
        let mut outcomes = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Applied::One(unchanged(self.revision)),
                EntryPayload::Normal(p) => {
                    let p = std::sync::Arc::unwrap_or_clone(p);
                    self.apply_entry(p, &mut batch)?
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Applied::One(unchanged(self.revision))
                }
            };
            outcomes.push(outcome);
        }
        self.expire_requests(&mut batch)?;
        for (k, v) in self.meta_pairs()? {
            batch.ops.insert(k, v);
        }
        self.tree.apply_batch(batch.ops).map_err(|e| sm_err(ErrorVerb::Write, &e))?;
        self.revision_tx.send_replace(self.revision);
        if !batch.notes.is_empty() {
            self.notes_tx.send_modify(|n| *n += 1);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        let last = self.last_applied;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_seq),
            None => format!("0-0-{}", self.snapshot_seq),
        };
        // The copy is taken here, between applies, so the snapshot is consistent.
        let prefixes = [
            RECORD_PREFIX,
            HISTORY_PREFIX,
            DEDUPE_PREFIX,
            EXPIRY_PREFIX,
            AUDIT_PREFIX,
            NOTE_PREFIX,
        ];
        let pairs = prefixes
            .into_iter()
            .flat_map(|p| self.tree.scan_prefix(p))
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<Vec<_>, _>>();
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            payload: pairs.map(|pairs| SnapshotPayload { revision: self.revision, pairs }),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let err =
            |verb, e: &dyn std::error::Error| io_err(ErrorSubject::Snapshot(sig.clone()), verb, e);
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = decode(&data).map_err(|e| err(ErrorVerb::Read, &e))?;
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            batch.remove(key.map_err(|e| err(ErrorVerb::Read, &e))?);
        }
        for (k, v) in payload.pairs {
            batch.insert(k, v);
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.revision = payload.revision;
        for (k, v) in self.meta_pairs()? {
            batch.insert(k, v);
        }
        self.tree.apply_batch(batch).map_err(|e| err(ErrorVerb::Write, &e))?;
        self.remembered = next_remembered(&self.tree).map_err(|e| err(ErrorVerb::Read, &e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.snapshots
            .insert(CURRENT_SNAPSHOT, encode(&stored).map_err(|e| err(ErrorVerb::Write, &e))?)
            .map_err(|e| err(ErrorVerb::Write, &e))?;
        self.db.flush_async().await.map_err(|e| err(ErrorVerb::Write, &e))?;
        self.revision_tx.send_replace(self.revision);
        self.notes_tx.send_modify(|n| *n += 1);
        tracing::info!(
            last_log_index = meta.last_log_id.map_or(0, |l| l.index),
            revision = self.revision,
            "installed snapshot"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshot_from_stored()
    }
}

/// The revision a snapshot's data was taken at.
pub fn snapshot_revision(data: &[u8]) -> Result<u64, postcard::Error> {
    Ok(decode::<SnapshotPayload>(data)?.revision)
}

/// Opens the log store (`data_dir/raft-log`) and the state machine (in `db`, the data dir's
/// sled database) of a data dir.
pub fn open_storage(
    db: &sled::Db,
    data_dir: &std::path::Path,
) -> Result<(super::LogStore, StateMachine), StorageError> {
    let log = super::LogStore::open(db, data_dir)
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
    Ok((log, StateMachine::open(db)?))
}

#[cfg(test)]
mod tests;
