//! Agents report per-enforcer status and events; the fleet view shows them from any node,
//! with online/offline following the agent's stream; events sent twice are stored once.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::{Cluster, eventually};
use bulwark_proto::v1 as pb;

fn drift_event(id: &str) -> pb::AgentEvent {
    pb::AgentEvent {
        id: id.into(),
        kind: "drift-repaired".into(),
        enforcer: "firewall".into(),
        at_ms: 1,
        revision: 7,
        summary: "table inet bulwark was deleted; recreated".into(),
        before: "table inet bulwark missing".into(),
        after: "12 rules".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_presence_and_the_fleet_view() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let labels = [("role".to_owned(), "modality".to_owned())].into_iter().collect();
    let token = admin.create_token(labels, Duration::from_secs(600), 2).await?.token;
    let ct = LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, "ct-1", "198.18.10.5").await?;
    let mr = LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, "mr-1", "198.18.10.6").await?;

    // Nothing reported yet: offline, no enforcers.
    let listed = admin.list_agents().await?.agents;
    ensure!(listed.len() == 2 && listed.iter().all(|a| !a.online), "{listed:?}");

    // The CT streams from node 2 and reports; a batch sent twice stores its events once.
    let ct_client = ct.client_at(&cluster, 2)?;
    let stream = ct_client.stream_desired_state(0).await?;
    let report = pb::AgentReport {
        desired_revision: 7,
        enforcers: vec![pb::EnforcerStatus {
            enforcer: "firewall".into(),
            revision: 7,
            state: pb::EnforcerState::DriftedRepaired.into(),
            reason: "table deleted by someone; recreated".into(),
            ..Default::default()
        }],
        events: vec![drift_event("1700000000000-1"), drift_event("1700000000000-2")],
        agent_version: "test".into(),
        ..Default::default()
    };
    let ack = ct_client.report(report.clone()).await?;
    ensure!(ack.stored.len() == 2, "{ack:?}");
    ct_client.report(report.clone()).await?;
    // A retry that carries one more event (its ack was lost, the agent spooled another)
    // stores only the new one.
    let mut retried = report;
    retried.events.push(drift_event("1700000000000-3"));
    let ack = ct_client.report(retried).await?;
    ensure!(ack.stored.len() == 3, "{ack:?}");
    // Ids must ascend within a report, as an agent assigns them.
    let unordered = pb::AgentReport {
        events: vec![drift_event("1700000000000-5"), drift_event("1700000000000-4")],
        ..Default::default()
    };
    let refused = ct_client.report(unordered).await;
    ensure!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("ids must ascend")),
        "{refused:?}"
    );

    // Node 3, which serves neither, sees it online at node 2, drifted, with 2 events.
    let node3 = cluster.node_client(3)?;
    let shown = eventually("the CT online at node 2", Duration::from_secs(10), || async {
        let shown = node3.show_agent(&ct.id, 0).await?;
        let a = shown.agent.clone().context("no agent")?;
        ensure!(a.online && a.node == 2, "not online at node 2: {a:?}");
        Ok(shown)
    })
    .await?;
    let ids: Vec<&str> = shown.events.iter().map(|e| e.id.as_str()).collect();
    ensure!(
        ids == ["1700000000000-3", "1700000000000-2", "1700000000000-1"],
        "events stored once, newest first: {ids:?}"
    );
    let a = shown.agent.context("no agent")?;
    ensure!(a.applied_revision == 7 && a.agent_version == "test", "{a:?}");
    ensure!(
        a.enforcers.len() == 1 && a.enforcers[0].state == pb::EnforcerState::DriftedRepaired as i32,
        "{a:?}"
    );

    // Filters: by status and by label selector.
    let req = |selector: &str, status: &str| pb::ListAgentsRequest {
        selector: selector.into(),
        status: status.into(),
    };
    let drifted = node3.list_agents_where(req("", "drifted")).await?.agents;
    ensure!(drifted.len() == 1 && drifted[0].id == ct.id, "{drifted:?}");
    let offline = node3.list_agents_where(req("role=modality", "offline")).await?.agents;
    ensure!(offline.len() == 1 && offline[0].id == mr.id, "{offline:?}");
    ensure!(node3.list_agents_where(req("role=pacs", "")).await?.agents.is_empty());
    let bad = node3.list_agents_where(req("", "sideways")).await;
    ensure!(
        bad.as_ref().is_err_and(|e| e.to_string().contains("unknown status \"sideways\"")),
        "{bad:?}"
    );

    // The event log: by kind and host, paged, and followed as new events are committed.
    let query = |kinds: &[&str], host: &str, after: &str, limit: u32| pb::ListEventsRequest {
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        hostname: host.into(),
        after: after.into(),
        limit,
        ..Default::default()
    };
    let all = node3.list_events(query(&["drift-repaired"], "ct-1", "", 0)).await?;
    ensure!(all.events.len() == 3 && all.next.is_empty(), "{all:?}");
    ensure!(all.events.iter().all(|e| e.agent_id == ct.id && e.hostname == "ct-1"));
    // Paged one at a time, from inside a report's events and across to the next report's.
    let mut paged = Vec::new();
    let mut after = String::new();
    loop {
        let page = node3.list_events(query(&[], "", &after, 1)).await?;
        paged.extend(page.events.iter().filter_map(|e| Some(e.event.as_ref()?.id.clone())));
        if page.next.is_empty() {
            break;
        }
        ensure!(page.events.len() == 1, "{page:?}");
        after = page.next;
    }
    ensure!(paged == ["1700000000000-1", "1700000000000-2", "1700000000000-3"], "{paged:?}");
    let rest = node3.list_events(query(&[], "", &all.events[1].cursor, 10)).await?;
    ensure!(rest.events.len() == 1 && rest.events[0].event == all.events[2].event, "{rest:?}");
    ensure!(node3.list_events(query(&[], "mr-1", "", 0)).await?.events.is_empty());
    ensure!(node3.list_events(query(&["login"], "", "", 0)).await?.events.is_empty());
    let mut follow = node3.follow_events(query(&[], "", &rest.events[0].cursor, 0)).await?;
    let now = bulwark_controller::fleet::now_ms();
    ct_client
        .report(pb::AgentReport {
            events: vec![pb::AgentEvent {
                id: format!("{now:013}-00000001"),
                at_ms: now,
                kind: "commit-confirmed-rollback".into(),
                ..drift_event("unused")
            }],
            ..Default::default()
        })
        .await?;
    let followed = tokio::time::timeout(Duration::from_secs(10), follow.message())
        .await
        .context("nothing followed within 10 s")??
        .context("follow ended")?;
    ensure!(
        followed.event.as_ref().is_some_and(|e| e.kind == "commit-confirmed-rollback"),
        "{followed:?}"
    );

    // An agent cannot report for another, nor an admin for an agent.
    let refused = admin.report(pb::AgentReport::default()).await;
    ensure!(refused.is_err(), "an admin reported as an agent: {refused:?}");

    // The stream closes: offline again, seen from node 1.
    drop(stream);
    drop(ct_client);
    let node1 = cluster.node_client(1)?;
    eventually("the CT offline", Duration::from_secs(10), || async {
        let a = node1.show_agent(&ct.id, 0).await?.agent.context("no agent")?;
        ensure!(!a.online && a.node == 2, "still online: {a:?}");
        Ok(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_a_dead_node_show_offline() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let admin = cluster.client()?;
    let token = admin.create_token(Default::default(), Duration::from_secs(600), 1).await?.token;
    let ws = LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, "ws-1", "198.18.30.5").await?;
    let client = ws.client_at(&cluster, 3)?;
    let _stream = client.stream_desired_state(0).await?;
    let node1 = cluster.node_client(1)?;
    eventually("the workstation online at node 3", Duration::from_secs(10), || async {
        let a = node1.show_agent(&ws.id, 0).await?.agent.context("no agent")?;
        ensure!(a.online && a.node == 3, "{a:?}");
        Ok(())
    })
    .await?;
    // Node 3 dies without a word: its beat ages out, and its agents are offline within 30 s.
    cluster.kill(3)?;
    let started = std::time::Instant::now();
    eventually("the workstation offline", Duration::from_secs(30), || async {
        let a = node1.show_agent(&ws.id, 0).await?.agent.context("no agent")?;
        ensure!(!a.online, "{a:?}");
        Ok(())
    })
    .await?;
    eprintln!("offline {:.1} s after its node died", started.elapsed().as_secs_f32());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_kept_by_count_and_by_age() -> Result<()> {
    let options = bulwark_integration_tests::ClusterOptions {
        extra_args: ["--event-max", "3", "--event-retention", "6s"].map(String::from).to_vec(),
        ..Default::default()
    };
    let cluster = Cluster::start_with(3, options).await?;
    let admin = cluster.client()?;
    let token = admin.create_token(Default::default(), Duration::from_secs(600), 1).await?.token;
    let ws = LabAgent::enroll_at(&cluster, &cluster.addr(1), &token, "ws-1", "198.18.30.5").await?;
    let now = bulwark_controller::fleet::now_ms();
    // Five reports of one event each: the count cap drops whole reports.
    for i in 0..5 {
        let events = vec![pb::AgentEvent {
            id: format!("{:013}-{i:08}", now + i),
            at_ms: now + i,
            ..drift_event("unused")
        }];
        ws.client(&cluster)?.report(pb::AgentReport { events, ..Default::default() }).await?;
    }
    let ids = || async {
        let reply = admin.list_events(pb::ListEventsRequest::default()).await?;
        anyhow::Ok(
            reply
                .events
                .iter()
                .filter_map(|e| e.event.as_ref())
                .map(|e| e.id.clone())
                .collect::<Vec<_>>(),
        )
    };
    // The count cap drops the two oldest; the age limit then drops the rest.
    eventually("3 events kept", Duration::from_secs(10), || async {
        let kept = ids().await?;
        ensure!(kept.len() == 3 && kept[0].ends_with("00000002"), "{kept:?}");
        Ok(())
    })
    .await?;
    eventually("all events aged out", Duration::from_secs(20), || async {
        let kept = ids().await?;
        ensure!(kept.is_empty(), "{kept:?}");
        Ok(())
    })
    .await?;
    let shown = admin.show_agent(&ws.id, 0).await?;
    ensure!(shown.events.is_empty(), "the per-agent index was not pruned: {:?}", shown.events);
    Ok(())
}
