//! Prometheus metrics of a controller node, and its plain-HTTP endpoints for probes and
//! scrapers: `/healthz` (the process answers), `/readyz` (a member of a cluster with a
//! leader, caught up to the leader's commit: a linearizable read barrier succeeds) and
//! `/metrics`. Served on `--http-listen` (default 127.0.0.1:7080), without TLS: it shows
//! no data beyond counts, and a kubelet or Prometheus can reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::fleet;
use crate::node::{Consistency, Node};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// Counters the services update as they work; gauges are read at scrape time.
#[derive(Debug)]
pub struct Metrics {
    pub rpc_seconds: Family<MethodLabel, Histogram>,
    pub events_committed: Counter,
    pub reports: Counter,
    pub leader_changes: Counter,
    /// Desired-state streams open on this node.
    pub streams_open: Arc<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            rpc_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            events_committed: Counter::default(),
            reports: Counter::default(),
            leader_changes: Counter::default(),
            streams_open: Arc::default(),
        }
    }
}

/// Counts leader changes seen by this node while it runs.
pub fn spawn_leader_watch(node: Arc<Node>) {
    tokio::spawn(async move {
        let mut metrics = node.raft.metrics();
        let mut leader = metrics.borrow().current_leader;
        while metrics.changed().await.is_ok() {
            let now = metrics.borrow().current_leader;
            if now != leader && now.is_some() {
                node.metrics.leader_changes.inc();
            }
            leader = now;
        }
    });
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

/// The exposition text of `node`'s metrics now.
pub fn render(node: &Node) -> String {
    let mut registry = Registry::with_prefix("bulwark");
    let m = node.raft.metrics().borrow().clone();
    gauge(&mut registry, "raft_term", "Current Raft term", m.current_term as i64);
    let is_leader = i64::from(m.current_leader == Some(node.id));
    gauge(&mut registry, "raft_is_leader", "1 if this node is the leader", is_leader);
    let has_leader = i64::from(m.current_leader.is_some());
    gauge(&mut registry, "raft_has_leader", "1 if this node knows a leader", has_leader);
    let last_log = m.last_log_index.unwrap_or(0) as i64;
    gauge(&mut registry, "raft_last_log_index", "Last log index on this node", last_log);
    let applied = m.last_applied.map_or(0, |l| l.index) as i64;
    gauge(&mut registry, "raft_applied_index", "Last applied log index", applied);
    let snapshot = m.snapshot.map_or(0, |l| l.index) as i64;
    gauge(&mut registry, "raft_snapshot_index", "Log index of the last snapshot", snapshot);
    let members = m.membership_config.membership().nodes().count() as i64;
    gauge(&mut registry, "raft_members", "Members (voters and learners)", members);
    let revision = node.reader.revision() as i64;
    gauge(&mut registry, "revision", "Applied cluster revision", revision);
    registry.register(
        "raft_leader_changes",
        "Leader changes seen by this node since it started",
        node.metrics.leader_changes.clone(),
    );
    let streams = node.metrics.streams_open.load(Ordering::Relaxed);
    gauge(&mut registry, "agent_streams", "Agents streaming from this node", streams);
    let agents: Family<StateLabel, Gauge> = Family::default();
    if let Ok(view) = fleet::view(&node.reader, fleet::now_ms()) {
        for e in &view {
            let state = if e.revoked.is_some() {
                "revoked"
            } else if !e.online {
                "offline"
            } else if e.status.as_ref().is_some_and(|s| s.any(fleet::EnforcerState::Failed)) {
                "failed"
            } else if e.status.as_ref().is_some_and(|s| {
                s.any(fleet::EnforcerState::DriftedRepaired)
                    || s.any(fleet::EnforcerState::AuditNoncompliant)
            }) {
                "drifted"
            } else {
                "compliant"
            };
            agents.get_or_create(&StateLabel { state: state.into() }).inc();
        }
    }
    registry.register("agents", "Enrolled agents by state (from any node)", agents);
    let rollout: Family<StateLabel, Gauge> = Family::default();
    let phase = match crate::policy::rollout::current(&node.reader) {
        Ok(Some((r, _, _))) => r.phase.name(),
        _ => "none",
    };
    rollout.get_or_create(&StateLabel { state: phase.into() }).set(1);
    registry.register("rollout", "The active rollout's phase (none when there is none)", rollout);
    registry.register(
        "events_committed",
        "Agent events committed through this node",
        node.metrics.events_committed.clone(),
    );
    registry.register(
        "agent_reports",
        "Agent reports served by this node",
        node.metrics.reports.clone(),
    );
    registry.register(
        "grpc_request_duration_seconds",
        "gRPC calls by method: time to the response (to the first message for streams)",
        node.metrics.rpc_seconds.clone(),
    );
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    text
}

/// `/readyz`: Ok, or why not.
pub async fn ready(node: &Node) -> Result<(), String> {
    let m = node.raft.metrics().borrow().clone();
    if !m.membership_config.membership().nodes().any(|(id, _)| *id == node.id) {
        return Err(format!("node {} is not a member of a cluster (yet)", node.id));
    }
    if m.current_leader.is_none() {
        return Err("no leader is known".into());
    }
    match tokio::time::timeout(Duration::from_secs(2), node.read_barrier(Consistency::Linearizable))
        .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("not caught up with the leader: {e}")),
        Err(_) => Err("not caught up with the leader within 2 s".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

async fn handle(node: Arc<Node>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match ready(&node).await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let mut resp = text(StatusCode::OK, render(&node));
            if let Ok(v) = "application/openmetrics-text; version=1.0.0; charset=utf-8".parse() {
                resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            resp
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!("no such endpoint {other}: try /healthz, /readyz, /metrics\n"),
        ),
    }
}

/// Serves the HTTP endpoints on `listener` until the task is dropped.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let node = node.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(node, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
            {
                tracing::debug!(error = %e, "http connection");
            }
        });
    }
}
