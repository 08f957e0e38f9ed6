//! Monitors: they watch the host and report what happened on it as events with `fields`
//! (new accounts, privileged-group changes, login attempts, brute force), where enforcers
//! report drift. Each runs its own loop, follows the desired state (a missing section:
//! not monitored, status `NOT_MANAGED`), and writes through an [`EventSink`]: events and the
//! monitor's progress mark (baseline, log position, journal cursor) go to the spool in one
//! transaction, so a restart neither misses nor repeats an event.

pub mod logins;
pub mod users;

use std::collections::HashMap;

use bulwark_proto::v1 as pb;

use crate::cache::{Cache, CacheError};
use crate::enforce::StatusBoard;
use crate::enforce::reconcile::now_ms;

/// Where monitors put events and status: the agent's spool and status board.
#[derive(Clone)]
pub struct EventSink {
    cache: Cache,
    board: StatusBoard,
}

impl EventSink {
    pub fn new(cache: Cache, board: StatusBoard) -> Self {
        Self { cache, board }
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// A new event of `monitor` (its id is given when it is spooled); `summary` is the line
    /// for people.
    pub fn event(
        &self,
        monitor: &str,
        kind: &str,
        revision: u64,
        summary: String,
        fields: HashMap<String, String>,
    ) -> Result<pb::AgentEvent, CacheError> {
        Ok(pb::AgentEvent {
            id: String::new(),
            kind: kind.to_owned(),
            enforcer: monitor.to_owned(),
            at_ms: now_ms(),
            revision,
            summary,
            before: fields.get("before").cloned().unwrap_or_default(),
            after: fields.get("after").cloned().unwrap_or_default(),
            fields: fields.into_iter().collect(),
        })
    }

    /// Spools `events` together with `mark` (one transaction) and wakes the reporter.
    pub async fn emit(
        &self,
        events: &[pb::AgentEvent],
        mark: Option<(&str, &[u8])>,
    ) -> Result<(), CacheError> {
        self.cache.spool_marked(events, mark).await?;
        if !events.is_empty() {
            for e in events {
                tracing::debug!(monitor = %e.enforcer, kind = %e.kind, fields = ?e.fields, "{}", e.summary);
            }
            self.board.ring_spool();
        }
        Ok(())
    }

    /// The monitor's stored progress under `key`.
    pub fn mark(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.cache.mark(key)
    }

    /// Reports the monitor's status.
    pub fn status(
        &self,
        monitor: &str,
        revision: u64,
        state: pb::EnforcerState,
        reason: String,
        details: Vec<(String, String)>,
    ) {
        self.board.set(pb::EnforcerStatus {
            enforcer: monitor.to_owned(),
            revision,
            state: state.into(),
            reason,
            checked_at_ms: now_ms(),
            details: details.into_iter().collect(),
        });
    }
}

/// `fields` from pairs.
pub(crate) fn fields<const N: usize>(pairs: [(&str, String); N]) -> HashMap<String, String> {
    pairs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_owned(), v)).collect()
}
