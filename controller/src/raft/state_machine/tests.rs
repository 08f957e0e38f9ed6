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
        payload: EntryPayload::Normal(std::sync::Arc::new(cmd.into())),
    }
}

/// The outcome of an entry that is not a batch.
fn one(applied: &Applied) -> WriteOutcome {
    match applied {
        Applied::One(outcome) => outcome.clone(),
        Applied::Batch(_) => panic!("a batch's outcomes where one was expected"),
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
    let revs: Vec<_> = out.iter().map(one).map(|o| (o.revision, o.conflict)).collect();
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
        payload: EntryPayload::Normal(std::sync::Arc::new(p)),
    };
    // The same id twice in one batch, then again in a later batch.
    let out =
        sm.apply(vec![at(1, proposal(7)), at(2, proposal(7)), at(3, proposal(8))]).await.unwrap();
    assert_eq!(out.iter().map(|o| one(o).revision).collect::<Vec<_>>(), [1, 1, 2]);
    let out = sm.apply(vec![at(4, proposal(7))]).await.unwrap();
    assert_eq!(one(&out[0]).revision, 1);
    assert_eq!(sm.reader().revision(), 2);
    assert_eq!(sm.reader().changes(0, 2).unwrap().len(), 2);
}

/// A batch entry's members apply as entries of their own would: each its own revision,
/// request id and compare-and-set; the newest ids are remembered, counted in ids.
#[tokio::test]
async fn batch_members_apply_independently_and_the_newest_ids_are_remembered() {
    let (_dir, mut sm) = open();
    sm.dedupe_window = 3;
    let member = |id, command| Proposal { request_id: id, command };
    let batch = |index, members| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(std::sync::Arc::new(Proposal {
            request_id: None,
            command: Command::Batch(members),
        })),
    };
    let out = sm
        .apply(vec![batch(
            1,
            vec![
                member(Some(1), put("a", "1", Some(0))),
                member(Some(2), put("a", "2", Some(0))), // conflict: a was just created
                member(Some(1), put("a", "1", Some(0))), // a retry of the first member
                member(None, put("b", "1", None)),
                member(Some(3), delete("missing")),
            ],
        )])
        .await
        .unwrap();
    let outcomes = |a: &Applied| match a {
        Applied::Batch(o) => o.iter().map(|o| (o.revision, o.conflict)).collect::<Vec<_>>(),
        Applied::One(_) => panic!("a batch answered with one outcome"),
    };
    assert_eq!(outcomes(&out[0]), [(1, None), (1, Some(1)), (1, None), (2, None), (2, None)]);
    assert_eq!(sm.reader().get("policy", "a").unwrap().unwrap().value, b"1");

    // Within the dedupe window, a retried id returns its first outcome, conflict included.
    let out = sm.apply(vec![entry_with_id(2, 2, put("a", "2", None))]).await.unwrap();
    assert_eq!(one(&out[0]), WriteOutcome { revision: 1, conflict: Some(1) });
    // Three newer ids push the batch's three out of the window.
    for id in 4..=6 {
        let out = sm.apply(vec![entry_with_id(id as u64, id, put("c", "1", None))]).await.unwrap();
        assert_eq!(one(&out[0]).revision, id as u64 - 1);
    }
    // Forgotten: the id that conflicted is applied anew.
    let out = sm.apply(vec![entry_with_id(7, 2, put("a", "2", None))]).await.unwrap();
    assert_eq!(one(&out[0]), WriteOutcome { revision: 6, conflict: None });
    // Remembered: the newest ids still return their first outcome.
    let out = sm.apply(vec![entry_with_id(8, 5, put("c", "2", None))]).await.unwrap();
    assert_eq!(one(&out[0]), WriteOutcome { revision: 4, conflict: None });
    // The count survives a reopen (it is read back from the stored ids).
    assert_eq!(next_remembered(&sm.tree).unwrap(), sm.remembered);
}

fn entry_with_id(index: u64, id: u128, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(std::sync::Arc::new(Proposal {
            request_id: Some(id),
            command,
        })),
    }
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
    assert_eq!(one(&out[0]).revision, 21);
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
    assert_eq!(one(&out[0]), WriteOutcome { revision: 1, conflict: Some(1) });
    assert_eq!(sm.reader().get("policy", "agt-1").unwrap(), None);
    // Both changes take one revision, and watchers see both at it, in order.
    let out = sm.apply(vec![entry(3, txn(1))]).await.unwrap();
    assert_eq!(one(&out[0]), WriteOutcome { revision: 2, conflict: None });
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
    assert_eq!(one(&out[0]), WriteOutcome { revision: 1, conflict: None });
    // A failed compare-and-set stores neither the change nor its audit entry.
    let out = sm.apply(vec![entry(2, audited(Some(0)))]).await.unwrap();
    assert_eq!(one(&out[0]), WriteOutcome { revision: 1, conflict: Some(1) });
    assert_eq!(sm.reader().audit_from("").unwrap().len(), 1);
    assert_eq!(sm.reader().revision(), 1);
}

fn login(id: &str) -> crate::fleet::AgentEvent {
    crate::fleet::AgentEvent {
        id: id.into(),
        kind: "login".into(),
        at_ms: id[..13].parse().unwrap(),
        summary: format!("login {id}"),
        ..Default::default()
    }
}

fn events(agent: &str, ids: &[&str]) -> Command {
    let events = ids.iter().map(|id| (id.to_string(), encode(&login(id)).unwrap())).collect();
    Command::Events { agent: agent.into(), events }
}

fn ids(events: &[crate::fleet::AgentEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// A report's events are one note each agent; a retried report (also in the same apply)
/// stores only the events past the agent's mark; listing pages through and across reports;
/// retention drops whole reports.
#[tokio::test]
async fn events_are_stored_once_per_report_and_listed_in_order() {
    use crate::fleet::{self, EventFilter, Retention};
    let (_dir, mut sm) = open();
    let reader = sm.reader();
    let (a1, a2, a3, a4) =
        ("1000000000001-01", "1000000000002-02", "1000000000003-03", "1000000000004-04");
    sm.apply(vec![
        entry(1, events("agt-a", &[a1, a2])),
        // The same report retried with one more event, in the same apply.
        entry(2, events("agt-a", &[a1, a2, a3])),
        entry(3, events("agt-b", &[a2])),
    ])
    .await
    .unwrap();
    // Retried again later: nothing new. Then a new report.
    sm.apply(vec![entry(4, events("agt-a", &[a2, a3])), entry(5, events("agt-a", &[a4]))])
        .await
        .unwrap();

    let stored = reader.notes("event/").unwrap();
    let keys: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("event/{a1}/agt-a/{a2}/2"),
            format!("event/{a2}/agt-b/{a2}/1"),
            format!("event/{a3}/agt-a/{a3}/1"),
            format!("event/{a4}/agt-a/{a4}/1"),
        ]
    );
    // The value is a postcard Vec, assembled from the events' own encodings.
    let first: Vec<fleet::AgentEvent> = decode(&stored[0].1).unwrap();
    assert_eq!(first, vec![login(a1), login(a2)]);

    let recent = fleet::recent_events(&reader, "agt-a", 3).unwrap();
    assert_eq!(ids(&recent), [a4, a3, a2]);

    // Every event once, one per page, each page resuming from the last one's cursor.
    let filter = EventFilter::default();
    let mut cursor = String::new();
    let mut listed = Vec::new();
    loop {
        let (page, next) = fleet::list_events(&reader, &filter, &cursor, 1).unwrap();
        if page.is_empty() {
            break;
        }
        listed.extend(page.into_iter().map(|e| (e.agent_id, e.event.id)));
        cursor = next;
    }
    let want = [("agt-a", a1), ("agt-a", a2), ("agt-b", a2), ("agt-a", a3), ("agt-a", a4)];
    let want: Vec<(String, String)> =
        want.iter().map(|(a, id)| (a.to_string(), id.to_string())).collect();
    assert_eq!(listed, want);
    // `since` skips reports whose events are all older, and events older within one.
    let since = EventFilter { since_ms: 1000000000002, ..Default::default() };
    let (page, _) = fleet::list_events(&reader, &since, "", 10).unwrap();
    assert_eq!(page.len(), 4, "{page:?}");

    // Count retention: whole reports, oldest first, while at least the maximum remain.
    let keep =
        |max_events| Retention { max_age: std::time::Duration::from_secs(1 << 40), max_events };
    assert!(fleet::expired_events(&reader, keep(5), 0).unwrap().is_empty());
    let expired = fleet::expired_events(&reader, keep(4), 0).unwrap();
    assert!(expired.is_empty(), "the oldest report holds 2 events: {expired:?}");
    let expired = fleet::expired_events(&reader, keep(3), 0).unwrap();
    assert_eq!(expired, [format!("event/{a1}/agt-a/{a2}/2")]);
    // Age retention: reports whose last event is older than the cutoff.
    let aged = Retention { max_age: std::time::Duration::from_millis(2), max_events: 100 };
    let expired = fleet::expired_events(&reader, aged, 1000000000005).unwrap();
    assert_eq!(expired.len(), 2, "{expired:?}");
}

/// Events stored one per key before reports were stored whole are still read.
#[tokio::test]
async fn events_of_the_older_layout_are_read() {
    use crate::fleet::{self, EventFilter};
    let (_dir, mut sm) = open();
    let reader = sm.reader();
    let old = "1000000000001-01";
    let note = |key: String, value: Vec<u8>| Command::Note { key, value, replace: true };
    sm.apply(vec![
        entry(1, note(format!("event/{old}/agt-a"), encode(&login(old)).unwrap())),
        entry(2, note(format!("agent-event/agt-a/{old}"), Vec::new())),
        entry(3, events("agt-a", &["1000000000002-02"])),
    ])
    .await
    .unwrap();
    let recent = fleet::recent_events(&reader, "agt-a", 10).unwrap();
    assert_eq!(ids(&recent), ["1000000000002-02", old]);
    let (page, _) = fleet::list_events(&reader, &EventFilter::default(), "", 10).unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].cursor, format!("{old}/agt-a"));
    let (rest, _) =
        fleet::list_events(&reader, &EventFilter::default(), &page[0].cursor, 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event.id, "1000000000002-02");
}
