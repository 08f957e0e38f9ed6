//! The web console behind `bulwarkctl console`: a small HTTP server on a loopback address
//! that shows the fleet, hosts, rollouts, alerts, the login audit, policy history and the
//! cluster's health, with live updates over server-sent events, and lets operators pause,
//! resume, abort and start rollouts.
//!
//! It holds no credential of its own: every page is read, and every action taken, through
//! the controller's gRPC services with the admin certificate `bulwarkctl` was given (like
//! `kubectl proxy`), so the controller enforces the admin's role. Whoever can reach the
//! listener acts as that admin, hence loopback only, a Host check against DNS rebinding,
//! and a CSRF guard on every POST (a custom header that cross-origin pages cannot send
//! without a preflight, which is never granted, and an Origin that must match the Host).
//!
//! Modules: `data` (controller calls, the chart's ring buffer, pollers and the event
//! follower feeding the live stream), `view` (server-rendered pages, every value escaped),
//! `chart` (inline SVG), `html` (escaping, layout). The assets (one stylesheet, one small
//! script, no framework) are compiled into the binary.

pub mod chart;
pub mod data;
pub mod html;
pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use bulwark_proto::v1 as pb;
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::client::{Client, ClientError};
use crate::fleet::now_ms;
use data::{Data, HostState, Timing};

/// The header every POST must carry (the page's script sets it).
pub const CSRF_HEADER: &str = "x-bulwark-console";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// Why the console could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "--listen {0}: the console only listens on a loopback address (127.0.0.1 or [::1]); \
         it acts with your admin certificate, so anyone who can reach it acts as you. \
         To use it from another machine, tunnel to it (ssh -L 8080:127.0.0.1:8080 ...)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("the console's server failed: {0}")]
    Serve(std::io::Error),
}

/// Refuses any address that is not loopback.
pub fn check_listen(addr: SocketAddr) -> Result<(), ConsoleError> {
    if addr.ip().is_loopback() { Ok(()) } else { Err(ConsoleError::NotLoopback(addr)) }
}

/// Binds `addr` after [`check_listen`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ConsoleError> {
    check_listen(addr)?;
    TcpListener::bind(addr).await.map_err(|e| ConsoleError::Bind(addr, e))
}

struct App {
    data: Data,
    shutdown: watch::Receiver<bool>,
}

type Shared = Arc<App>;

/// Serves the console on `listener` until `shutdown` resolves, reading and acting through
/// `client`.
pub async fn run(
    client: Client,
    listener: TcpListener,
    timing: Timing,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    let local = listener.local_addr().map_err(ConsoleError::Serve)?;
    check_listen(local)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = Arc::new(App { data: Data::new(client, timing), shutdown: stop_rx.clone() });
    let pollers = {
        let app = app.clone();
        tokio::spawn(async move { app.data.run(stop_rx).await })
    };
    let served = axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Ends the live streams, so the graceful shutdown does not wait on them.
            let _ = stop_tx.send(true);
        })
        .await;
    pollers.abort();
    served.map_err(ConsoleError::Serve)
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(fleet_page))
        .route("/hosts/{id}", get(host_page))
        .route("/rollout", get(rollout_page))
        .route("/rollout/{action}", post(rollout_action))
        .route("/alerts", get(alerts_page))
        .route("/logins", get(logins_page))
        .route("/policies", get(policies_page))
        .route("/policies/{*key}", get(policy_page))
        .route("/cluster", get(cluster_page))
        .route("/live", get(live))
        .route("/assets/console.css", get(|| asset("text/css; charset=utf-8", CSS)))
        .route("/assets/console.js", get(|| asset("text/javascript; charset=utf-8", JS)))
        .route("/favicon.ico", get(|| asset("image/svg+xml", FAVICON)))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, Html(view::message("Not found", "There is no such page.")))
        })
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// True for `127.0.0.1[:port]`, `localhost[:port]` and `[::1][:port]`.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "localhost" | "::1")
        || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a request is refused before it reaches a handler (`None`: let it through).
fn refusal(method: &Method, headers: &HeaderMap) -> Option<&'static str> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !loopback_host(host) {
        return Some("the console answers only requests addressed to a loopback host name");
    }
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    if headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Some(
            "a console action must come from the console's own page (missing X-Bulwark-Console header)",
        );
    }
    let foreign_origin = headers
        .get(header::ORIGIN)
        .is_some_and(|o| o.to_str().ok() != Some(&format!("http://{host}")));
    let cross_site = headers.get("sec-fetch-site").is_some_and(|s| s != "same-origin");
    if foreign_origin || cross_site {
        return Some("a console action must come from the console's own origin");
    }
    None
}

/// Host check and CSRF guard in front of every route; security headers on every answer.
async fn guard(req: Request, next: Next) -> Response {
    let mut resp = match refusal(req.method(), req.headers()) {
        Some(why) => {
            let body = serde_json::json!({ "ok": false, "message": why }).to_string();
            (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], body)
                .into_response()
        }
        None => next.run(req).await,
    };
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    resp
}

#[derive(Debug, serde::Deserialize)]
struct FleetQuery {
    #[serde(default)]
    state: String,
}

async fn fleet_page(State(app): State<Shared>, Query(q): Query<FleetQuery>) -> Html<String> {
    let fleet = app.data.fleet().await;
    Html(view::fleet(fleet, &app.data.history(), HostState::from_key(&q.state)))
}

async fn host_page(State(app): State<Shared>, Path(id): Path<String>) -> Html<String> {
    Html(view::host(&id, app.data.client.show_agent(&id, 50).await))
}

async fn rollout_page(State(app): State<Shared>) -> Html<String> {
    let status = app.data.client.rollout("status").await;
    Html(view::rollout(status, app.data.fleet().await.ok()))
}

#[derive(Debug, Default, serde::Deserialize)]
struct StartForm {
    #[serde(default)]
    revision: String,
    #[serde(default)]
    canary: String,
    #[serde(default)]
    percent: String,
    #[serde(default)]
    wait: String,
}

fn action_reply(status: StatusCode, ok: bool, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "ok": ok, "message": message }))).into_response()
}

/// The controller's refusal, as the browser gets it: its message, with a status that says
/// whose fault it was.
fn refused(e: &ClientError) -> Response {
    let status = match e.code {
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    let prefix = if e.code == tonic::Code::PermissionDenied {
        "Refused by the controller: "
    } else {
        "Failed: "
    };
    action_reply(status, false, format!("{prefix}{}", e.message))
}

fn phase_text(s: &pb::RolloutStatus) -> String {
    match s.phase.as_str() {
        "none" => format!("no rollout; released revision {}", s.released_revision),
        p => format!("rollout of revision {} is {p}", s.target_revision),
    }
}

async fn rollout_action(
    State(app): State<Shared>,
    Path(action): Path<String>,
    form: Result<Form<StartForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let client = &app.data.client;
    let result = match action.as_str() {
        "pause" | "resume" | "abort" => client.rollout(&action).await,
        "start" => {
            let f = form.map(|Form(f)| f).unwrap_or_default();
            let Ok(revision) = f.revision.trim().parse::<u64>() else {
                return action_reply(
                    StatusCode::BAD_REQUEST,
                    false,
                    format!("revision {:?} is not a number", f.revision),
                );
            };
            let percent = match f.percent.trim() {
                "" => 0,
                p => match p.parse::<u32>() {
                    Ok(p @ 1..=100) => p,
                    _ => {
                        return action_reply(
                            StatusCode::BAD_REQUEST,
                            false,
                            format!("percentage {p:?} is not 1-100"),
                        );
                    }
                },
            };
            if f.canary.trim().is_empty() == (percent == 0) {
                return action_reply(
                    StatusCode::BAD_REQUEST,
                    false,
                    "give either a canary selector or a percentage".into(),
                );
            }
            let wait = match f.wait.trim() {
                "" => Duration::from_secs(600),
                w => match humantime::parse_duration(w) {
                    Ok(d) => d,
                    Err(e) => {
                        return action_reply(
                            StatusCode::BAD_REQUEST,
                            false,
                            format!("wait {w:?}: {e}"),
                        );
                    }
                },
            };
            client.rollout_start(revision, f.canary.trim(), percent, wait).await
        }
        _ => {
            return action_reply(
                StatusCode::NOT_FOUND,
                false,
                format!("no rollout action {action:?}"),
            );
        }
    };
    match result {
        Ok(s) => {
            tracing::info!(action, phase = %s.phase, "console: rollout action");
            action_reply(StatusCode::OK, true, format!("Done: {}.", phase_text(&s)))
        }
        Err(e) => {
            tracing::warn!(action, error = %e, "console: rollout action refused");
            refused(&e)
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct SinceQuery {
    #[serde(default)]
    since: String,
}

/// `since` as milliseconds since the epoch (`default` when empty or not a duration).
fn since_ms(since: &str, default: Duration) -> (String, i64) {
    let d = humantime::parse_duration(since.trim()).unwrap_or(default);
    let text = humantime::format_duration(d).to_string();
    (text, now_ms() - d.as_millis() as i64)
}

/// The newest `cap` stored events matching `req`, oldest first. Events come oldest first,
/// so every page is read (at most 100 pages of 10,000, the store's default maximum).
async fn all_events(
    client: &Client,
    mut req: pb::ListEventsRequest,
    cap: usize,
) -> Result<Vec<pb::StoredEvent>, ClientError> {
    let mut out = Vec::new();
    req.limit = 10_000;
    for _ in 0..100 {
        let reply = client.list_events(req.clone()).await?;
        out.extend(reply.events);
        let excess = out.len().saturating_sub(cap);
        out.drain(..excess);
        if reply.next.is_empty() {
            break;
        }
        req.after = reply.next;
    }
    Ok(out)
}

async fn alerts_page(State(app): State<Shared>, Query(q): Query<SinceQuery>) -> Html<String> {
    let (since, ms) = since_ms(&q.since, Duration::from_secs(7 * 86_400));
    let req = pb::ListEventsRequest {
        kinds: view::ALERT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        since_ms: ms,
        ..Default::default()
    };
    Html(view::alerts(all_events(&app.data.client, req, 50_000).await, &since))
}

async fn logins_page(
    State(app): State<Shared>,
    Query(mut f): Query<view::LoginFilter>,
) -> Html<String> {
    let (since, ms) = since_ms(&f.since, Duration::from_secs(86_400));
    f.since = since;
    let host = f.host.trim().to_owned();
    let (agent_id, hostname) =
        if host.starts_with("agt-") { (host, String::new()) } else { (String::new(), host) };
    let req = pb::ListEventsRequest {
        kinds: vec!["login".into(), "brute-force".into()],
        agent_id,
        hostname,
        since_ms: ms,
        ..Default::default()
    };
    Html(view::logins(all_events(&app.data.client, req, 50_000).await, &f))
}

async fn policies_page(State(app): State<Shared>) -> Html<String> {
    Html(view::policies(app.data.client.list_documents("").await))
}

async fn policy_page(State(app): State<Shared>, Path(key): Path<String>) -> Html<String> {
    Html(view::policy_history(&key, app.data.client.policy_history(&key).await))
}

async fn cluster_page(State(app): State<Shared>) -> Html<String> {
    Html(view::cluster(app.data.client.member_statuses(Duration::from_secs(2)).await))
}

/// `/live`: server-sent events, one per change (`fleet`, `rollout`, `cluster`, `events`),
/// until the browser leaves or the console stops.
async fn live(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = tokio_stream::wrappers::BroadcastStream::new(app.data.subscribe());
    let mut stop = app.shutdown.clone();
    let hello = futures::stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    let stream = hello
        .chain(updates.filter_map(|u| async move {
            // A receiver that fell behind only missed refresh hints: carry on.
            u.ok().map(|u| Ok(Event::default().event(u.topic).data(u.data)))
        }))
        .take_until(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens() {
        assert!(check_listen("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:8080".parse().unwrap()).is_ok());
        let err = check_listen("0.0.0.0:8080".parse().unwrap());
        assert!(err.is_err_and(|e| e.to_string().contains("only listens on a loopback address")));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_check_and_csrf_guard() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(refusal(&get, &headers(&[("host", "127.0.0.1:8080")])), None);
        assert_eq!(refusal(&get, &headers(&[("host", "localhost:8080")])), None);
        assert_eq!(refusal(&get, &headers(&[("host", "[::1]:8080")])), None);
        assert!(
            refusal(&get, &headers(&[("host", "evil.example:8080")])).is_some(),
            "DNS rebinding"
        );
        assert!(refusal(&get, &headers(&[])).is_some());
        let ok =
            [("host", "127.0.0.1:8080"), (CSRF_HEADER, "1"), ("origin", "http://127.0.0.1:8080")];
        assert_eq!(refusal(&post, &headers(&ok)), None);
        assert!(refusal(&post, &headers(&ok[..1])).is_some(), "no custom header");
        let cross =
            [("host", "127.0.0.1:8080"), (CSRF_HEADER, "1"), ("origin", "http://evil.example")];
        assert!(refusal(&post, &headers(&cross)).is_some(), "foreign origin");
        let site =
            [("host", "127.0.0.1:8080"), (CSRF_HEADER, "1"), ("sec-fetch-site", "cross-site")];
        assert!(refusal(&post, &headers(&site)).is_some());
    }
}
