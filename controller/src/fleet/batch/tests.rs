use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::store::WriteOutcome;

fn note(key: &str) -> Command {
    Command::Note { key: key.into(), value: vec![1, 2, 3], replace: true }
}

/// A fake `Node::write`: records each entry's ops; each write waits for a permit of
/// `gate`, so a test decides when a batch commits. Fails with `fail` when set.
struct Fake {
    entries: Arc<Mutex<Vec<Vec<Command>>>>,
    gate: Arc<Semaphore>,
}

fn fake(fail: Option<NodeError>) -> (Fake, WriteFn) {
    let entries = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(Semaphore::new(0));
    let (e, g) = (entries.clone(), gate.clone());
    let write: WriteFn = Arc::new(move |cmd| {
        let (entries, gate, fail) = (e.clone(), g.clone(), fail.clone());
        Box::pin(async move {
            let Command::Txn(ops) = cmd else { panic!("a batch is one transaction") };
            let index = {
                let mut entries = entries.lock().unwrap();
                entries.push(ops);
                entries.len() as u64
            };
            gate.acquire().await.unwrap().forget();
            match fail {
                Some(e) => Err(e),
                None => Ok(Written { outcome: WriteOutcome::default(), log_index: index }),
            }
        })
    });
    (Fake { entries, gate }, write)
}

/// Waits until the fake has been asked for `n` entries.
async fn entries_requested(fake: &Fake, n: usize) {
    while fake.entries.lock().unwrap().len() < n {
        tokio::task::yield_now().await;
    }
}

/// Submits each caller's ops and polls each submission once, so all are queued in order.
async fn queue_all(
    batcher: &NoteBatcher,
    callers: Vec<Vec<Command>>,
) -> Vec<Pin<Box<impl Future<Output = Result<Written, NodeError>> + '_>>> {
    let mut pending: Vec<_> =
        callers.into_iter().map(|ops| Box::pin(batcher.submit(ops))).collect();
    for p in &mut pending {
        assert!(futures::poll!(p.as_mut()).is_pending());
    }
    pending
}

#[tokio::test]
async fn callers_that_queue_while_a_batch_commits_share_the_next_entry() {
    let (fake, write) = fake(None);
    let batcher = NoteBatcher::spawn(Limits::default(), write);
    let first = queue_all(&batcher, vec![vec![note("first")]]).await;
    entries_requested(&fake, 1).await;
    let callers: Vec<Vec<Command>> =
        (0..100).map(|i| vec![note(&format!("c{i}/a")), note(&format!("c{i}/b"))]).collect();
    let rest = queue_all(&batcher, callers).await;
    fake.gate.add_permits(2);
    let first = futures::future::join_all(first).await;
    let rest = futures::future::join_all(rest).await;
    assert_eq!(first[0].as_ref().unwrap().log_index, 1);
    assert!(rest.iter().all(|r| r.as_ref().unwrap().log_index == 2), "{rest:?}");
    let entries = fake.entries.lock().unwrap();
    assert_eq!(entries.len(), 2, "101 callers, 2 entries");
    // Every caller's ops, together and in submission order.
    let expected: Vec<Command> =
        (0..100).flat_map(|i| [note(&format!("c{i}/a")), note(&format!("c{i}/b"))]).collect();
    assert_eq!(entries[1], expected);
}

#[tokio::test]
async fn a_bad_caller_is_refused_alone() {
    let (fake, write) = fake(None);
    let batcher = NoteBatcher::spawn(Limits::default(), write);
    fake.gate.add_permits(10);
    let bad_key = batcher.submit(vec![note("ok"), note("")]).await;
    assert!(matches!(&bad_key, Err(NodeError::Invalid(m)) if m.contains("key must not be empty")));
    let put = Command::Put {
        kind: "policy".into(),
        key: "k".into(),
        value: vec![],
        expect_mod_revision: Some(3),
    };
    let not_a_note = batcher.submit(vec![note("ok"), put]).await;
    assert!(matches!(&not_a_note, Err(NodeError::Internal(m)) if m.contains("not a put")));
    assert!(matches!(batcher.submit(vec![]).await, Err(NodeError::Invalid(_))));
    batcher.submit(vec![note("good")]).await.unwrap();
    assert_eq!(*fake.entries.lock().unwrap(), vec![vec![note("good")]]);
}

#[tokio::test]
async fn a_batch_stops_at_its_limits_and_keeps_the_order() {
    let (fake, write) = fake(None);
    let batcher = NoteBatcher::spawn(Limits { max_ops: 5, max_bytes: 1 << 20 }, write);
    let first = queue_all(&batcher, vec![vec![note("0")]]).await;
    entries_requested(&fake, 1).await;
    let big: Vec<Command> = (0..7).map(|i| note(&format!("big/{i}"))).collect();
    let callers = vec![
        vec![note("1/a"), note("1/b")],
        vec![note("2/a"), note("2/b")],
        vec![note("3/a"), note("3/b")],
        big.clone(),
        vec![note("4")],
    ];
    let rest = queue_all(&batcher, callers).await;
    fake.gate.add_permits(10);
    futures::future::join_all(first).await;
    for r in futures::future::join_all(rest).await {
        r.unwrap();
    }
    let entries = fake.entries.lock().unwrap();
    assert_eq!(
        *entries,
        vec![
            vec![note("0")],
            vec![note("1/a"), note("1/b"), note("2/a"), note("2/b")],
            vec![note("3/a"), note("3/b")],
            // Above the limit on its own: written alone rather than refused.
            big,
            vec![note("4")],
        ]
    );
}

#[tokio::test]
async fn every_caller_gets_the_batch_error() {
    let (fake, write) = fake(Some(NodeError::NoQuorum("no majority".into())));
    let batcher = NoteBatcher::spawn(Limits::default(), write);
    let pending = queue_all(&batcher, (0..3).map(|i| vec![note(&i.to_string())]).collect()).await;
    fake.gate.add_permits(10);
    for r in futures::future::join_all(pending).await {
        assert!(matches!(r, Err(NodeError::NoQuorum(m)) if m == "no majority"));
    }
}

#[tokio::test]
async fn a_cancelled_caller_does_not_stop_the_others() {
    let (fake, write) = fake(None);
    let batcher = NoteBatcher::spawn(Limits::default(), write);
    let first = queue_all(&batcher, vec![vec![note("0")]]).await;
    entries_requested(&fake, 1).await;
    let mut rest = queue_all(&batcher, vec![vec![note("gone")], vec![note("kept")]]).await;
    drop(rest.remove(0));
    fake.gate.add_permits(10);
    futures::future::join_all(first).await;
    rest.remove(0).await.unwrap();
    // The cancelled caller's note was queued already: it is written with the others.
    assert_eq!(fake.entries.lock().unwrap()[1], vec![note("gone"), note("kept")]);
}
