//! The firewall as an [`Enforcer`]: plans the desired state's firewall for this host,
//! repairs drift that `nft monitor` reports, and guards every *change* of ruleset with
//! commit-confirmed: after applying a new revision the agent must reach a controller
//! within a deadline, or the last confirmed ruleset comes back and the new revision is held
//! (not applied again until a newer one arrives or the agent restarts).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bulwark_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{
    Comparison, Firewall, FirewallContext, MonitorEvent, Plan, compare, plan, wireless_interfaces,
};
use crate::cache::Cache;
use crate::enforce::{EnforceError, Enforcer, Finding, Pass, Trigger};
use crate::host::Host;
use crate::identity::StateDir;
use crate::sync::{Link, reach_any};

pub const NAME: &str = "firewall";

#[derive(Default)]
struct Memory {
    /// The plan last applied or found in sync: a difference from it is drift.
    last_plan: Option<Plan>,
    /// The revision commit-confirmed rolled back, and why.
    held: Option<(u64, String)>,
    /// Drift repaired while on this revision: (revision, what was found).
    repaired: Option<(u64, String)>,
    /// The last difference reported in audit mode (one event per distinct difference).
    audited: Option<String>,
}

pub struct FirewallEnforcer {
    firewall: Firewall,
    host: Host,
    cache: Cache,
    link: Link,
    /// Where the agent's identity is, and its controllers' URLs: to reach them afresh.
    state: StateDir,
    urls: Vec<String>,
    controllers: Vec<SocketAddr>,
    confirm_within: Duration,
    dry_run: bool,
    memory: Mutex<Memory>,
}

/// How the firewall enforcer reaches and guards the controllers.
pub struct ControllerAccess {
    pub state: StateDir,
    pub urls: Vec<String>,
    /// Resolved from `urls`: the failsafe rules.
    pub addrs: Vec<SocketAddr>,
}

impl FirewallEnforcer {
    pub fn new(
        host: Host,
        cache: Cache,
        link: Link,
        access: ControllerAccess,
        confirm_within: Duration,
        dry_run: bool,
    ) -> Self {
        Self {
            firewall: Firewall::new(host.clone()),
            host,
            cache,
            link,
            state: access.state,
            urls: access.urls,
            controllers: access.addrs,
            confirm_within,
            dry_run,
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan_for(&self, state: &pb::FirewallState) -> Result<Plan, EnforceError> {
        let ctx = FirewallContext {
            controllers: self.controllers.clone(),
            wireless_ifaces: wireless_interfaces(&self.host)?,
        };
        Ok(plan(state, &ctx)?)
    }

    fn details(plan: &Plan) -> Vec<(String, String)> {
        vec![
            ("rules".into(), plan.rule_count().to_string()),
            ("set_elements".into(), plan.element_count().to_string()),
        ]
    }

    /// Puts back the last confirmed ruleset (or removes the table when none was ever
    /// confirmed) after `revision` went unconfirmed.
    async fn roll_back(&self, revision: u64, why: String) -> Result<Pass, EnforceError> {
        let confirmed = self.cache.confirmed_firewall()?;
        let restored = match confirmed.as_ref().and_then(|c| c.firewall.as_ref().map(|f| (c, f))) {
            Some((c, fw)) => {
                let plan = self.plan_for(fw)?;
                self.firewall.apply_full(&plan).await?;
                self.memory().last_plan = Some(plan);
                format!("the ruleset of revision {}", c.revision)
            }
            None => {
                self.firewall.remove().await?;
                self.memory().last_plan = None;
                "no Bulwark ruleset (none was ever confirmed)".to_owned()
            }
        };
        let reason = format!("revision {revision} rolled back to {restored}: {why}");
        tracing::error!(revision, %reason, "commit-confirmed rollback");
        self.memory().held = Some((revision, reason.clone()));
        let mut pass = Pass::new(revision, pb::EnforcerState::Failed);
        pass.findings.push(Finding {
            kind: "commit-confirmed-rollback",
            summary: reason.clone(),
            before: format!("revision {revision}"),
            after: restored,
        });
        pass.reason = reason;
        Ok(pass)
    }

    /// True when a controller answers a new connection within the deadline, through the
    /// new ruleset.
    async fn confirmed(&self) -> bool {
        let reach = reach_any(&self.state, &self.urls, &self.link);
        tokio::time::timeout(self.confirm_within, reach).await.is_ok()
    }
}

#[async_trait]
impl Enforcer for FirewallEnforcer {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn watch_drift(&self) -> Option<mpsc::Receiver<String>> {
        let mut monitor = match self.firewall.monitor() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "no event-driven firewall drift detection; periodic checks only");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(event) = monitor.next().await {
                match event {
                    MonitorEvent::Changed { line } => {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    MonitorEvent::Exited { reason } => {
                        tracing::warn!(%reason, "nft monitor ended");
                        return;
                    }
                }
            }
        });
        Some(rx)
    }

    async fn reconcile(
        &self,
        desired: &pb::DesiredState,
        trigger: &Trigger,
    ) -> Result<Pass, EnforceError> {
        let revision = desired.revision;
        let Some(wanted) = desired.firewall.as_ref() else {
            // No policy manages this host's firewall: Bulwark's table goes away.
            if !self.dry_run {
                self.firewall.remove().await?;
            }
            self.memory().last_plan = None;
            return Ok(Pass::new(revision, pb::EnforcerState::NotManaged));
        };
        let confirmed = self.cache.confirmed_firewall()?;
        let held = self.memory().held.clone().filter(|(r, _)| *r == revision);
        // A held revision: keep enforcing the confirmed one, report the rollback.
        let (state, needs_confirm) = match (&held, &confirmed) {
            (Some(_), Some(c)) => (c.firewall.clone().unwrap_or_default(), false),
            (Some(_), None) => {
                let (_, reason) = held.clone().unwrap_or_default();
                let mut pass = Pass::new(revision, pb::EnforcerState::Failed);
                pass.reason = reason;
                return Ok(pass);
            }
            (None, c) => {
                let same = c.as_ref().is_some_and(|c| c.firewall.as_ref() == Some(wanted));
                (wanted.clone(), !same && c.as_ref().is_none_or(|c| c.revision < revision))
            }
        };
        let plan = self.plan_for(&state)?;
        let observed = match self.firewall.observe().await {
            Ok(observed) => observed,
            // A dry run may lack the rights to read the ruleset; it still shows its plan.
            Err(e) if self.dry_run => {
                println!("--dry-run: cannot read the current ruleset ({e}); would apply:\n{plan}");
                return Ok(Pass::new(revision, pb::EnforcerState::AuditNoncompliant));
            }
            Err(e) => return Err(e.into()),
        };
        let comparison = compare(&plan, &observed);
        let mut pass = Pass::new(revision, pb::EnforcerState::Compliant);
        pass.details = Self::details(&plan);
        if let Some((_, reason)) = &held {
            pass.state = pb::EnforcerState::Failed;
            pass.reason = reason.clone();
        }
        if matches!(comparison, Comparison::InSync) {
            self.memory().last_plan = Some(plan);
            if needs_confirm && !self.dry_run {
                self.cache.set_confirmed_firewall(desired).await?;
            }
            let repaired = self.memory().repaired.clone().filter(|(r, _)| *r == revision);
            if let Some((r, what)) = repaired
                && held.is_none()
            {
                pass.state = pb::EnforcerState::DriftedRepaired;
                pass.reason = format!("drift repaired at revision {r}: {what}");
            }
            self.memory().audited = None;
            return Ok(pass);
        }
        let (before, after) = match &comparison {
            Comparison::Differs { before, after } => (before.clone(), after.clone()),
            other => (other.summary(), "set members as the policy says".to_owned()),
        };
        if state.audit || self.dry_run {
            if self.dry_run {
                println!("--dry-run: the firewall differs ({before}); would apply:\n{plan}");
            }
            pass.state = pb::EnforcerState::AuditNoncompliant;
            pass.reason = format!("{before} (expected: {after}); mode audit, nothing changed");
            let mut memory = self.memory();
            if memory.audited.as_deref() != Some(&before) {
                memory.audited = Some(before.clone());
                pass.findings.push(Finding {
                    kind: "drift-detected",
                    summary: format!("firewall differs from the policy: {before}"),
                    before,
                    after,
                });
            }
            return Ok(pass);
        }
        let was_applied = self.memory().last_plan.as_ref() == Some(&plan);
        let applied = self.firewall.apply(&plan, &observed).await?;
        tracing::info!(revision, kind = ?applied.kind, rules = applied.rules, elements = applied.elements, ?trigger, "firewall applied");
        self.memory().last_plan = Some(plan);
        if was_applied {
            // Same plan as before: the host changed under us.
            let what = format!("{before}; restored {after}");
            self.memory().repaired = Some((revision, what.clone()));
            pass.state = pb::EnforcerState::DriftedRepaired;
            pass.reason = format!("drift repaired: {what}");
            pass.findings.push(Finding {
                kind: "drift-repaired",
                summary: format!("firewall drift repaired: {before}"),
                before,
                after,
            });
            return Ok(pass);
        }
        if needs_confirm {
            if !self.confirmed().await {
                let why = format!(
                    "no controller was reachable within {} s after applying it",
                    self.confirm_within.as_secs()
                );
                return self.roll_back(revision, why).await;
            }
            self.cache.set_confirmed_firewall(desired).await?;
        }
        Ok(pass)
    }
}
