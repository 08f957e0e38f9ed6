//! The Raft log and vote in their own files, in `raft-log/` inside the node's data dir.
//!
//! Layout:
//! - `<seq, 20 digits>.seg`: append-only segments holding entries in index order. Each entry
//!   is one record `[len: u32 LE][crc32 of len and payload: u32 LE][payload]`, the payload a
//!   postcard [`Entry`]. Appends go to the newest segment; a new one starts once it passes
//!   [`SEGMENT_BYTES`], so purging deletes whole old segments.
//! - `meta`: the vote and the last purged log id, one record, replaced atomically (write
//!   `meta.tmp`, fsync, rename, fsync the directory).
//! - `committed`: the committed log id, one record overwritten in place and never synced.
//!
//! Invariant: nothing is reported to openraft as persisted before it is on disk. The vote
//! and the purge point are synced in `save_vote` and `purge` before they return; a
//! truncation is synced before `truncate` returns; appended entries are synced
//! (`fdatasync`) before the `LogFlushed` callback fires, so a client write is acknowledged
//! only once its entry is on disk on a majority.
//!
//! Group commit: `append` writes the entries to the segment (one `write`, into the page
//! cache) and hands the callback to a flusher thread, so Raft keeps working while the disk
//! syncs. The flusher takes every callback that queued up while the previous sync ran,
//! syncs once, and completes them in order: one `fdatasync` covers many appends under load,
//! and a lone append still syncs at once. After a sync it also writes the committed log id
//! saved before it, so the file never names an entry that is not on disk.
//!
//! Open scans every segment and checks each record's length and CRC. A torn or corrupt
//! record (a crash mid-write, a flipped bit) and everything after it is cut off with a
//! warning naming the file and offset; a record whose CRC holds but which does not decode
//! is an error instead, since cutting it would drop data this node wrote.
//!
//! Memory: an index (log index → segment, offset, length) of every entry after the purge
//! point, and a cache of the newest entries ([`CACHE_ENTRIES`], [`CACHE_BYTES`]) so
//! replicating to followers that keep up reads no file.
//!
//! The state machine is in sled and is synced only by sled's background flush, snapshot
//! builds and installs: after a crash openraft re-applies the log from the state machine's
//! last applied entry. That needs those entries, so `purge` flushes sled before it drops
//! any.
//!
//! Data dirs from before this store kept the log and vote in sled trees `raft_log` and
//! `raft_meta`; the first open imports them and drops the trees.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, RaftLogReader, StorageIOError};
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote, decode, encode};

/// The log's directory inside a data dir.
pub const DIR: &str = "raft-log";
/// A segment takes no more appends once it is this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The most entries the cache of the newest entries holds...
pub const CACHE_ENTRIES: usize = 4096;
/// ...and the most payload bytes: one AppendEntries' worth (4 MiB) for each follower in
/// step, with room. More only costs memory (agents' report batches fill it within seconds);
/// a follower further behind reads the segments.
pub const CACHE_BYTES: usize = 8 << 20;

const META: &str = "meta";
const META_TMP: &str = "meta.tmp";
const COMMITTED: &str = "committed";
const SEGMENT_EXT: &str = "seg";
/// Length and CRC before each record's payload.
const HEADER: usize = 8;

/// What `meta` holds.
#[derive(Default, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

/// Errors opening the log store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("importing the raft log from sled: {0}")]
    Sled(#[from] sled::Error),
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_owned(), source }
}

/// The Raft log and its metadata. Cheap to clone: clones share the same files.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    /// The flusher thread's queue, started on first append. Not in `Shared`, which the
    /// flusher holds: it stops once every store handle, and so this sender, is gone.
    flusher: Arc<OnceLock<Sender<LogFlushed<TypeConfig>>>>,
}

struct Shared {
    dir: PathBuf,
    /// The data dir's sled database, holding the state machine: flushed before a purge.
    db: sled::Db,
    committed_file: File,
    inner: Mutex<Inner>,
}

/// Where an entry is.
#[derive(Clone, Copy)]
struct Loc {
    log_id: LogId,
    segment: u64,
    /// Of the record's header.
    offset: u64,
    len: u32,
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
}

struct Inner {
    segment_bytes: u64,
    meta: Meta,
    /// The committed log id openraft saved last; the flusher writes it after a sync.
    committed: Option<LogId>,
    /// By sequence number; the last one takes appends.
    segments: BTreeMap<u64, Segment>,
    /// Every entry after the purge point, in index order: `locs[i]` has index `first + i`.
    locs: VecDeque<Loc>,
    first: u64,
    /// The newest entries: the last `cache.len()` of `locs`.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock (errors are returned), so a poisoned lock
        // still guards a consistent state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Appends `payload` framed as a record to `out`.
fn frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let len = u32::try_from(payload.len())
        .map_err(|_| format!("a record of {} bytes is over 4 GiB", payload.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// The record at the start of `buf`.
#[derive(Debug, PartialEq)]
enum Record<'a> {
    Payload(&'a [u8]),
    /// `buf` is empty.
    End,
    /// Torn or corrupt, and why.
    Bad(&'static str),
}

fn parse(buf: &[u8]) -> Record<'_> {
    if buf.is_empty() {
        return Record::End;
    }
    let Some((header, rest)) = buf.split_first_chunk::<HEADER>() else {
        return Record::Bad("torn record header");
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let len = u32::from_le_bytes([l0, l1, l2, l3]);
    let Some(payload) = rest.get(..len as usize) else {
        return Record::Bad("record runs past the end of the file");
    };
    if checksum(len, payload) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Record::Bad("record checksum mismatch");
    }
    Record::Payload(payload)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SEGMENT_EXT}"))
}

fn open_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).append(true).create(true).open(path)
}

/// Writes `meta` atomically into `dir`: temp file, fsync, rename, fsync the directory.
fn write_meta(dir: &Path, meta: &Meta) -> Result<(), String> {
    let mut bytes = Vec::new();
    frame(&encode(meta).map_err(|e| e.to_string())?, &mut bytes)?;
    let tmp = dir.join(META_TMP);
    let at = |e: std::io::Error, path: &Path| format!("{}: {e}", path.display());
    let mut file = File::create(&tmp).map_err(|e| at(e, &tmp))?;
    file.write_all(&bytes).map_err(|e| at(e, &tmp))?;
    file.sync_all().map_err(|e| at(e, &tmp))?;
    std::fs::rename(&tmp, dir.join(META)).map_err(|e| at(e, &tmp))?;
    sync_dir(dir).map_err(|e| at(e, dir))
}

fn read_meta(dir: &Path) -> Result<Meta, OpenError> {
    let path = dir.join(META);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(io_at(&path)(e)),
    };
    // Written whole and renamed into place, so a bad one is damage, not a torn write:
    // refuse it rather than forget the vote.
    let corrupt = |reason: String| OpenError::Corrupt { path: path.clone(), reason };
    match parse(&bytes) {
        Record::Payload(payload) => decode(payload).map_err(|e| corrupt(e.to_string())),
        Record::End => Err(corrupt("empty".into())),
        Record::Bad(reason) => Err(corrupt(reason.into())),
    }
}

/// The committed log id in `file`; `None` when missing, torn or corrupt (it is only a hint).
fn read_committed(file: &File, path: &Path) -> Option<LogId> {
    let mut bytes = Vec::new();
    let mut reader = file;
    if let Err(e) = std::io::Read::read_to_end(&mut reader, &mut bytes) {
        tracing::warn!(file = %path.display(), error = %e, "cannot read the committed log id");
        return None;
    }
    match parse(&bytes) {
        Record::Payload(payload) => decode(payload).ok().flatten(),
        _ => None,
    }
}

fn write_committed(file: &File, committed: Option<LogId>) -> Result<(), String> {
    let mut bytes = Vec::new();
    frame(&encode(&committed).map_err(|e| e.to_string())?, &mut bytes)?;
    file.write_all_at(&bytes, 0).map_err(|e| e.to_string())
}

/// The flusher thread: syncs the newest segment once for every batch of queued callbacks,
/// then completes them in order. A failed sync fails every later batch too: after a failed
/// `fdatasync` the kernel may have dropped the dirty pages, so nothing written can be
/// reported durable any more.
fn run_flusher(shared: Arc<Shared>, rx: Receiver<LogFlushed<TypeConfig>>) {
    let mut failed: Option<String> = None;
    let mut written_committed = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // Appends before these callbacks went to this segment, or to older ones that were
        // synced when the next one started.
        let (file, path, committed) = {
            let inner = shared.lock();
            match inner.segments.last_key_value() {
                Some((_, s)) => (Some(s.file.clone()), s.path.clone(), inner.committed),
                None => (None, shared.dir.clone(), inner.committed),
            }
        };
        if failed.is_none()
            && let Some(file) = file
            && let Err(e) = file.sync_data()
        {
            tracing::error!(file = %path.display(), error = %e, "fdatasync of the raft log failed");
            failed = Some(format!("{}: fdatasync: {e}", path.display()));
        }
        for callback in batch {
            let result = match &failed {
                None => Ok(()),
                Some(e) => Err(std::io::Error::other(e.clone())),
            };
            callback.log_io_completed(result);
        }
        if failed.is_none() && committed != written_committed {
            match write_committed(&shared.committed_file, committed) {
                Ok(()) => written_committed = committed,
                Err(e) => tracing::warn!(error = %e, "cannot write the committed log id"),
            }
        }
    }
}

impl LogStore {
    /// Opens the log in `data_dir/raft-log`, importing it from `db`'s trees on first use.
    pub fn open(db: &sled::Db, data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_sized(db, data_dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with segments of `segment_bytes` (small ones in tests).
    fn open_sized(db: &sled::Db, data_dir: &Path, segment_bytes: u64) -> Result<Self, OpenError> {
        let dir = data_dir.join(DIR);
        if !dir.exists() {
            import_from_sled(db, data_dir)?;
        }
        // Trees left by an import that stopped after the rename.
        drop_sled_trees(db)?;
        let meta = read_meta(&dir)?;
        let committed_path = dir.join(COMMITTED);
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&committed_path)
            .map_err(io_at(&committed_path))?;
        let committed = read_committed(&committed_file, &committed_path);
        let mut inner = Inner {
            segment_bytes,
            meta,
            committed,
            segments: BTreeMap::new(),
            locs: VecDeque::new(),
            first: 0,
            cache: VecDeque::new(),
            cache_bytes: 0,
        };
        inner.load_segments(&dir)?;
        if inner.segments.is_empty() {
            let path = segment_path(&dir, 1);
            let file = open_segment(&path).map_err(io_at(&path))?;
            sync_dir(&dir).map_err(io_at(&dir))?;
            inner.segments.insert(1, Segment { path, file: Arc::new(file), size: 0 });
        }
        Ok(Self {
            shared: Arc::new(Shared {
                dir,
                db: db.clone(),
                committed_file,
                inner: Mutex::new(inner),
            }),
            flusher: Arc::default(),
        })
    }

    fn flusher(&self) -> Result<&Sender<LogFlushed<TypeConfig>>, StorageError> {
        if let Some(tx) = self.flusher.get() {
            return Ok(tx);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || run_flusher(shared, rx))
            .map_err(|e| logs_err(ErrorVerb::Write, &e))?;
        Ok(self.flusher.get_or_init(|| tx))
    }

    /// Writes `entries` after the last entry, into the page cache: durable only once the
    /// newest segment is synced.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        for entry in entries {
            let subject = || ErrorSubject::Log(entry.log_id);
            let payload = encode(&entry).map_err(|e| io_err(subject(), ErrorVerb::Write, &e))?;
            let at = buf.len() as u64;
            frame(&payload, &mut buf).map_err(|e| msg_err(subject(), ErrorVerb::Write, e))?;
            batch.push((at, payload.len() as u32, entry));
        }
        let mut inner = self.shared.lock();
        // Entries at or below the purge point are already covered by it (openraft's storage
        // suite appends some): written, but neither indexed nor read, as on reopen.
        let purged = inner.meta.last_purged.map(|p| p.index);
        let mut prev = inner.last_index();
        for (_, _, entry) in &batch {
            let index = entry.log_id.index;
            if purged.is_some_and(|p| index <= p) {
                continue;
            }
            if prev.is_some_and(|p| index != p + 1) {
                let msg = format!("entry {} does not follow the last entry {prev:?}", entry.log_id);
                return Err(msg_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, msg));
            }
            prev = Some(index);
        }
        inner.roll_if_full(&self.shared.dir)?;
        let Some(mut newest) = inner.segments.last_entry() else {
            return Err(msg_err(ErrorSubject::Logs, ErrorVerb::Write, "no segment".into()));
        };
        let seq = *newest.key();
        let segment = newest.get_mut();
        let base = segment.size;
        if let Err(e) = (&*segment.file).write_all(&buf) {
            // Do not leave half a batch for the next append to follow.
            let _ = segment.file.set_len(base);
            return Err(path_err(ErrorVerb::Write, &segment.path, e));
        }
        segment.size += buf.len() as u64;
        for (at, len, entry) in batch {
            if purged.is_some_and(|p| entry.log_id.index <= p) {
                continue;
            }
            let loc = Loc { log_id: entry.log_id, segment: seq, offset: base + at, len };
            inner.push(loc, entry);
        }
        Ok(())
    }

    fn save_meta(&self, inner: &Inner, subject: ErrorSubject<NodeId>) -> Result<(), StorageError> {
        write_meta(&self.shared.dir, &inner.meta).map_err(|e| msg_err(subject, ErrorVerb::Write, e))
    }
}

/// The segments in `dir` by sequence number.
fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, OpenError> {
    let mut segments = BTreeMap::new();
    for dirent in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = dirent.map_err(io_at(dir))?.path();
        if path.extension().is_some_and(|e| e == SEGMENT_EXT)
            && let Some(seq) = path.file_stem().and_then(|s| s.to_str()?.parse().ok())
        {
            segments.insert(seq, path);
        }
    }
    Ok(segments)
}

impl Inner {
    fn last_index(&self) -> Option<u64> {
        self.locs.back().map(|l| l.log_id.index)
    }

    /// Whether an entry after the purge point with `index` may come next: right after the
    /// last entry, or anything in an empty log.
    fn fits_next(&self, index: u64) -> bool {
        self.last_index().is_none_or(|last| index == last + 1)
    }

    fn push(&mut self, loc: Loc, entry: Entry) {
        if self.locs.is_empty() {
            self.first = loc.log_id.index;
        }
        self.locs.push_back(loc);
        self.cache.push_back(entry);
        self.cache_bytes += loc.len as usize;
        while self.cache.len() > CACHE_ENTRIES || self.cache_bytes > CACHE_BYTES {
            self.cache.pop_front();
            let evicted = self.locs[self.locs.len() - self.cache.len() - 1];
            self.cache_bytes -= evicted.len as usize;
        }
    }

    /// Keeps the first `n` entries.
    fn keep_first(&mut self, n: usize) {
        while self.locs.len() > n {
            if self.cache.pop_back().is_some() {
                self.cache_bytes -= self.locs.back().map_or(0, |l| l.len as usize);
            }
            self.locs.pop_back();
        }
    }

    /// Drops the first `n` entries.
    fn drop_first(&mut self, n: usize) {
        for _ in 0..n.min(self.locs.len()) {
            if self.cache.len() == self.locs.len() {
                self.cache.pop_front();
                self.cache_bytes -= self.locs.front().map_or(0, |l| l.len as usize);
            }
            self.locs.pop_front();
            self.first += 1;
        }
    }

    /// Scans the segments in `dir` into the index, cutting a torn or corrupt tail.
    fn load_segments(&mut self, dir: &Path) -> Result<(), OpenError> {
        let mut cut = false;
        for (seq, path) in list_segments(dir)? {
            if cut {
                tracing::warn!(file = %path.display(), "removing a raft log segment after a cut");
                std::fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            let mut offset = 0;
            let bad = loop {
                let payload = match parse(&bytes[offset..]) {
                    Record::Payload(payload) => payload,
                    Record::End => break None,
                    Record::Bad(reason) => break Some(reason),
                };
                let entry: Entry = decode(payload).map_err(|e| OpenError::Corrupt {
                    path: path.clone(),
                    reason: format!("the record at offset {offset} does not decode: {e}"),
                })?;
                let loc = Loc {
                    log_id: entry.log_id,
                    segment: seq,
                    offset: offset as u64,
                    len: payload.len() as u32,
                };
                let index = entry.log_id.index;
                if self.meta.last_purged.is_none_or(|p| index > p.index) {
                    if !self.fits_next(index) {
                        break Some("entry out of order (a truncation cut short?)");
                    }
                    self.push(loc, entry);
                }
                offset += HEADER + payload.len();
            };
            let file = open_segment(&path).map_err(io_at(&path))?;
            if let Some(reason) = bad {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    reason,
                    "cutting the raft log's torn or corrupt tail"
                );
                file.set_len(offset as u64).map_err(io_at(&path))?;
                file.sync_all().map_err(io_at(&path))?;
                cut = true;
            }
            let segment = Segment { path, file: Arc::new(file), size: offset as u64 };
            self.segments.insert(seq, segment);
        }
        if cut {
            sync_dir(dir).map_err(io_at(dir))?;
        }
        Ok(())
    }

    /// Starts a new segment when the newest is full, syncing the full one first: the
    /// flusher only syncs the newest.
    fn roll_if_full(&mut self, dir: &Path) -> Result<(), StorageError> {
        let Some((&seq, newest)) = self.segments.last_key_value() else {
            return Err(msg_err(ErrorSubject::Logs, ErrorVerb::Write, "no segment".into()));
        };
        if newest.size < self.segment_bytes {
            return Ok(());
        }
        newest.file.sync_data().map_err(|e| path_err(ErrorVerb::Write, &newest.path, e))?;
        let path = segment_path(dir, seq + 1);
        let file = open_segment(&path).map_err(|e| path_err(ErrorVerb::Write, &path, e))?;
        sync_dir(dir).map_err(|e| path_err(ErrorVerb::Write, dir, e))?;
        tracing::debug!(file = %path.display(), "started a raft log segment");
        self.segments.insert(seq + 1, Segment { path, file: Arc::new(file), size: 0 });
        Ok(())
    }

    /// The entries with indexes in `[start, end)` that the log holds: older ones from the
    /// segments, the newest from the cache.
    fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        let Some(last) = self.last_index() else {
            return Ok(Vec::new());
        };
        let start = start.max(self.first);
        let end = end.min(last + 1);
        if start >= end {
            return Ok(Vec::new());
        }
        let cached_from = last + 1 - self.cache.len() as u64;
        let disk_end = end.min(cached_from).max(start);
        let mut out = Vec::with_capacity((end - start) as usize);
        let locs: Vec<Loc> = self
            .locs
            .range((start - self.first) as usize..(disk_end - self.first) as usize)
            .copied()
            .collect();
        // One read per segment: its entries are back to back.
        for run in locs.chunk_by(|a, b| a.segment == b.segment) {
            let (Some(head), Some(tail)) = (run.first(), run.last()) else { continue };
            let Some(segment) = self.segments.get(&head.segment) else {
                let msg = format!("segment {} of entry {} is gone", head.segment, head.log_id);
                return Err(msg_err(ErrorSubject::Logs, ErrorVerb::Read, msg));
            };
            let to = tail.offset + (HEADER + tail.len as usize) as u64;
            let mut buf = vec![0; (to - head.offset) as usize];
            segment
                .file
                .read_exact_at(&mut buf, head.offset)
                .map_err(|e| path_err(ErrorVerb::Read, &segment.path, e))?;
            let mut at = 0;
            for loc in run {
                let Record::Payload(payload) = parse(&buf[at..]) else {
                    let msg = format!(
                        "{}: offset {}: entry {} is corrupt",
                        segment.path.display(),
                        loc.offset,
                        loc.log_id
                    );
                    return Err(msg_err(ErrorSubject::Log(loc.log_id), ErrorVerb::Read, msg));
                };
                out.push(
                    decode(payload)
                        .map_err(|e| io_err(ErrorSubject::Log(loc.log_id), ErrorVerb::Read, &e))?,
                );
                at += HEADER + payload.len();
            }
        }
        if disk_end < end {
            let from = (disk_end - cached_from) as usize;
            out.extend(self.cache.range(from..(end - cached_from) as usize).cloned());
        }
        Ok(out)
    }

    /// Drops the entries from `index` on, on disk before it returns.
    fn truncate(&mut self, dir: &Path, index: u64) -> Result<(), StorageError> {
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        let keep = index.saturating_sub(self.first) as usize;
        let Some(&cut) = self.locs.get(keep) else {
            return Ok(());
        };
        let mut removed = false;
        while let Some(newest) = self.segments.last_entry() {
            if *newest.key() <= cut.segment {
                break;
            }
            let segment = newest.remove();
            std::fs::remove_file(&segment.path)
                .map_err(|e| path_err(ErrorVerb::Delete, &segment.path, e))?;
            removed = true;
        }
        let Some(segment) = self.segments.get_mut(&cut.segment) else {
            let msg = format!("segment {} of entry {} is gone", cut.segment, cut.log_id);
            return Err(msg_err(ErrorSubject::Logs, ErrorVerb::Delete, msg));
        };
        let err = |e| path_err(ErrorVerb::Delete, &segment.path, e);
        segment.file.set_len(cut.offset).map_err(err)?;
        segment.file.sync_data().map_err(err)?;
        segment.size = cut.offset;
        if removed {
            sync_dir(dir).map_err(|e| path_err(ErrorVerb::Delete, dir, e))?;
        }
        self.keep_first(keep);
        Ok(())
    }

    /// Drops the entries up to `index` from memory and deletes the segments that hold no
    /// other; the caller has recorded the purge point.
    fn purge(&mut self, index: u64) -> Result<(), StorageError> {
        if !self.locs.is_empty() {
            self.drop_first((index + 1).saturating_sub(self.first) as usize);
        }
        let newest = self.segments.last_key_value().map_or(0, |(&seq, _)| seq);
        let keep_from = self.locs.front().map_or(newest, |l| l.segment);
        while let Some(oldest) = self.segments.first_entry() {
            if *oldest.key() >= keep_from {
                break;
            }
            let segment = oldest.remove();
            tracing::debug!(file = %segment.path.display(), "removing a purged raft log segment");
            std::fs::remove_file(&segment.path)
                .map_err(|e| path_err(ErrorVerb::Delete, &segment.path, e))?;
        }
        Ok(())
    }
}

const SLED_LOG: &str = "raft_log";
const SLED_META: &str = "raft_meta";

fn sled_tree(db: &sled::Db, name: &str) -> Result<Option<sled::Tree>, sled::Error> {
    if db.tree_names().iter().any(|n| n == name.as_bytes()) {
        Ok(Some(db.open_tree(name)?))
    } else {
        Ok(None)
    }
}

fn sled_value<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &str,
) -> Result<Option<T>, OpenError> {
    match tree.get(key)? {
        Some(bytes) => decode(&bytes).map(Some).map_err(|e| OpenError::Corrupt {
            path: PathBuf::from(format!("sled tree {SLED_META}, key {key}")),
            reason: e.to_string(),
        }),
        None => Ok(None),
    }
}

/// Creates `data_dir/raft-log` from the sled trees of an older data dir (empty for a new
/// one): built beside it and renamed into place, so it appears whole or not at all.
fn import_from_sled(db: &sled::Db, data_dir: &Path) -> Result<(), OpenError> {
    let dir = data_dir.join(DIR);
    let tmp = data_dir.join(format!("{DIR}.import"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
    let mut meta = Meta::default();
    let mut committed = None;
    if let Some(tree) = sled_tree(db, SLED_META)? {
        meta.vote = sled_value(&tree, "vote")?;
        meta.last_purged = sled_value(&tree, "last_purged")?;
        committed = sled_value::<Option<LogId>>(&tree, "committed")?.flatten();
    }
    let other = |path: &Path| {
        let path = path.to_owned();
        move |e: String| OpenError::Io { path: path.clone(), source: std::io::Error::other(e) }
    };
    write_meta(&tmp, &meta).map_err(other(&tmp))?;
    let committed_path = tmp.join(COMMITTED);
    let file = File::create(&committed_path).map_err(io_at(&committed_path))?;
    write_committed(&file, committed).map_err(other(&committed_path))?;
    let mut entries = 0u64;
    if let Some(tree) = sled_tree(db, SLED_LOG)? {
        let mut seq = 1;
        let mut path = segment_path(&tmp, seq);
        let mut file = std::io::BufWriter::new(File::create(&path).map_err(io_at(&path))?);
        let mut size = 0;
        let mut record = Vec::new();
        for kv in tree.iter() {
            let (_, bytes) = kv?;
            if size >= SEGMENT_BYTES {
                file.into_inner().map_err(|e| io_at(&path)(e.into_error()))?;
                seq += 1;
                path = segment_path(&tmp, seq);
                file = std::io::BufWriter::new(File::create(&path).map_err(io_at(&path))?);
                size = 0;
            }
            record.clear();
            frame(&bytes, &mut record).map_err(other(&path))?;
            file.write_all(&record).map_err(io_at(&path))?;
            size += record.len() as u64;
            entries += 1;
        }
        file.into_inner().map_err(|e| io_at(&path)(e.into_error()))?;
        for seq in 1..=seq {
            let path = segment_path(&tmp, seq);
            File::open(&path).and_then(|f| f.sync_all()).map_err(io_at(&path))?;
        }
    }
    sync_dir(&tmp).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, &dir).map_err(io_at(&tmp))?;
    sync_dir(data_dir).map_err(io_at(data_dir))?;
    if entries > 0 || meta.vote.is_some() {
        tracing::info!(entries, dir = %dir.display(), "imported the raft log and vote from sled");
    }
    Ok(())
}

/// Drops the sled trees the log used to live in, once it lives in `raft-log/`.
fn drop_sled_trees(db: &sled::Db) -> Result<(), OpenError> {
    let mut dropped = false;
    for name in [SLED_LOG, SLED_META] {
        if sled_tree(db, name)?.is_some() {
            db.drop_tree(name)?;
            dropped = true;
        }
    }
    if dropped {
        db.flush()?;
    }
    Ok(())
}

pub(crate) fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &dyn std::error::Error,
) -> StorageError {
    msg_err(subject, verb, e.to_string())
}

fn msg_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, msg: String) -> StorageError {
    StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::error(msg)) }
}

fn logs_err(verb: ErrorVerb, e: &dyn std::error::Error) -> StorageError {
    io_err(ErrorSubject::Logs, verb, e)
}

fn path_err(verb: ErrorVerb, path: &Path, e: std::io::Error) -> StorageError {
    msg_err(ErrorSubject::Logs, verb, format!("{}: {e}", path.display()))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.shared.lock().read(start, end)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.shared.lock();
        let last_purged_log_id = inner.meta.last_purged;
        let last_log_id = inner.locs.back().map(|l| l.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut inner = self.shared.lock();
        let before = inner.meta.vote.replace(*vote);
        if let Err(e) = self.save_meta(&inner, ErrorSubject::Vote) {
            inner.meta.vote = before;
            return Err(e);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.lock().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Written by the flusher after its next sync, never synced: losing it only means
        // re-applying from the state machine's last applied entry.
        self.shared.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.lock().committed)
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
        self.write_entries(entries)?;
        // The flusher only stops when every store handle is gone; if it did, report it.
        if let Err(unsent) = self.flusher()?.send(callback) {
            unsent.0.log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "truncating log");
        self.shared.lock().truncate(&self.shared.dir, log_id.index)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "purging log");
        // The state machine must hold what the purged entries did before they go: after a
        // crash openraft re-applies from its last applied entry, which sled may only have
        // in memory.
        self.shared.db.flush_async().await.map_err(|e| logs_err(ErrorVerb::Delete, &e))?;
        let mut inner = self.shared.lock();
        if inner.meta.last_purged.is_some_and(|p| p.index >= log_id.index) {
            return Ok(());
        }
        // Record the purge point first: a crash in between leaves entries that are already
        // covered by it, never a gap.
        let before = inner.meta.last_purged.replace(log_id);
        if let Err(e) = self.save_meta(&inner, ErrorSubject::Logs) {
            inner.meta.last_purged = before;
            return Err(e);
        }
        inner.purge(log_id.index)
    }
}

#[cfg(test)]
mod tests;
