//! The daemon: enforce the cached desired state before any network, then stream new ones,
//! reconcile every enforcer, report, renew; until shutdown. Also `status`, which reads
//! what the running daemon last wrote to `status.json` in the state dir.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cache::{Cache, CacheError};
use crate::enforce::firewall::enforcer::{ControllerAccess, FirewallEnforcer};
use crate::enforce::passwords::PasswordEnforcer;
use crate::enforce::reconcile::now_ms;
use crate::enforce::wireless::WirelessEnforcer;
use crate::enforce::{Enforcer, Reconciler, StatusBoard};
use crate::enroll::host_facts;
use crate::host::Host;
use crate::identity::{IdentityError, StateDir, write_atomically};
use crate::monitor::EventSink;
use crate::monitor::logins::{GivenSources, LoginMonitor, LoginSources};
use crate::monitor::users::UsersMonitor;
use crate::sync::{Link, Reporter, renew_forever, stream_desired};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{0}; is another bulwark-agent running with this --state-dir?")]
    Cache(#[from] CacheError),
    #[error("controller URL {url}: {reason}")]
    Controller { url: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: PathBuf,
    pub root: PathBuf,
    pub dry_run: bool,
    /// The periodic full check of every enforcer.
    pub check_every: Duration,
    /// After a firewall change, a controller must answer within this.
    pub confirm_within: Duration,
    /// A report goes out at least this often.
    pub heartbeat: Duration,
    /// Login sources as given; none: the host's defaults.
    pub logins: GivenSources,
    /// Where to serve `/metrics` (`None`: not at all).
    pub metrics_listen: Option<String>,
}

/// What `bulwark-agent status` shows, written by the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    pub agent_id: String,
    pub pid: u32,
    pub written_at_ms: i64,
    pub controller: Option<String>,
    pub desired_revision: u64,
    pub policies: Vec<String>,
    pub spooled_events: usize,
    pub enforcers: Vec<EnforcerLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnforcerLine {
    pub enforcer: String,
    pub state: String,
    pub revision: u64,
    pub reason: String,
    pub details: BTreeMap<String, String>,
}

pub fn state_name(state: i32) -> &'static str {
    match pb::EnforcerState::try_from(state) {
        Ok(pb::EnforcerState::Compliant) => "compliant",
        Ok(pb::EnforcerState::DriftedRepaired) => "drifted-and-repaired",
        Ok(pb::EnforcerState::Failed) => "failed",
        Ok(pb::EnforcerState::AuditNoncompliant) => "audit-only-noncompliant",
        _ => "not-managed",
    }
}

/// Resolves the controllers' addresses once, for the firewall's failsafe rules.
async fn controller_addrs(urls: &[String]) -> Result<Vec<SocketAddr>, RunError> {
    let mut addrs = Vec::new();
    for url in urls {
        let err = |reason: String| RunError::Controller { url: url.clone(), reason };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("{e}")))?;
        let host = uri.host().ok_or_else(|| err("no host".into()))?.trim_matches(['[', ']']);
        let port = uri.port_u16().unwrap_or(443);
        match tokio::net::lookup_host((host, port)).await {
            Ok(found) => addrs.extend(found),
            Err(e) => {
                tracing::warn!(controller = %url, error = %e, "cannot resolve controller; no failsafe rule for it")
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(opts: RunOptions, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let state = StateDir::new(&opts.state_dir);
    let info = state.info()?;
    let cache = Cache::open(state.path())?;
    let host = Host::new(&opts.root);
    let cached = cache.desired()?;
    match &cached {
        Some(d) => {
            tracing::info!(agent_id = %info.agent_id, revision = d.revision, "enforcing the cached desired state before connecting")
        }
        None => {
            tracing::info!(agent_id = %info.agent_id, "no desired state yet; waiting for a controller")
        }
    }
    let (desired_tx, desired_rx) = watch::channel(cached.map(Arc::new));
    let board = StatusBoard::default();
    let link = Link::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let controllers = controller_addrs(&info.controllers).await?;

    let access = ControllerAccess {
        state: state.clone(),
        urls: info.controllers.clone(),
        addrs: controllers,
    };
    let enforcers: Vec<Arc<dyn Enforcer>> = vec![
        Arc::new(FirewallEnforcer::new(
            host.clone(),
            cache.clone(),
            link.clone(),
            access,
            opts.confirm_within,
            opts.dry_run,
        )),
        Arc::new(PasswordEnforcer::new(host.clone(), opts.dry_run)),
        Arc::new(WirelessEnforcer::new(host.clone(), state.path(), opts.dry_run)),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    let counters = Arc::new(crate::metrics::Counters::default());
    for enforcer in enforcers {
        let reconciler = Reconciler {
            enforcer,
            desired: desired_rx.clone(),
            board: board.clone(),
            cache: cache.clone(),
            period: opts.check_every,
            counters: counters.clone(),
        };
        tasks.spawn(reconciler.run(stop_rx.clone()));
    }
    let sink = EventSink::new(cache.clone(), board.clone());
    let mut users = UsersMonitor::new(host.clone(), sink.clone(), state.path(), opts.check_every);
    users.dry_run = opts.dry_run;
    tasks.spawn(users.run(desired_rx.clone(), stop_rx.clone()));
    let logins = LoginMonitor {
        sink,
        sources: LoginSources::resolve(&host, &opts.logins),
        hostname: std::fs::read_to_string(host.path("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
    };
    tasks.spawn(logins.run(desired_rx.clone(), stop_rx.clone()));
    let (facts_tx, facts_rx) = watch::channel(host_facts(&host).await);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(stream_desired(
        state.clone(),
        info.controllers.clone(),
        cache.clone(),
        desired_tx,
        link.clone(),
    ));
    if !opts.dry_run {
        background.spawn(
            Reporter {
                cache: cache.clone(),
                board: board.clone(),
                link: link.clone(),
                desired: desired_rx.clone(),
                facts: facts_rx,
                heartbeat: opts.heartbeat,
            }
            .run(),
        );
        background.spawn(renew_forever(state.clone(), link.clone()));
    }
    background.spawn({
        let host = host.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let facts = host_facts(&host).await;
                facts_tx.send_if_modified(|f| {
                    let changed = *f != facts;
                    *f = facts;
                    changed
                });
            }
        }
    });
    if let Some(addr) = &opts.metrics_listen {
        // Metrics are a convenience: a taken port must not stop enforcement.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let sources = crate::metrics::Sources {
                    board: board.clone(),
                    cache: cache.clone(),
                    link: link.clone(),
                    counters: counters.clone(),
                };
                background.spawn(crate::metrics::serve(sources, listener));
            }
            Err(e) => tracing::warn!(%addr, error = %e, "no /metrics: cannot listen"),
        }
    }
    background.spawn(write_status_forever(
        state.clone(),
        info.agent_id.clone(),
        board.clone(),
        link.clone(),
        desired_rx.clone(),
        cache.clone(),
    ));
    shutdown.await;
    tracing::info!("shutting down; the host keeps its enforced state");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    background.shutdown().await;
    write_status(&state, &info.agent_id, &board, &link, &desired_rx, &cache);
    Ok(())
}

fn write_status(
    state: &StateDir,
    agent_id: &str,
    board: &StatusBoard,
    link: &Link,
    desired: &watch::Receiver<Option<Arc<pb::DesiredState>>>,
    cache: &Cache,
) {
    let d = desired.borrow().clone();
    let status = StatusFile {
        agent_id: agent_id.to_owned(),
        pid: std::process::id(),
        written_at_ms: now_ms(),
        controller: link.controller(),
        desired_revision: d.as_ref().map_or(0, |d| d.revision),
        policies: d.as_ref().map(|d| d.policies.clone()).unwrap_or_default(),
        spooled_events: cache.spool_len(),
        enforcers: board
            .snapshot()
            .into_iter()
            .map(|e| EnforcerLine {
                state: state_name(e.state).to_owned(),
                enforcer: e.enforcer,
                revision: e.revision,
                reason: e.reason,
                details: e.details.into_iter().collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&status).unwrap_or_default();
    if let Err(e) = write_atomically(&state.file("status.json"), &json, 0o644) {
        tracing::warn!(error = %e, "cannot write status.json");
    }
}

async fn write_status_forever(
    state: StateDir,
    agent_id: String,
    board: StatusBoard,
    link: Link,
    desired: watch::Receiver<Option<Arc<pb::DesiredState>>>,
    cache: Cache,
) {
    let mut statuses = board.subscribe();
    loop {
        write_status(&state, &agent_id, &board, &link, &desired, &cache);
        tokio::select! {
            _ = statuses.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// What the running agent enforces, per enforcer, from its state dir.
pub fn status_text(state_dir: &std::path::Path) -> Result<String, IdentityError> {
    let state = StateDir::new(state_dir);
    let info = state.info()?;
    let path = state.file("status.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(format!(
            "agent {} is enrolled (controllers: {}) but has not run yet: no {}",
            info.agent_id,
            info.controllers.join(", "),
            path.display()
        ));
    };
    let s: StatusFile = serde_json::from_slice(&bytes).map_err(|e| IdentityError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let age = (now_ms() - s.written_at_ms).max(0) / 1000;
    let running = std::path::Path::new(&format!("/proc/{}", s.pid)).exists() && age < 30;
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(out, "agent       {}", s.agent_id);
    let _ = writeln!(
        out,
        "daemon      {} (status written {age} s ago)",
        if running { format!("running, pid {}", s.pid) } else { "not running".into() }
    );
    let _ = writeln!(out, "controller  {}", s.controller.as_deref().unwrap_or("none reachable"));
    let _ = writeln!(
        out,
        "desired     revision {} from policies {}",
        s.desired_revision,
        if s.policies.is_empty() { "-".into() } else { s.policies.join(", ") }
    );
    let _ = writeln!(out, "spool       {} events waiting for a controller", s.spooled_events);
    let _ =
        writeln!(out, "\n{:<10} {:<24} {:<9} DETAILS / REASON", "ENFORCER", "STATE", "REVISION");
    for e in &s.enforcers {
        let details: Vec<String> = e.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "{:<10} {:<24} {:<9} {}{}",
            e.enforcer,
            e.state,
            e.revision,
            details.join(" "),
            if e.reason.is_empty() { String::new() } else { format!(" {}", e.reason) }
        );
    }
    Ok(out)
}
