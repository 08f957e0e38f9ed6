//! Group commit of client writes on the leader: the writes that queue up while earlier ones
//! are being committed become one Raft entry, a [`Command::Batch`].
//!
//! With one entry per write, every write paid openraft's per-entry work, a log record, its
//! share of each AppendEntries and one state machine apply call on every node; at 256
//! concurrent writers that per-entry work, not the disk, bounded the throughput
//! (`BENCHMARKS.md`). A node has one [`WriteGroup`]; `Node::write_local` hands it every
//! proposal, and one task:
//! - takes the next proposal, waits until fewer than [`Limits::in_flight`] groups are
//!   committing, then takes every proposal that queued meanwhile (up to [`Limits`]);
//! - proposes them to openraft in that order, a lone proposal as itself and several as one
//!   `Batch` entry, and moves on without waiting for the commit;
//! - answers each caller with its own member's outcome when the entry is applied.
//!
//! A write is not changed by sharing an entry: each member keeps its request id (a retried
//! id is applied once), its expectations (a failed compare-and-set fails that member
//! alone), its revision and its outcome. A single writer never waits: with a free slot its
//! proposal is proposed at once, as the entry it was before. An error from openraft (a lost
//! leadership, a stopped node) is every member's error, as it would have been for each.

use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{LogId, NodeId, Raft};
use crate::store::{Applied, Command, Proposal, WriteOutcome};

/// What a member's write came to: its outcome and the entry it was committed in, or
/// openraft's error.
pub type WriteResult =
    Result<(WriteOutcome, LogId), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>;

/// How big a group may grow, and how many may be committing at once.
///
/// A group is applied in one state machine call that blocks a runtime worker while it runs;
/// an audited put is about a dozen sled operations, so 256 members keep an apply in the
/// tens of milliseconds on a busy 2-core machine. One group in flight: the next one forms
/// while the last commits, so it holds every write that arrived meanwhile. In paired
/// `bulwark-raftbench` runs one did better than two, four or eight at 16 and 256 clients
/// (more groups in flight made them smaller without committing them sooner: openraft
/// keeps one AppendEntries in flight per follower anyway).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_members: usize,
    pub max_bytes: usize,
    pub in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_members: 256, max_bytes: 512 << 10, in_flight: 1 }
    }
}

struct Pending {
    proposal: Proposal,
    bytes: usize,
    done: oneshot::Sender<WriteResult>,
}

/// A handle to a node's write group. Cheap to clone; the task ends when every handle is
/// dropped.
#[derive(Clone)]
pub struct WriteGroup {
    queue: mpsc::UnboundedSender<Pending>,
}

impl WriteGroup {
    /// Starts the group's task on the current Tokio runtime.
    pub fn spawn(raft: Raft, limits: Limits) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, raft, limits));
        Self { queue }
    }

    /// Proposes `proposal` (validated by the caller) in the next group and returns its
    /// member's result; `None` when the group's task or openraft dropped it unanswered (the
    /// node is shutting down).
    pub async fn write(&self, proposal: Proposal) -> Option<WriteResult> {
        let bytes = proposal.command.weight(16);
        let (done, answer) = oneshot::channel();
        self.queue.send(Pending { proposal, bytes, done }).ok()?;
        answer.await.ok()
    }
}

/// A queue read a group at a time: the next item, then every item already queued behind
/// it while the group stays within its limits; an item that would not fit starts the next
/// group. The write group and the note batcher (`fleet::batch`) read their queues so.
pub(crate) struct Gather<T> {
    rx: mpsc::UnboundedReceiver<T>,
    carried: Option<T>,
}

impl<T> Gather<T> {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<T>) -> Self {
        Self { rx, carried: None }
    }

    /// Waits for the next item; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn first(&mut self) -> Option<T> {
        match self.carried.take() {
            Some(item) => Some(item),
            None => self.rx.recv().await,
        }
    }

    /// `first` and the items queued behind it, while the sums of their `weight`s (a count
    /// and bytes) stay within `max_count` and `max_bytes`, with those sums. `first` is
    /// always taken, even when it alone is over the limits.
    pub(crate) fn fill(
        &mut self,
        first: T,
        max_count: usize,
        max_bytes: usize,
        weight: impl Fn(&T) -> (usize, usize),
    ) -> (Vec<T>, (usize, usize)) {
        let (mut count, mut bytes) = weight(&first);
        let mut group = vec![first];
        while let Ok(next) = self.rx.try_recv() {
            let (c, b) = weight(&next);
            if count + c > max_count || bytes + b > max_bytes {
                self.carried = Some(next);
                break;
            }
            (count, bytes) = (count + c, bytes + b);
            group.push(next);
        }
        (group, (count, bytes))
    }
}

async fn run(rx: mpsc::UnboundedReceiver<Pending>, raft: Raft, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    let mut queue = Gather::new(rx);
    while let Some(first) = queue.first().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (group, _) = queue.fill(first, limits.max_members, limits.max_bytes, |p| (1, p.bytes));
        let (proposals, waiting): (Vec<_>, Vec<_>) =
            group.into_iter().map(|p| (p.proposal, p.done)).unzip();
        let entry = match <[Proposal; 1]>::try_from(proposals) {
            Ok([lone]) => lone,
            Err(proposals) => Proposal { request_id: None, command: Command::Batch(proposals) },
        };
        match raft.client_write_ff(Arc::new(entry)).await {
            Err(fatal) => answer_all(waiting, &Err(RaftError::Fatal(fatal))),
            Ok(reply) => {
                tokio::spawn(async move {
                    let result = reply.await;
                    // Freed before answering, so a caller's next write finds the slot free.
                    drop(slot);
                    match result {
                        Ok(Ok(resp)) => answer(waiting, resp.data, resp.log_id),
                        Ok(Err(e)) => answer_all(waiting, &Err(RaftError::APIError(e))),
                        Err(_) => answer_all(waiting, &Err(RaftError::Fatal(Fatal::Stopped))),
                    }
                });
            }
        }
    }
}

/// Gives each waiting member its own outcome.
fn answer(waiting: Vec<oneshot::Sender<WriteResult>>, applied: Applied, log_id: LogId) {
    let outcomes = match applied {
        Applied::One(outcome) => vec![outcome],
        Applied::Batch(outcomes) => outcomes,
    };
    if outcomes.len() != waiting.len() {
        // Not expected: the state machine answers a batch member by member. The callers'
        // answers are dropped, which they report as a lost write.
        tracing::error!(
            members = waiting.len(),
            outcomes = outcomes.len(),
            index = log_id.index,
            "a group's entry was applied with a different number of outcomes"
        );
        return;
    }
    for (done, outcome) in waiting.into_iter().zip(outcomes) {
        let _ = done.send(Ok((outcome, log_id)));
    }
}

fn answer_all(waiting: Vec<oneshot::Sender<WriteResult>>, result: &WriteResult) {
    for done in waiting {
        let _ = done.send(result.clone());
    }
}

#[cfg(test)]
mod tests;
