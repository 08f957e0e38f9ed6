//! PolicyService: validated, atomic apply of policy documents; list, get, delete, history
//! and rollback.

use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use super::audited;
use crate::node::{Consistency, Node};
use crate::policy::store::{self as policy_store, Applied};
use crate::store::ChangeOp;

pub struct PolicyApi {
    node: Arc<Node>,
}

impl PolicyApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn applied_to_pb(outcome: Applied) -> pb::ApplyReply {
    pb::ApplyReply {
        revision: outcome.revision,
        changes: outcome
            .changes
            .into_iter()
            .map(|(key, change)| pb::DocumentChange { key, change: change.into() })
            .collect(),
        warnings: outcome.warnings,
        impacts: outcome
            .impacts
            .into_iter()
            .map(|(i, agents)| pb::AgentImpact {
                agent_ids: agents.iter().map(|(id, _)| id.clone()).collect(),
                hostnames: agents.into_iter().map(|(_, h)| h).collect(),
                rules_added: i.rules_added,
                rules_removed: i.rules_removed,
                sections_changed: i.sections_changed,
                policies_changed: i.policies_changed,
            })
            .collect(),
        agents_affected: outcome.agents_affected as u32,
    }
}

fn doc_to_pb(doc: &crate::policy::Document, mod_revision: u64) -> pb::PolicyDocument {
    pb::PolicyDocument {
        key: doc.key(),
        json: serde_json::to_string_pretty(doc).unwrap_or_default(),
        mod_revision,
    }
}

fn dry(dry_run: bool) -> &'static str {
    if dry_run { " (dry run)" } else { "" }
}

/// How an audit entry names the revision a change was stored at (nothing when none was),
/// so a compliance report can tell who put a revision in force.
fn stored_as(revision: u64) -> String {
    if revision > 0 { format!(", stored as revision {revision}") } else { String::new() }
}

fn staged(staged: bool) -> &'static str {
    if staged { " (staged)" } else { "" }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        let r = req.into_inner();
        let sources: Vec<(String, String)> =
            r.files.into_iter().map(|f| (f.name, f.text)).collect();
        let outcome = policy_store::apply(&self.node, &sources, r.dry_run, r.staged).await?;
        let target = format!(
            "{} documents{}{}{}",
            outcome.changes.len(),
            staged(r.staged),
            dry(r.dry_run),
            stored_as(outcome.revision)
        );
        Ok(audited(applied_to_pb(outcome), target))
    }

    async fn list_documents(
        &self,
        req: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let kind = req.into_inner().kind;
        let revision = self.node.reader.revision();
        let documents = policy_store::stored(&self.node.reader)?
            .iter()
            .filter(|(doc, _)| kind.is_empty() || doc.kind() == kind)
            .map(|(doc, rev)| doc_to_pb(doc, *rev))
            .collect();
        Ok(Response::new(pb::ListDocumentsReply { documents, revision }))
    }

    async fn get_document(
        &self,
        req: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::PolicyDocument>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let key = req.into_inner().key;
        let stored = policy_store::stored(&self.node.reader)?;
        let (doc, rev) = stored.iter().find(|(d, _)| d.key() == key).ok_or_else(|| {
            Status::not_found(format!("no document {key} (keys look like Policy/modalities)"))
        })?;
        Ok(Response::new(doc_to_pb(doc, *rev)))
    }

    async fn delete_document(
        &self,
        req: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        let key = req.into_inner().key;
        let revision = policy_store::delete(&self.node, &key).await?;
        let outcome =
            Applied { revision, changes: vec![(key.clone(), "deleted")], ..Applied::default() };
        Ok(audited(applied_to_pb(outcome), format!("{key}{}", stored_as(revision))))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let key = req.into_inner().key;
        let entries = policy_store::history(&self.node.reader, &key)?
            .into_iter()
            .map(|(revision, op, doc)| pb::HistoryEntry {
                revision,
                op: if op == ChangeOp::Put { "put".into() } else { "delete".into() },
                json: serde_json::to_string_pretty(&doc).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::HistoryReply { entries }))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        let r = req.into_inner();
        let outcome =
            policy_store::rollback(&self.node, r.to_revision, r.dry_run, r.staged).await?;
        let target = format!(
            "to revision {}{}{}{}",
            r.to_revision,
            staged(r.staged),
            dry(r.dry_run),
            stored_as(outcome.revision)
        );
        Ok(audited(applied_to_pb(outcome), target))
    }
}
