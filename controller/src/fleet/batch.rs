//! Group commit for notes: many callers' [`Command::Note`] / [`Command::ForgetNote`] /
//! [`Command::Events`] ops become one Raft entry.
//!
//! Every agent report, stream open or close and node beat used to be its own entry; with a
//! fleet reporting at once the log, the fsyncs and the AppendEntries between nodes carried
//! thousands of tiny entries. A node now has one [`NoteBatcher`]: callers [`submit`] their
//! ops and await the outcome; one task takes every submission that queued while the
//! previous entry was committing (up to [`Limits`]), writes them as one [`Command::Txn`]
//! through `Node::write` (on a follower: one forwarded write to the leader) and answers
//! every caller with the shared result.
//!
//! Semantics per caller are those of a write of its own:
//! - its ops are validated before they join a batch, so one bad caller is refused alone;
//! - its ops stay together and in order, and batches are written one after another, so
//!   submissions commit in the order they were made (a later note of the same key wins);
//! - the batch's error is its error (a lost leader, no quorum, shutting down): callers
//!   retry as before. Notes are idempotent (`replace`, stored-once, or events past the
//!   agent's mark), so a batch retried by its callers does no harm;
//! - a caller that gives up (its RPC is cancelled) does not take its ops out of the queue:
//!   they may still commit, which for idempotent notes is the same as a commit that
//!   happened just before the cancellation;
//! - only notes are batched: a transaction that may fail as a whole (a compare-and-set)
//!   would fail every caller in it, so such writes go through `Node::write` alone.
//!
//! Shutdown: the task ends once every handle is dropped and the queue is drained; writes
//! during a shutdown fail with the node's error (`ShuttingDown`, `NoLeader`), and a caller
//! whose batch task is gone gets [`NodeError::ShuttingDown`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::node::{NodeError, Written};
use crate::raft::group::Gather;
use crate::store::Command;

/// How big one batch (one Raft entry) may grow.
///
/// An entry is replicated in one AppendEntries, which openraft 0.9 gives one heartbeat
/// interval (100 ms) to be sent, decoded, written and flushed by the follower (the
/// transport caps one call at `raft::network::APPEND_BUDGET`, 4 MiB). Applying it is one
/// sled batch that blocks a runtime worker while it runs, about 10 µs per op on a busy
/// 2-core machine (profiled): 1,024 ops (5 reports of 100 events) and 512 KiB keep that near
/// 10 ms and still make the per-entry costs (log flush, replication round, forwarding)
/// small beside the per-op ones. A single submission above the limits is still written,
/// alone.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_ops: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_ops: 1024, max_bytes: 512 << 10 }
    }
}

/// What commits a batch: `Node::write` in a node, a fake in tests.
pub type WriteFn = Arc<
    dyn Fn(Command) -> Pin<Box<dyn Future<Output = Result<Written, NodeError>> + Send>>
        + Send
        + Sync,
>;

/// One caller's ops, waiting for their batch.
struct Submission {
    ops: Vec<Command>,
    bytes: usize,
    done: oneshot::Sender<Result<Written, NodeError>>,
}

/// A handle to a node's note batcher. Cheap to clone.
#[derive(Clone)]
pub struct NoteBatcher {
    queue: mpsc::UnboundedSender<Submission>,
}

impl NoteBatcher {
    /// Starts the batch task on the current Tokio runtime.
    pub fn spawn(limits: Limits, write: WriteFn) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, limits, write));
        Self { queue }
    }

    /// Commits `ops` (notes only) in the next batch and returns that batch's outcome.
    pub async fn submit(&self, ops: Vec<Command>) -> Result<Written, NodeError> {
        let bytes = check(&ops)?;
        let (done, answer) = oneshot::channel();
        self.queue.send(Submission { ops, bytes, done }).map_err(|_| NodeError::ShuttingDown)?;
        answer.await.map_err(|_| NodeError::ShuttingDown)?
    }
}

/// Refuses what could not join a batch; returns the size it counts for.
fn check(ops: &[Command]) -> Result<usize, NodeError> {
    if ops.is_empty() {
        return Err(NodeError::Invalid("no notes to write".into()));
    }
    let mut bytes = 0;
    for op in ops {
        op.validate()?;
        bytes += match op {
            Command::Note { .. } | Command::ForgetNote { .. } | Command::Events { .. } => {
                op.weight(0)
            }
            other => {
                return Err(NodeError::Internal(format!(
                    "only notes are batched, not {}",
                    match other {
                        Command::Put { .. } => "a put",
                        Command::Delete { .. } => "a delete",
                        Command::Audit { .. } => "an audit entry",
                        Command::Batch(_) => "a batch",
                        _ => "a transaction",
                    }
                )));
            }
        };
    }
    Ok(bytes)
}

async fn run(rx: mpsc::UnboundedReceiver<Submission>, limits: Limits, write: WriteFn) {
    let mut queue = Gather::new(rx);
    while let Some(first) = queue.first().await {
        let (group, (_, bytes)) =
            queue.fill(first, limits.max_ops, limits.max_bytes, |s| (s.ops.len(), s.bytes));
        let (ops, waiting): (Vec<_>, Vec<_>) = group.into_iter().map(|s| (s.ops, s.done)).unzip();
        let ops: Vec<Command> = ops.into_iter().flatten().collect();
        let callers = waiting.len();
        let result = write(Command::Txn(ops)).await;
        if let Err(e) = &result {
            tracing::debug!(callers, bytes, error = %e, "note batch not written");
        }
        for done in waiting {
            // A caller that gave up no longer listens; its notes committed (or not) anyway.
            let _ = done.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests;
