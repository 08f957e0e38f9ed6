//! The firewall enforcer: owns exactly one nftables table, `inet bulwark`, and keeps it equal
//! to the policy's [`FirewallState`](bulwark_proto::v1::FirewallState).
//!
//! Level-triggered, in three steps (plus a drift monitor):
//! - [`Firewall::observe`] lists only `inet bulwark` (`nft -j list table inet bulwark`);
//! - [`plan`] (pure) turns the state and host facts into a [`Plan`], and [`compare`] judges
//!   an observation against it: in sync, set members only, or anything else;
//! - [`Firewall::apply`] does nothing when in sync, updates set elements only when only
//!   membership changed, and otherwise replaces the whole table in one atomic `nft -j -f -`
//!   transaction (`add table` + `delete table` + everything anew). nft transactions are
//!   atomic, so when one fails the previous ruleset stays, and the error carries nft's stderr.
//! - [`Firewall::monitor`] runs `nft monitor` and signals each change that concerns the table.
//!
//! Other tables (firewalld, Docker, ...) are never listed, flushed or changed. Every `nft`
//! runs through [`Host`], so tests point it at a lab network namespace.

pub mod enforcer;
mod monitor;
mod observe;
mod plan;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use nftables::schema::Nftables;
use tracing::{debug, info};

use crate::host::{Host, HostError};

pub use monitor::{Monitor, MonitorEvent};
pub use observe::{
    Comparison, Observed, ObservedChain, ObservedRule, ObservedSet, ObservedTable, SetDiff, compare,
};
pub use plan::{
    CHAIN_PRIORITY, Cond, DEFAULT_LOG_RATE_PER_MINUTE, Direction, FAMILY, FirewallContext,
    ND_TYPES, NftRule, Plan, PlannedChain, PlannedSet, Protocol, SetDelta, SetKind, TABLE, Verdict,
    WIRELESS_SET, plan,
};

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("firewall rules[{index}] (policy {policy:?}): {field}: {reason}")]
    InvalidRule { index: usize, policy: String, field: String, reason: String },
    #[error("firewall state: {field}: {reason}")]
    InvalidState { field: String, reason: String },
    #[error("nft rejected the {what} transaction (the previous ruleset stays): {stderr}")]
    Rejected { what: &'static str, stderr: String },
    #[error("cannot list table inet bulwark: {0}")]
    List(String),
    #[error("cannot parse `nft -j list table inet bulwark` output: {0}")]
    Parse(String),
    #[error("cannot encode the nft batch as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Host(HostError),
    #[error("cannot start `nft monitor`: {0}")]
    Monitor(std::io::Error),
    #[error("cannot read wireless interfaces from {path}: {source}")]
    Wireless { path: PathBuf, source: std::io::Error },
}

/// Which path [`Firewall::apply`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyKind {
    /// Already in sync: no nft call.
    Unchanged,
    /// Only set elements were changed.
    SetsOnly,
    /// The whole table was replaced.
    Full,
}

/// What [`Firewall::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: ApplyKind,
    /// Rules in the table after the apply.
    pub rules: usize,
    /// Set elements in the table after the apply.
    pub elements: usize,
    /// The sets touched by a sets-only apply.
    pub sets: Vec<String>,
    /// Elements added and removed by a sets-only apply.
    pub added: usize,
    pub removed: usize,
}

/// The enforcer for one host.
#[derive(Debug, Clone)]
pub struct Firewall {
    host: Host,
}

impl Firewall {
    pub fn new(host: Host) -> Self {
        Self { host }
    }

    /// Lists `inet bulwark` and nothing else.
    #[tracing::instrument(skip(self))]
    pub async fn observe(&self) -> Result<Observed, FirewallError> {
        match self.host.run("nft", &["-j", "list", "table", "inet", TABLE], None).await {
            Ok(out) => Observed::parse(&out.stdout),
            // nft says "No such file or directory" when the table does not exist.
            Err(HostError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(Observed::Absent)
            }
            Err(HostError::Failed { stderr, .. }) => Err(FirewallError::List(stderr)),
            Err(e) => Err(FirewallError::Host(e)),
        }
    }

    /// Brings the table to `plan`, given what [`Firewall::observe`] just saw: nothing when in
    /// sync; a membership delta when only set elements differ (falling back to a full apply
    /// should that fail, e.g. on a stale observation); else the atomic full replacement.
    #[tracing::instrument(skip_all)]
    pub async fn apply(&self, plan: &Plan, observed: &Observed) -> Result<Applied, FirewallError> {
        match compare(plan, observed) {
            Comparison::InSync => Ok(self.applied(plan, ApplyKind::Unchanged)),
            Comparison::SetsDiffer(diffs) => {
                let deltas: Vec<SetDelta> = diffs.iter().map(SetDiff::delta).collect();
                match self.run_batch("sets-only", &plan.delta_batch(&deltas)).await {
                    Ok(()) => {
                        let mut applied = self.applied(plan, ApplyKind::SetsOnly);
                        applied.sets = deltas.iter().map(|d| d.name.clone()).collect();
                        applied.added = deltas.iter().map(|d| d.add.len()).sum();
                        applied.removed = deltas.iter().map(|d| d.remove.len()).sum();
                        info!(sets = ?applied.sets, added = applied.added, removed = applied.removed, "firewall set members updated");
                        Ok(applied)
                    }
                    Err(e) => {
                        debug!(error = %e, "sets-only update failed, replacing the table");
                        self.apply_full(plan).await
                    }
                }
            }
            Comparison::Differs { before, after } => {
                debug!(%before, %after, "firewall table differs");
                self.apply_full(plan).await
            }
        }
    }

    /// Replaces the whole table with `plan` in one transaction, whatever is there.
    pub async fn apply_full(&self, plan: &Plan) -> Result<Applied, FirewallError> {
        self.run_batch("full", &plan.full_batch()).await?;
        let applied = self.applied(plan, ApplyKind::Full);
        info!(rules = applied.rules, elements = applied.elements, "firewall table replaced");
        Ok(applied)
    }

    /// Deletes the table (uninstall, tests). Succeeds when it is already absent.
    pub async fn remove(&self) -> Result<(), FirewallError> {
        let mut batch = nftables::batch::Batch::new();
        let table = nftables::schema::Table {
            family: FAMILY,
            name: std::borrow::Cow::Borrowed(TABLE),
            handle: None,
        };
        batch.add(nftables::schema::NfListObject::Table(table.clone()));
        batch.delete(nftables::schema::NfListObject::Table(table));
        self.run_batch("remove", &batch.to_nftables()).await
    }

    /// Starts `nft monitor` (through the host's wrapper); see [`Monitor`]. Call inside a
    /// tokio runtime.
    pub fn monitor(&self) -> Result<Monitor, FirewallError> {
        Monitor::spawn(&self.host)
    }

    /// Sends one batch to `nft -j -f -` (one transaction).
    pub(crate) async fn run_batch(
        &self,
        what: &'static str,
        batch: &Nftables<'_>,
    ) -> Result<(), FirewallError> {
        let json = serde_json::to_vec(batch)?;
        self.run_json(what, &json).await
    }

    pub(crate) async fn run_json(
        &self,
        what: &'static str,
        json: &[u8],
    ) -> Result<(), FirewallError> {
        match self.host.run("nft", &["-j", "-f", "-"], Some(json)).await {
            Ok(_) => Ok(()),
            Err(HostError::Failed { stderr, .. }) => Err(FirewallError::Rejected { what, stderr }),
            Err(e) => Err(FirewallError::Host(e)),
        }
    }

    fn applied(&self, plan: &Plan, kind: ApplyKind) -> Applied {
        Applied {
            kind,
            rules: plan.rule_count(),
            elements: plan.element_count(),
            sets: Vec::new(),
            added: 0,
            removed: 0,
        }
    }
}

/// The host's wireless interfaces: those under `<root>/sys/class/net/` with a `wireless`
/// or `phy80211` entry, sorted. No `/sys/class/net` (some containers): none.
pub fn wireless_interfaces(host: &Host) -> Result<Vec<String>, FirewallError> {
    let dir = host.path("/sys/class/net");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FirewallError::Wireless { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|source| FirewallError::Wireless { path: dir.clone(), source })?;
        let path = entry.path();
        if path.join("wireless").exists() || path.join("phy80211").exists() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}
