use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::node::{Node, NodeConfig, NodeError, Tuning};
use crate::pki::Ca;
use crate::store::{Command, Proposal};
use crate::tls::TlsFiles;

/// A started single-voter node in `dir`, leader of its own cluster.
async fn single_node(dir: &std::path::Path) -> std::sync::Arc<Node> {
    let ca = Ca::generate("test CA").unwrap();
    let issued = ca.issue_controller(1, &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
    let tls = TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("c.pem"), key: dir.join("k.pem") };
    std::fs::write(&tls.ca, ca.cert_pem()).unwrap();
    std::fs::write(&tls.cert, &issued.cert_pem).unwrap();
    std::fs::write(&tls.key, &issued.key_pem).unwrap();
    let node = Node::start(NodeConfig {
        node_id: 1,
        advertise: "127.0.0.1:1".into(),
        data_dir: dir.join("data"),
        cluster_name: "group-test".into(),
        tls,
        tuning: Tuning::default(),
        ca_key: None,
        agent_cert_ttl: Duration::from_secs(3600),
        enroll_rate: 60,
        event_retention: Default::default(),
    })
    .await
    .unwrap();
    node.init(Vec::new()).await.unwrap();
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(1), "leader")
        .await
        .unwrap();
    node
}

fn put(key: &str, expect: Option<u64>) -> Command {
    Command::Put {
        kind: "k".into(),
        key: key.into(),
        value: b"v".to_vec(),
        expect_mod_revision: expect,
    }
}

/// Concurrent writes share entries, and each still gets its own outcome: its own revision,
/// its own compare-and-set result, and a retried request id its first outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path()).await;
    let before = node.raft.metrics().borrow().last_log_index.unwrap_or(0);

    let mut writes = tokio::task::JoinSet::new();
    for i in 0..100u128 {
        for (n, proposal) in [
            // A new record with a request id, twice: the second is a retry.
            Proposal { request_id: Some(i + 1), command: put(&format!("k{i}"), None) },
            Proposal { request_id: Some(i + 1), command: put(&format!("k{i}"), None) },
            // Everyone creates the same record: one wins, the others conflict.
            Proposal { request_id: None, command: put("contended", Some(0)) },
        ]
        .into_iter()
        .enumerate()
        {
            let node = node.clone();
            writes.spawn(async move { (i, n, node.write(proposal).await) });
        }
    }
    let mut first = std::collections::HashMap::new();
    let mut retried = std::collections::HashMap::new();
    let (mut won, mut conflicts) = (Vec::new(), 0);
    while let Some(joined) = writes.join_next().await {
        let (i, n, written) = joined.unwrap();
        let written: Result<_, NodeError> = written;
        let outcome = written.unwrap().outcome;
        match n {
            0 => assert!(first.insert(i, outcome).is_none()),
            1 => assert!(retried.insert(i, outcome).is_none()),
            _ if outcome.conflict.is_some() => conflicts += 1,
            _ => won.push(outcome.revision),
        }
    }
    assert_eq!((won.len(), conflicts), (1, 99), "exactly one create of the contended record");
    // A retry returns the outcome of the write it repeats, whichever of the two ran first.
    assert_eq!(first, retried);
    // Each applied write took a revision of its own.
    let mut revisions: Vec<u64> = first.values().map(|o| o.revision).chain(won).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions, (1..=101).collect::<Vec<_>>());
    assert_eq!(node.reader.list("k").unwrap().0.len(), 101);

    let entries = node.raft.metrics().borrow().last_log_index.unwrap_or(0) - before;
    assert!(entries < 300, "300 concurrent writes took {entries} entries: nothing was grouped");
    node.shutdown().await;
}
