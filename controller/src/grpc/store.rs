//! StoreService: typed, revisioned records; writes go through Raft, reads are linearizable
//! unless the caller opts into stale reads, and watches resume from any retained revision.

use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::store_service_server::StoreService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{AuditRecorded, Caller, Peer};
use super::status::conflict;
use crate::node::{Consistency, Node};
use crate::security::{self, AuditEntry};
use crate::store::{Change, ChangeOp, Command, Proposal, Record};

fn who<T>(req: &Request<T>) -> (Caller, Option<std::net::SocketAddr>) {
    let peer = req.extensions().get::<Peer>().and_then(|p| p.0);
    (super::caller(req), peer)
}

pub struct StoreApi {
    node: Arc<Node>,
}

impl StoreApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Commits `command` and its audit entry in one Raft entry.
    async fn write(
        &self,
        method: &str,
        who: (Caller, Option<std::net::SocketAddr>),
        request_id: &[u8],
        command: Command,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let request_id = match request_id.len() {
            0 => None,
            16 => {
                let mut id = [0u8; 16];
                id.copy_from_slice(request_id);
                Some(u128::from_be_bytes(id))
            }
            n => {
                return Err(Status::invalid_argument(format!(
                    "request_id must be 16 bytes, not {n}"
                )));
            }
        };
        let (kind, key, expected) = match &command {
            Command::Put { kind, key, expect_mod_revision, .. }
            | Command::Delete { kind, key, expect_mod_revision } => {
                (kind.clone(), key.clone(), *expect_mod_revision)
            }
            Command::Txn(_)
            | Command::Batch(_)
            | Command::Audit { .. }
            | Command::Note { .. }
            | Command::ForgetNote { .. }
            | Command::Events { .. } => {
                return Err(Status::invalid_argument(
                    "transactions, audit entries and notes are internal",
                ));
            }
        };
        if kind.starts_with(crate::security::RESERVED_KIND_PREFIX) {
            return Err(Status::permission_denied(format!(
                "records of kind {kind} are managed by Bulwark itself; use bulwarkctl token, agent, admin or audit"
            )));
        }
        let target = format!("{kind}/{key}");
        let entry =
            AuditEntry::new(&who.0, method, target.clone(), who.1, tonic::Code::Ok, String::new());
        let command = Command::Txn(vec![command, security::audit_command(&entry)?]);
        let written = self.node.write(Proposal { request_id, command }).await?;
        if let Some(actual) = written.outcome.conflict {
            return Err(conflict(&kind, &key, expected.unwrap_or_default(), actual));
        }
        let reply =
            pb::WriteReply { revision: written.outcome.revision, log_index: written.log_index };
        let mut response = super::audited(reply, target);
        response.extensions_mut().insert(AuditRecorded);
        Ok(response)
    }
}

fn consistency(value: i32) -> Result<Consistency, Status> {
    match pb::Consistency::try_from(value) {
        Ok(pb::Consistency::Linearizable) => Ok(Consistency::Linearizable),
        Ok(pb::Consistency::Stale) => Ok(Consistency::Stale),
        Err(_) => Err(Status::invalid_argument(format!("unknown consistency {value}"))),
    }
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        pb::Record {
            kind: r.kind,
            key: r.key,
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
        }
    }
}

impl From<Change> for pb::WatchEvent {
    fn from(c: Change) -> Self {
        let op = match c.op {
            ChangeOp::Put => pb::ChangeOp::Put,
            ChangeOp::Delete => pb::ChangeOp::Delete,
        };
        pb::WatchEvent { revision: c.revision, op: op as i32, record: Some(c.record.into()) }
    }
}

/// Streams changes after `after` as they are applied, until the client goes away.
async fn stream_changes(
    node: Arc<Node>,
    kind: String,
    mut after: u64,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
) {
    let mut applied = node.reader.subscribe();
    loop {
        let current = *applied.borrow_and_update();
        if current > after {
            match node.reader.changes(after, current) {
                Ok(changes) => {
                    for change in changes {
                        if (kind.is_empty() || change.record.kind == kind)
                            && tx.send(Ok(change.into())).await.is_err()
                        {
                            return;
                        }
                    }
                    after = current;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

#[tonic::async_trait]
impl StoreService for StoreApi {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteReply>, Status> {
        let who = who(&req);
        let r = req.into_inner();
        let cmd = Command::Put {
            kind: r.kind,
            key: r.key,
            value: r.value,
            expect_mod_revision: r.expect_mod_revision,
        };
        self.write("/bulwark.v1.StoreService/Put", who, &r.request_id, cmd).await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteReply>, Status> {
        let who = who(&req);
        let r = req.into_inner();
        let cmd = Command::Delete {
            kind: r.kind,
            key: r.key,
            expect_mod_revision: r.expect_mod_revision,
        };
        self.write("/bulwark.v1.StoreService/Delete", who, &r.request_id, cmd).await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetReply>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let revision = self.node.reader.revision();
        let record = self.node.reader.get(&r.kind, &r.key)?.map(Into::into);
        Ok(Response::new(pb::GetReply { record, revision }))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(consistency(r.consistency)?).await?;
        let (records, revision) = self.node.reader.list(&r.kind)?;
        Ok(Response::new(pb::ListReply {
            records: records.into_iter().map(Into::into).collect(),
            revision,
        }))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let after = match r.after_revision {
            0 => self.node.reader.oldest_retained()?.map_or(0, |o| o - 1),
            after => {
                // Fail now, not in the stream, when the start is already compacted.
                self.node.reader.check_retained(after)?;
                after
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(stream_changes(self.node.clone(), r.kind, after, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
