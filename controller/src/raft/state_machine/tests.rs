use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};

use super::*;
use crate::raft::LogStore;

struct FileLogBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for FileLogBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::open(dir.path().join("sled")).expect("open sled");
        let (log, sm) = open_storage(&db, dir.path())?;
        Ok((dir, log, sm))
    }
}

/// openraft's storage conformance suite against the file log store and sled state machine.
#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(FileLogBuilder)
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd.into()),
    }
}

fn put(key: &str, value: &str, expect: Option<u64>) -> Command {
    Command::Put {
        kind: "policy".into(),
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expect_mod_revision: expect,
    }
}

fn delete(key: &str) -> Command {
    Command::Delete { kind: "policy".into(), key: key.into(), expect_mod_revision: None }
}

fn open() -> (tempfile::TempDir, StateMachine) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("sled")).unwrap();
    let sm = StateMachine::open(&db).unwrap();
    (dir, sm)
}

#[tokio::test]
async fn revisions_history_and_compare_and_set() {
    let (_dir, mut sm) = open();
    let reader = sm.reader();
    let out = sm
        .apply(vec![
            entry(1, put("a", "1", None)),
            entry(2, put("a", "2", None)),
            entry(3, put("b", "1", Some(0))),
            entry(4, put("b", "x", Some(1))), // conflict: b is at revision 3
            entry(5, delete("missing")),      // no-op, no revision
            entry(6, delete("a")),
        ])
        .await
        .unwrap();
    let revs: Vec<_> = out.iter().map(|o| (o.revision, o.conflict)).collect();
    assert_eq!(revs, [(1, None), (2, None), (3, None), (3, Some(3)), (3, None), (4, None)]);
    assert_eq!(reader.revision(), 4);
    assert_eq!(reader.get("policy", "a").unwrap(), None);
    let b = reader.get("policy", "b").unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision, b.value.as_slice()), (3, 3, &b"1"[..]));

    let changes = reader.changes(1, 4).unwrap();
    let summary: Vec<_> =
        changes.iter().map(|c| (c.revision, c.op, c.record.key.as_str())).collect();
    assert_eq!(
        summary,
        [(2, ChangeOp::Put, "a"), (3, ChangeOp::Put, "b"), (4, ChangeOp::Delete, "a")]
    );
    // The deleted record keeps its create revision and carries the deleting revision.
    assert_eq!((changes[2].record.create_revision, changes[2].record.mod_revision), (1, 4));
    let (records, at) = reader.list("policy").unwrap();
    assert_eq!((records.len(), at), (1, 4));
    assert!(reader.list("segment").unwrap().0.is_empty());
}

#[tokio::test]
async fn a_retried_request_id_applies_once() {
    let (_dir, mut sm) = open();
    let proposal = |id| Proposal { request_id: Some(id), command: put("a", "v", None) };
    let at = |index, p: Proposal| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(p),
    };
    // The same id twice in one batch, then again in a later batch.
    let out =
        sm.apply(vec![at(1, proposal(7)), at(2, proposal(7)), at(3, proposal(8))]).await.unwrap();
    assert_eq!(out.iter().map(|o| o.revision).collect::<Vec<_>>(), [1, 1, 2]);
    let out = sm.apply(vec![at(4, proposal(7))]).await.unwrap();
    assert_eq!(out[0].revision, 1);
    assert_eq!(sm.reader().revision(), 2);
    assert_eq!(sm.reader().changes(0, 2).unwrap().len(), 2);
}

#[tokio::test]
async fn snapshot_round_trip_restores_records_history_and_revision() {
    let (_a, mut source) = open();
    source.apply((1..=20).map(|i| entry(i, put(&format!("k{i}"), "v", None)))).await.unwrap();
    let snapshot = source.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(20));

    let (_b, mut target) = open();
    target.apply(vec![entry(1, put("stale", "gone", None))]).await.unwrap();
    target.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let reader = target.reader();
    assert_eq!(reader.revision(), 20);
    assert_eq!(reader.get("policy", "stale").unwrap(), None);
    assert_eq!(reader.list("").unwrap().0, source.reader().list("").unwrap().0);
    assert_eq!(reader.changes(10, 20).unwrap().len(), 10);
    // The next write continues the revision sequence.
    let out = target.apply(vec![entry(21, put("k21", "v", None))]).await.unwrap();
    assert_eq!(out[0].revision, 21);
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let mut sm = StateMachine::open(&db).unwrap();
        sm.apply((1..=5).map(|i| entry(i, put("k", &i.to_string(), None)))).await.unwrap();
        db.flush().unwrap();
    }
    let db = sled::open(dir.path().join("sled")).unwrap();
    let mut sm = StateMachine::open(&db).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert_eq!(sm.reader().revision(), 5);
    assert_eq!(sm.reader().get("policy", "k").unwrap().unwrap().value, b"5");
}

#[test]
fn compacted_history_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("sled")).unwrap();
    let sm = StateMachine::open(&db).unwrap();
    let tree = db.open_tree("sm").unwrap();
    let change = |rev| Change {
        revision: rev,
        op: ChangeOp::Put,
        record: Record {
            kind: "k".into(),
            key: "k".into(),
            value: vec![],
            create_revision: rev,
            mod_revision: rev,
        },
    };
    for rev in 5..=7 {
        tree.insert(history_key(rev, 0), encode(&change(rev)).unwrap()).unwrap();
    }
    let err = sm.reader().changes(2, 7).unwrap_err();
    assert_eq!(
        err.to_string(),
        "revision 3 has been compacted; the oldest retained change is revision 5"
    );
    assert_eq!(sm.reader().changes(4, 7).unwrap().len(), 3);
}

#[tokio::test]
async fn a_transaction_applies_all_or_nothing() {
    let (_dir, mut sm) = open();
    sm.apply(vec![entry(1, put("tok", "5 uses", None))]).await.unwrap();
    let txn = |expect| {
        Command::Txn(vec![put("tok", "4 uses", Some(expect)), put("agt-1", "host", Some(0))])
    };
    // The token is at revision 1: a stale expectation changes nothing.
    let out = sm.apply(vec![entry(2, txn(7))]).await.unwrap();
    assert_eq!(out[0], WriteOutcome { revision: 1, conflict: Some(1) });
    assert_eq!(sm.reader().get("policy", "agt-1").unwrap(), None);
    // Both changes take one revision, and watchers see both at it, in order.
    let out = sm.apply(vec![entry(3, txn(1))]).await.unwrap();
    assert_eq!(out[0], WriteOutcome { revision: 2, conflict: None });
    assert_eq!(sm.reader().get("policy", "tok").unwrap().unwrap().value, b"4 uses");
    assert_eq!(sm.reader().get("policy", "agt-1").unwrap().unwrap().mod_revision, 2);
    let changes = sm.reader().changes(1, 2).unwrap();
    let keys: Vec<_> = changes.iter().map(|c| (c.revision, c.record.key.as_str())).collect();
    assert_eq!(keys, [(2, "tok"), (2, "agt-1")]);
    assert!(Command::Txn(vec![Command::Txn(vec![])]).validate().is_err());
}

#[tokio::test]
async fn an_audit_entry_commits_with_the_change_it_records() {
    let (_dir, mut sm) = open();
    let audited = |expect| {
        Command::Txn(vec![
            put("k", "v", expect),
            Command::Audit { key: format!("0001-{expect:?}"), entry: b"{}".to_vec() },
        ])
    };
    let out = sm.apply(vec![entry(1, audited(Some(0)))]).await.unwrap();
    assert_eq!(out[0], WriteOutcome { revision: 1, conflict: None });
    // A failed compare-and-set stores neither the change nor its audit entry.
    let out = sm.apply(vec![entry(2, audited(Some(0)))]).await.unwrap();
    assert_eq!(out[0], WriteOutcome { revision: 1, conflict: Some(1) });
    assert_eq!(sm.reader().audit_from("").unwrap().len(), 1);
    assert_eq!(sm.reader().revision(), 1);
}
