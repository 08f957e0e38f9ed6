use std::sync::{Arc, Mutex};

use openraft::{CommittedLeaderId, EntryPayload};
use tracing_subscriber::fmt::MakeWriter;

use super::*;
use crate::store::Command;

fn entry(term: u64, index: u64) -> Entry {
    let command =
        Command::Note { key: format!("k{index}"), value: vec![index as u8; 10], replace: true };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(std::sync::Arc::new(command.into())),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| entry(term, i)).collect()
}

/// Entries compared by their encoding (`Entry` has no `PartialEq`).
fn bytes(entries: &[Entry]) -> Vec<Vec<u8>> {
    entries.iter().map(|e| encode(e).unwrap()).collect()
}

struct Dir {
    dir: tempfile::TempDir,
    db: sled::Db,
}

impl Dir {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("sled")).unwrap();
        Self { dir, db }
    }

    fn open(&self) -> LogStore {
        LogStore::open(&self.db, self.dir.path()).unwrap()
    }

    fn open_sized(&self, segment_bytes: u64) -> LogStore {
        LogStore::open_sized(&self.db, self.dir.path(), segment_bytes).unwrap()
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join(DIR)
    }

    fn segments(&self) -> Vec<PathBuf> {
        list_segments(&self.log_dir()).unwrap().into_values().collect()
    }
}

async fn all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    all(store).await.iter().map(|e| e.log_id.index).collect()
}

/// Log lines written while `f` runs.
fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl MakeWriter<'_> for Buf {
        type Writer = Buf;
        fn make_writer(&self) -> Buf {
            self.clone()
        }
    }
    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt().with_writer(buf.clone()).with_ansi(false).finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, logs)
}

#[tokio::test]
async fn reopen_gives_the_same_entries_from_disk_and_cache() {
    let dir = Dir::new();
    let written = entries(1, 1..=CACHE_ENTRIES as u64 + 500);
    {
        let store = dir.open();
        for chunk in written.chunks(100) {
            store.write_entries(chunk.to_vec()).unwrap();
        }
    }
    let mut store = dir.open();
    assert_eq!(bytes(&all(&mut store).await), bytes(&written));
    // A range that starts on disk and ends in the cache.
    let some = store.try_get_log_entries(10..=4200).await.unwrap();
    assert_eq!(bytes(&some), bytes(&written[9..4200]));
    assert!(store.try_get_log_entries(5000..5000).await.unwrap().is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(written[written.len() - 1].log_id));
    assert_eq!(state.last_purged_log_id, None);
}

#[tokio::test]
async fn vote_and_purge_point_survive_reopen() {
    let dir = Dir::new();
    let mut vote = Vote::new(3, 2);
    vote.commit();
    {
        let mut store = dir.open();
        store.save_vote(&vote).await.unwrap();
        store.write_entries(entries(1, 1..=5)).unwrap();
        store.purge(LogId::new(CommittedLeaderId::new(1, 1), 3)).await.unwrap();
    }
    let mut store = dir.open();
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(indexes(&mut store).await, [4, 5]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
}

/// Writes entries 1..=10, damages the segment with `damage(file bytes, offset of entry 6)`,
/// and checks that the reopened store holds 1..=5, cut at entry 6 and reported.
async fn check_cut(damage: impl FnOnce(&mut Vec<u8>, usize)) {
    let dir = Dir::new();
    let offset = {
        let store = dir.open();
        store.write_entries(entries(1, 1..=10)).unwrap();
        store.shared.lock().locs[5].offset as usize
    };
    let [segment] = &dir.segments()[..] else { panic!("one segment expected") };
    let mut file = std::fs::read(segment).unwrap();
    damage(&mut file, offset);
    std::fs::write(segment, &file).unwrap();

    let (store, logs) = capture_logs(|| dir.open());
    let mut store = store;
    assert_eq!(indexes(&mut store).await, [1, 2, 3, 4, 5]);
    assert!(logs.contains("cutting the raft log's torn or corrupt tail"), "{logs}");
    assert!(logs.contains(&format!("offset={offset}")), "{logs}");
    assert!(logs.contains(&segment.display().to_string()), "{logs}");
    assert_eq!(std::fs::metadata(segment).unwrap().len(), offset as u64);
    // Appends continue after the cut, and reopen finds them.
    store.write_entries(entries(2, 6..=7)).unwrap();
    drop(store);
    let mut store = dir.open();
    assert_eq!(indexes(&mut store).await, [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test]
async fn a_torn_record_is_cut() {
    check_cut(|file, offset| file.truncate(offset + 11)).await;
}

#[tokio::test]
async fn a_torn_header_is_cut() {
    check_cut(|file, offset| file.truncate(offset + 3)).await;
}

#[tokio::test]
async fn a_flipped_byte_is_cut() {
    check_cut(|file, offset| file[offset + HEADER + 2] ^= 0x40).await;
}

#[tokio::test]
async fn a_huge_length_is_cut() {
    check_cut(|file, offset| file[offset + 3] = 0xff).await;
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut() {
    check_cut(|file, offset| {
        file.truncate(offset);
        file.extend_from_slice(&[0x5a; 100]);
    })
    .await;
}

#[tokio::test]
async fn truncate_and_purge_across_segments() {
    let dir = Dir::new();
    // Three or four entries a segment.
    let segment_bytes = 100;
    let mut store = dir.open_sized(segment_bytes);
    for e in entries(1, 1..=40) {
        store.write_entries([e]).unwrap();
    }
    let before = dir.segments().len();
    assert!(before >= 10, "{before} segments");

    // Truncate in the middle of a segment, dropping the later ones.
    store.truncate(LogId::new(CommittedLeaderId::new(1, 1), 25)).await.unwrap();
    assert_eq!(indexes(&mut store).await, (1..=24).collect::<Vec<_>>());
    assert!(dir.segments().len() < before);
    for e in entries(2, 25..=30) {
        store.write_entries([e]).unwrap();
    }
    drop(store);
    let mut store = dir.open_sized(segment_bytes);
    let got = all(&mut store).await;
    let mut expected = entries(1, 1..=24);
    expected.extend(entries(2, 25..=30));
    assert_eq!(bytes(&got), bytes(&expected));

    // Purge into the middle of a segment: whole segments before it go, entries after stay.
    let segments = dir.segments().len();
    store.purge(LogId::new(CommittedLeaderId::new(1, 1), 14)).await.unwrap();
    assert!(dir.segments().len() < segments);
    assert_eq!(indexes(&mut store).await, (15..=30).collect::<Vec<_>>());
    assert_eq!(
        store.try_get_log_entries(1..=16).await.unwrap().len(),
        2,
        "purged entries are not read"
    );
    drop(store);
    let mut store = dir.open_sized(segment_bytes);
    assert_eq!(indexes(&mut store).await, (15..=30).collect::<Vec<_>>());

    // Truncate everything left, then purge past the end (as installing a snapshot does).
    store.truncate(LogId::new(CommittedLeaderId::new(1, 1), 15)).await.unwrap();
    assert!(indexes(&mut store).await.is_empty());
    let snapshot = LogId::new(CommittedLeaderId::new(3, 1), 100);
    store.purge(snapshot).await.unwrap();
    store.write_entries(entries(3, 101..=102)).unwrap();
    drop(store);
    let mut store = dir.open_sized(segment_bytes);
    assert_eq!(indexes(&mut store).await, [101, 102]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(snapshot));
}

#[tokio::test]
async fn an_entry_out_of_order_is_refused() {
    let dir = Dir::new();
    let store = dir.open();
    store.write_entries(entries(1, 1..=3)).unwrap();
    let err = store.write_entries([entry(1, 5)]).unwrap_err();
    assert!(err.to_string().contains("does not follow the last entry Some(3)"), "{err}");
}

#[tokio::test]
async fn an_older_data_dir_is_imported_from_sled() {
    let dir = Dir::new();
    let mut vote = Vote::new(4, 1);
    vote.commit();
    let purged = LogId::new(CommittedLeaderId::new(1, 1), 2);
    let committed = Some(LogId::new(CommittedLeaderId::new(2, 1), 6));
    let written = entries(2, 3..=7);
    {
        let log = dir.db.open_tree(SLED_LOG).unwrap();
        let meta = dir.db.open_tree(SLED_META).unwrap();
        for e in &written {
            log.insert(e.log_id.index.to_be_bytes(), encode(e).unwrap()).unwrap();
        }
        meta.insert("vote", encode(&vote).unwrap()).unwrap();
        meta.insert("last_purged", encode(&purged).unwrap()).unwrap();
        meta.insert("committed", encode(&committed).unwrap()).unwrap();
    }
    for _ in 0..2 {
        let mut store = dir.open();
        assert_eq!(bytes(&all(&mut store).await), bytes(&written));
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), committed);
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(purged));
        let names = dir.db.tree_names();
        assert!(!names.iter().any(|n| n == SLED_LOG.as_bytes() || n == SLED_META.as_bytes()));
    }
}

#[tokio::test]
async fn an_unreadable_meta_file_is_an_error_not_a_lost_vote() {
    let dir = Dir::new();
    dir.open().save_vote(&Vote::new(1, 1)).await.unwrap();
    std::fs::write(dir.log_dir().join(META), b"\x05\0\0\0junk").unwrap();
    let err = LogStore::open(&dir.db, dir.dir.path()).err().unwrap();
    assert!(err.to_string().contains("meta"), "{err}");
}

#[test]
fn records_parse_back() {
    let mut buf = Vec::new();
    frame(b"hello", &mut buf).unwrap();
    frame(b"", &mut buf).unwrap();
    assert_eq!(parse(&buf), Record::Payload(b"hello"));
    assert_eq!(parse(&buf[HEADER + 5..]), Record::Payload(b""));
    assert_eq!(parse(&buf[2 * HEADER + 5..]), Record::End);
    assert_eq!(parse(&buf[..HEADER + 4]), Record::Bad("record runs past the end of the file"));
}
