//! RolloutService: start, status, pause, resume and abort of a staged rollout
//! ([`crate::policy::rollout`]).

use std::sync::Arc;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::rollout_service_server::RolloutService;
use tonic::{Request, Response, Status};

use super::audited;
use crate::node::{Consistency, Node, NodeError};
use crate::policy::rollout::{self, Selection};
use crate::policy::store as policy_store;

/// Canaries get this long to confirm when the request names no wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

pub struct RolloutApi {
    node: Arc<Node>,
}

impl RolloutApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The rollout state as this node has applied it.
    fn status(&self) -> Result<pb::RolloutStatus, NodeError> {
        let reader = &self.node.reader;
        let stored_revision = policy_store::generation(reader)?;
        let released_revision =
            rollout::released(reader)?.map_or(stored_revision, |(r, _)| r.revision);
        let base = pb::RolloutStatus {
            phase: "none".into(),
            released_revision,
            stored_revision,
            ..pb::RolloutStatus::default()
        };
        if let Some((r, since, _)) = rollout::current(reader)? {
            let canaries = rollout::judge(reader, &r, since)?
                .into_iter()
                .map(|c| pb::CanaryStatus {
                    agent_id: c.id,
                    applied_revision: c.applied_revision,
                    state: c.state,
                })
                .collect();
            return Ok(pb::RolloutStatus {
                phase: r.phase.name().into(),
                target_revision: r.target,
                started_revision: since,
                selection: r.selection,
                canaries,
                deadline_ms: if r.phase == rollout::Phase::Running { r.deadline_ms } else { 0 },
                wait_seconds: r.wait_ms / 1000,
                reason: r.reason,
                ..base
            });
        }
        if let Some((e, _)) = rollout::last(reader)? {
            return Ok(pb::RolloutStatus {
                phase: e.outcome,
                target_revision: e.target,
                canaries: e
                    .canaries
                    .into_iter()
                    .map(|agent_id| pb::CanaryStatus { agent_id, ..Default::default() })
                    .collect(),
                reason: e.reason,
                ..base
            });
        }
        Ok(base)
    }

    async fn fresh_status(&self) -> Result<Response<pb::RolloutStatus>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        Ok(Response::new(self.status()?))
    }
}

/// `key=value[,key=value]`.
fn parse_labels(s: &str) -> Result<Vec<(String, String)>, Status> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "canary selector {s:?}: {p:?} is not key=value"
                    ))
                })
        })
        .collect()
}

#[tonic::async_trait]
impl RolloutService for RolloutApi {
    async fn start(
        &self,
        req: Request<pb::RolloutStartRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let r = req.into_inner();
        let selection = match (r.canary_selector.trim().is_empty(), r.percent) {
            (false, 0) => Selection::Labels(parse_labels(&r.canary_selector)?),
            (true, n @ 1..=100) => Selection::Percent(n),
            (true, 0) => {
                return Err(Status::invalid_argument(
                    "name the canaries: a label selector or a percentage (1-100)",
                ));
            }
            (true, n) => {
                return Err(Status::invalid_argument(format!("percent {n} is not in 1-100")));
            }
            (false, _) => {
                return Err(Status::invalid_argument(
                    "give a canary selector or a percentage, not both",
                ));
            }
        };
        let wait =
            if r.wait_seconds == 0 { DEFAULT_WAIT } else { Duration::from_secs(r.wait_seconds) };
        let (started, _) = rollout::start(&self.node, r.revision, selection, wait).await?;
        let target = format!(
            "revision {} to {} ({} canaries)",
            started.target,
            started.selection,
            started.canaries.len()
        );
        Ok(audited(self.status()?, target))
    }

    async fn status(
        &self,
        _req: Request<pb::RolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        self.fresh_status().await
    }

    async fn pause(
        &self,
        _req: Request<pb::RolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let r = rollout::pause(&self.node, "paused by an operator").await?;
        Ok(audited(self.status()?, format!("revision {}", r.target)))
    }

    async fn resume(
        &self,
        _req: Request<pb::RolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let r = rollout::resume(&self.node).await?;
        Ok(audited(self.status()?, format!("revision {}", r.target)))
    }

    async fn abort(
        &self,
        _req: Request<pb::RolloutStatusRequest>,
    ) -> Result<Response<pb::RolloutStatus>, Status> {
        let (r, _) = rollout::abort(&self.node).await?;
        Ok(audited(self.status()?, format!("revision {}", r.target)))
    }
}
