//! The reconcile loop: one task per enforcer, woken by a new desired state, by drift the
//! enforcer watches for, by the periodic full check and by retries after a failure. A
//! failing or panicking enforcer is reported and retried with backoff; it never stops the
//! others. Results go to the [`StatusBoard`] (what the reporter sends) and findings to the
//! event spool.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use futures::FutureExt;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::{Enforcer, Finding, Pass, Trigger};
use crate::cache::Cache;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The latest status of every enforcer, and a bell for newly spooled events.
#[derive(Clone)]
pub struct StatusBoard {
    tx: Arc<watch::Sender<BTreeMap<String, pb::EnforcerStatus>>>,
    spooled: Arc<Notify>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self { tx: Arc::new(watch::channel(BTreeMap::new()).0), spooled: Arc::new(Notify::new()) }
    }
}

impl StatusBoard {
    /// Sets an enforcer's status; subscribers wake only when more than the check time
    /// changed.
    pub fn set(&self, status: pb::EnforcerStatus) {
        self.tx.send_if_modified(|all| {
            let changed = all.get(&status.enforcer).is_none_or(|old| {
                pb::EnforcerStatus { checked_at_ms: 0, ..old.clone() }
                    != pb::EnforcerStatus { checked_at_ms: 0, ..status.clone() }
            });
            all.insert(status.enforcer.clone(), status);
            changed
        });
    }

    pub fn get(&self, enforcer: &str) -> Option<pb::EnforcerStatus> {
        self.tx.borrow().get(enforcer).cloned()
    }

    pub fn snapshot(&self) -> Vec<pb::EnforcerStatus> {
        self.tx.borrow().values().cloned().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, pb::EnforcerStatus>> {
        self.tx.subscribe()
    }

    pub fn ring_spool(&self) {
        self.spooled.notify_one();
    }

    pub async fn spool_rung(&self) {
        self.spooled.notified().await;
    }
}

/// Backoff after `failures` failed passes in a row: 1 s doubling to 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

pub struct Reconciler {
    pub enforcer: Arc<dyn Enforcer>,
    pub desired: watch::Receiver<Option<Arc<pb::DesiredState>>>,
    pub board: StatusBoard,
    pub cache: Cache,
    /// The periodic full check (default 60 s).
    pub period: Duration,
    pub counters: Arc<crate::metrics::Counters>,
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

async fn next_drift(drift: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match drift {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Reconciler {
    /// Runs until `shutdown` turns true or the desired-state channel closes.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let name = self.enforcer.name();
        let mut drift = None;
        let mut rewatch_at = Instant::now();
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut trigger = Trigger::NewState;
        let mut next_check = Instant::now() + self.period;
        loop {
            if drift.is_none() && Instant::now() >= rewatch_at {
                drift = self.enforcer.watch_drift().await;
                rewatch_at = Instant::now() + self.period;
            }
            let desired = self.desired.borrow_and_update().clone();
            if let Some(desired) = desired {
                let run = AssertUnwindSafe(self.enforcer.reconcile(&desired, &trigger));
                let pass = match run.catch_unwind().await {
                    Ok(Ok(pass)) => {
                        failures = 0;
                        retry_at = None;
                        pass
                    }
                    Ok(Err(e)) => self.failed(&desired, e.to_string(), &mut failures),
                    Err(panic) => {
                        let why = format!("panicked: {}", panic_message(&*panic));
                        self.failed(&desired, why, &mut failures)
                    }
                };
                if failures > 0 {
                    retry_at = Some(Instant::now() + backoff(failures));
                }
                self.record(pass).await;
                next_check = Instant::now() + self.period;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            trigger = tokio::select! {
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Trigger::NewState
                }
                what = next_drift(&mut drift) => match what {
                    Some(mut what) => {
                        // One pass for a burst of changes.
                        if let Some(rx) = drift.as_mut() {
                            while let Ok(more) = rx.try_recv() {
                                what = more;
                            }
                        }
                        Trigger::Drift(what)
                    }
                    None => {
                        tracing::warn!(enforcer = name, "drift watch ended; checking and watching again");
                        drift = None;
                        rewatch_at = Instant::now() + Duration::from_secs(1);
                        Trigger::Periodic
                    }
                },
                () = tokio::time::sleep_until(next_check) => Trigger::Periodic,
                () = retry => Trigger::Retry,
                _ = shutdown.changed() => return,
            };
        }
    }

    fn failed(&self, desired: &pb::DesiredState, reason: String, failures: &mut u32) -> Pass {
        *failures += 1;
        self.counters.failed_passes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(enforcer = self.enforcer.name(), failures = *failures, %reason, "pass failed");
        let mut pass = Pass::new(desired.revision, pb::EnforcerState::Failed);
        // One event per distinct failure, not one per retry.
        let same = self.board.get(self.enforcer.name()).is_some_and(|s| s.reason == reason);
        if !same {
            pass.findings.push(Finding {
                kind: "apply-failed",
                summary: format!("{} could not be enforced: {reason}", self.enforcer.name()),
                before: String::new(),
                after: String::new(),
            });
        }
        pass.reason = reason;
        pass
    }

    async fn record(&self, pass: Pass) {
        let name = self.enforcer.name();
        let repairs = pass.findings.iter().filter(|f| f.kind == "drift-repaired").count();
        self.counters.drift_repairs.fetch_add(repairs as u64, std::sync::atomic::Ordering::Relaxed);
        for f in &pass.findings {
            tracing::info!(enforcer = name, kind = f.kind, before = %f.before, after = %f.after, "{}", f.summary);
            // The spool gives it its id.
            let event = pb::AgentEvent {
                id: String::new(),
                kind: f.kind.to_owned(),
                enforcer: name.to_owned(),
                at_ms: now_ms(),
                revision: pass.revision,
                summary: f.summary.clone(),
                before: f.before.clone(),
                after: f.after.clone(),
                fields: Default::default(),
            };
            if let Err(e) = self.cache.spool(event).await {
                tracing::error!(enforcer = name, error = %e, "cannot spool an event");
            }
        }
        if !pass.findings.is_empty() {
            self.board.ring_spool();
        }
        self.board.set(pb::EnforcerStatus {
            enforcer: name.to_owned(),
            revision: pass.revision,
            state: pass.state.into(),
            reason: pass.reason,
            checked_at_ms: now_ms(),
            details: pass.details.into_iter().collect(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::enforce::EnforceError;

    /// Panics on its first pass, fails on its second, then succeeds.
    struct Flaky {
        passes: AtomicU32,
    }

    #[async_trait]
    impl Enforcer for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn watch_drift(&self) -> Option<mpsc::Receiver<String>> {
            None
        }
        async fn reconcile(
            &self,
            desired: &pb::DesiredState,
            _: &Trigger,
        ) -> Result<Pass, EnforceError> {
            match self.passes.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("boom"),
                1 => Err("disk on fire".into()),
                _ => Ok(Pass::new(desired.revision, pb::EnforcerState::Compliant)),
            }
        }
    }

    #[tokio::test]
    async fn a_panicking_then_failing_enforcer_is_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let board = StatusBoard::default();
        let state = pb::DesiredState { revision: 3, ..Default::default() };
        let (_tx, desired) = watch::channel(Some(Arc::new(state)));
        let (_stop, shutdown) = watch::channel(false);
        let reconciler = Reconciler {
            enforcer: Arc::new(Flaky { passes: AtomicU32::new(0) }),
            desired,
            board: board.clone(),
            cache: cache.clone(),
            period: Duration::from_secs(60),
            counters: Arc::default(),
        };
        let mut statuses = board.subscribe();
        tokio::spawn(reconciler.run(shutdown));
        let mut seen = Vec::new();
        while seen.last() != Some(&pb::EnforcerState::Compliant as &pb::EnforcerState) {
            statuses.changed().await.unwrap();
            let s = statuses.borrow_and_update().get("flaky").cloned().unwrap();
            seen.push(s.state());
            if s.state() == pb::EnforcerState::Failed {
                assert!(!s.reason.is_empty());
            }
        }
        assert_eq!(
            seen,
            [pb::EnforcerState::Failed, pb::EnforcerState::Failed, pb::EnforcerState::Compliant]
        );
        let events = cache.spooled(10).unwrap();
        let reasons: Vec<&str> = events.iter().map(|e| e.summary.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "flaky could not be enforced: panicked: boom",
                "flaky could not be enforced: disk on fire"
            ]
        );
    }
}
