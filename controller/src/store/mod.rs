//! Typed, revisioned records: the data every controller node holds once a Raft entry is
//! applied. A cluster-wide revision increases by one with every committed change, like
//! etcd's; the change history is kept so watchers can resume from any retained revision.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest accepted record kind, in bytes.
pub const MAX_KIND_LEN: usize = 64;
/// Longest accepted record key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest accepted record value, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 20;

/// What a client asks to commit: a command, and optionally an id that makes retries of
/// the same write apply once (the state machine remembers the outcome of recent ids).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub request_id: Option<u128>,
    pub command: Command,
}

impl From<Command> for Proposal {
    fn from(command: Command) -> Self {
        Self { request_id: None, command }
    }
}

/// A mutation replicated through Raft.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        kind: String,
        key: String,
        value: Vec<u8>,
        /// Compare-and-set: the current `mod_revision` must equal it (0: must not exist).
        expect_mod_revision: Option<u64>,
    },
    Delete {
        kind: String,
        key: String,
        expect_mod_revision: Option<u64>,
    },
    /// Appends an entry to the admin audit log: kept beside the records, not one of them
    /// (it takes no revision and is not watched); an existing key is never replaced.
    Audit {
        key: String,
        entry: Vec<u8>,
    },
    /// Stores a fact agents and nodes report (agent status, presence, agent events, node
    /// beats) beside the records: it takes no revision, so it never wakes desired-state
    /// streams or watchers. `replace: false` keeps an existing key (events are stored once).
    Note {
        key: String,
        value: Vec<u8>,
        replace: bool,
    },
    /// Removes a note (retention of agent events); no revision. Absent: nothing happens.
    ForgetNote {
        key: String,
    },
    /// All or nothing: every sub-command's `expect_mod_revision` is checked first; if all
    /// hold, they are applied in order (each taking its own revision), else none is.
    Txn(Vec<Command>),
    /// Stores the events one report of `agent` carried, each once, as one note (no
    /// revision): `events` are (id, encoded event) with ids ascending; those after the
    /// highest id already stored for the agent are kept (a retried report stores only what
    /// is new). See [`crate::fleet`] for the keys.
    Events {
        agent: String,
        events: Vec<(String, Vec<u8>)>,
    },
    /// Independent client writes committed as one Raft entry (the leader's group commit,
    /// [`crate::raft::group`]). Each member is applied as if it were an entry of its own,
    /// in order: its own request id, expectations, revision and outcome, and a failed
    /// expectation fails that member alone.
    Batch(Vec<Proposal>),
}

impl Command {
    /// Rejects what the state machine could not store faithfully, before it reaches Raft.
    pub fn validate(&self) -> Result<(), InvalidCommand> {
        let (kind, key) = match self {
            Command::Txn(ops) => {
                if ops.is_empty() {
                    return Err(InvalidCommand::Empty("transaction"));
                }
                for op in ops {
                    if matches!(op, Command::Txn(_) | Command::Batch(_)) {
                        return Err(InvalidCommand::NestedTxn);
                    }
                    op.validate()?;
                }
                return Ok(());
            }
            Command::Batch(members) => {
                if members.is_empty() {
                    return Err(InvalidCommand::Empty("batch"));
                }
                for member in members {
                    if matches!(member.command, Command::Batch(_)) {
                        return Err(InvalidCommand::NestedBatch);
                    }
                    member.command.validate()?;
                }
                return Ok(());
            }
            Command::Put { kind, key, value, .. } => {
                if value.len() > MAX_VALUE_LEN {
                    return Err(InvalidCommand::ValueTooLarge(value.len()));
                }
                (kind, key)
            }
            Command::Delete { kind, key, .. } => (kind, key),
            Command::ForgetNote { key } => return check_name("key", key, MAX_KEY_LEN),
            Command::Audit { key, entry: value } | Command::Note { key, value, .. } => {
                if value.len() > MAX_VALUE_LEN {
                    return Err(InvalidCommand::ValueTooLarge(value.len()));
                }
                return check_name("key", key, MAX_KEY_LEN);
            }
            Command::Events { agent, events } => {
                check_name("agent", agent, MAX_KEY_LEN)?;
                if agent.contains('/') {
                    return Err(InvalidCommand::Slash("agent"));
                }
                if events.is_empty() {
                    return Err(InvalidCommand::Empty("events"));
                }
                let bytes = self.weight(0);
                if bytes > MAX_VALUE_LEN {
                    return Err(InvalidCommand::ValueTooLarge(bytes));
                }
                for (i, (id, _)) in events.iter().enumerate() {
                    check_name("event id", id, MAX_KEY_LEN)?;
                    if id.contains('/') {
                        return Err(InvalidCommand::Slash("event id"));
                    }
                    if i > 0 && events[i - 1].0 >= *id {
                        return Err(InvalidCommand::EventOrder {
                            before: events[i - 1].0.clone(),
                            after: id.clone(),
                        });
                    }
                }
                return Ok(());
            }
        };
        check_name("kind", kind, MAX_KIND_LEN)?;
        check_name("key", key, MAX_KEY_LEN)
    }

    /// The bytes of keys and values `self` carries, plus `overhead` for every command in
    /// it: what it weighs in a batch of notes or an AppendEntries call.
    pub fn weight(&self, overhead: usize) -> usize {
        overhead
            + match self {
                Command::Put { kind, key, value, .. } => kind.len() + key.len() + value.len(),
                Command::Delete { kind, key, .. } => kind.len() + key.len(),
                Command::Audit { key, entry: value } | Command::Note { key, value, .. } => {
                    key.len() + value.len()
                }
                Command::ForgetNote { key } => key.len(),
                Command::Txn(ops) => ops.iter().map(|op| op.weight(overhead)).sum(),
                Command::Batch(members) => {
                    members.iter().map(|m| 16 + m.command.weight(overhead)).sum()
                }
                Command::Events { agent, events } => {
                    agent.len() + events.iter().map(|(id, e)| id.len() + e.len()).sum::<usize>()
                }
            }
    }
}

fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), InvalidCommand> {
    if value.is_empty() {
        return Err(InvalidCommand::Empty(field));
    }
    if value.len() > max {
        return Err(InvalidCommand::TooLong { field, len: value.len(), max });
    }
    if value.contains('\0') {
        return Err(InvalidCommand::Nul(field));
    }
    Ok(())
}

/// Why a command was refused before replication.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidCommand {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{0} must not contain a NUL character")]
    Nul(&'static str),
    #[error("value is {0} bytes; at most {MAX_VALUE_LEN} are allowed")]
    ValueTooLarge(usize),
    #[error("a transaction cannot contain another transaction or a batch")]
    NestedTxn,
    #[error("a batch cannot contain another batch")]
    NestedBatch,
    #[error("{0} must not contain '/'")]
    Slash(&'static str),
    #[error("event ids must ascend: {after:?} comes after {before:?}")]
    EventOrder { before: String, after: String },
}

/// What applying one entry produced. Blank and membership entries produce the default.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The revision after the entry was applied.
    pub revision: u64,
    /// Set when a compare-and-set failed: the record's actual `mod_revision` (0: missing).
    /// Nothing was changed then.
    pub conflict: Option<u64>,
}

/// What applying one Raft entry produced: one outcome, or one per member of a
/// [`Command::Batch`], in order. Returned to the proposer only; never stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    One(WriteOutcome),
    Batch(Vec<WriteOutcome>),
}

/// A stored record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One entry of the change history, keyed by its revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    pub op: ChangeOp,
    /// For a delete: the record as it was, with `mod_revision` set to the deleting revision.
    pub record: Record,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(kind: &str, key: &str) -> Command {
        Command::Put {
            kind: kind.into(),
            key: key.into(),
            value: vec![],
            expect_mod_revision: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(put("", "k").validate(), Err(InvalidCommand::Empty("kind")));
        assert_eq!(put("policy", "").validate(), Err(InvalidCommand::Empty("key")));
        assert_eq!(put("a\0b", "k").validate(), Err(InvalidCommand::Nul("kind")));
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            put("policy", &long).validate().map_err(|e| e.to_string()),
            Err(format!(
                "key is {} bytes long; at most {MAX_KEY_LEN} are allowed",
                MAX_KEY_LEN + 1
            ))
        );
        assert_eq!(put("policy", "radiology/base").validate(), Ok(()));
    }
}
