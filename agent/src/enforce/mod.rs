//! Enforcers: each keeps one part of the host in its desired state. The contract is
//! [`Enforcer`]; [`reconcile`] runs every enforcer in its own supervised loop.

pub mod firewall;
pub mod passwords;
pub mod reconcile;
pub mod wireless;

use async_trait::async_trait;
use bulwark_proto::v1 as pb;
use tokio::sync::mpsc;

pub use reconcile::{Reconciler, StatusBoard};

/// Any error of a pass: reported with its message as the enforcer's failure reason.
pub type EnforceError = Box<dyn std::error::Error + Send + Sync>;

/// Why a pass runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A new desired state arrived (or the agent started with a cached one).
    NewState,
    /// The host changed under the enforcer (what changed, for the event).
    Drift(String),
    /// The periodic full check.
    Periodic,
    /// A retry after a failed pass.
    Retry,
}

/// Something worth an event: drift found or repaired, a rollback, an apply that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// "drift-repaired", "drift-detected", "apply-failed", "commit-confirmed-rollback", ...
    pub kind: &'static str,
    pub summary: String,
    pub before: String,
    pub after: String,
}

/// What one pass found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The desired-state revision the host was judged against.
    pub revision: u64,
    pub state: pb::EnforcerState,
    pub reason: String,
    /// Effective values worth showing in the fleet view.
    pub details: Vec<(String, String)>,
    pub findings: Vec<Finding>,
}

impl Pass {
    pub fn new(revision: u64, state: pb::EnforcerState) -> Self {
        Self { revision, state, reason: String::new(), details: Vec::new(), findings: Vec::new() }
    }
}

/// One part of the host under management: level-triggered and idempotent (observe, plan,
/// apply, judge), so running a pass twice changes nothing the second time.
#[async_trait]
pub trait Enforcer: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Starts watching the host for drift; each message names what changed. `None`: the
    /// enforcer relies on the periodic check. Called again if the channel closes.
    async fn watch_drift(&self) -> Option<mpsc::Receiver<String>>;

    /// One pass against `desired`. An `Err` is reported as a failed state and retried
    /// with backoff; a panic is caught and treated the same way.
    async fn reconcile(
        &self,
        desired: &pb::DesiredState,
        trigger: &Trigger,
    ) -> Result<Pass, EnforceError>;
}
