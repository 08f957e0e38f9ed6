//! The agent's local Prometheus `/metrics` (default 127.0.0.1:9464; `--metrics-listen off`
//! turns it off): per-enforcer state, drift repairs, the event spool's depth, and whether a
//! controller is connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::cache::Cache;
use crate::enforce::StatusBoard;
use crate::run::state_name;
use crate::sync::Link;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnforcerLabel {
    enforcer: String,
    state: String,
}

/// Counts of what the enforcers did, kept by the reconcile loops.
#[derive(Debug, Default)]
pub struct Counters {
    pub drift_repairs: AtomicU64,
    pub failed_passes: AtomicU64,
}

/// What `/metrics` reads from.
#[derive(Clone)]
pub struct Sources {
    pub board: StatusBoard,
    pub cache: Cache,
    pub link: Link,
    pub counters: Arc<Counters>,
}

fn render(s: &Sources) -> String {
    let mut registry = Registry::with_prefix("bulwark_agent");
    let states: Family<EnforcerLabel, Gauge> = Family::default();
    for e in s.board.snapshot() {
        let label =
            EnforcerLabel { enforcer: e.enforcer.clone(), state: state_name(e.state).into() };
        states.get_or_create(&label).set(1);
    }
    registry.register("enforcer_state", "1 for each enforcer's current state", states);
    let repairs: Counter = Counter::default();
    repairs.inc_by(s.counters.drift_repairs.load(Ordering::Relaxed));
    registry.register("drift_repairs", "Drift found and repaired since start", repairs);
    let failed: Counter = Counter::default();
    failed.inc_by(s.counters.failed_passes.load(Ordering::Relaxed));
    registry.register("failed_passes", "Enforcer passes that failed since start", failed);
    let spool: Gauge = Gauge::default();
    spool.set(s.cache.spool_len() as i64);
    registry.register("spool_events", "Events waiting for a controller to commit them", spool);
    let connected: Gauge = Gauge::default();
    connected.set(i64::from(s.link.controller().is_some()));
    registry.register("controller_connected", "1 while streaming from a controller", connected);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    text
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub async fn serve(sources: Sources, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, render(&sources)),
                    _ => (StatusCode::NOT_FOUND, "try /metrics\n".to_owned()),
                };
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
            {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}
