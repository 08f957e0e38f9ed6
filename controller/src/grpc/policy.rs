//! PolicyService: validated, atomic apply of policy documents; list, get, delete.

use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use super::audited;
use crate::node::{Consistency, Node};
use crate::policy::store as policy_store;

pub struct PolicyApi {
    node: Arc<Node>,
}

impl PolicyApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn changes_to_pb(changes: Vec<(String, &'static str)>) -> Vec<pb::DocumentChange> {
    changes
        .into_iter()
        .map(|(key, change)| pb::DocumentChange { key, change: change.into() })
        .collect()
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
        let outcome = policy_store::apply(&self.node, &sources, r.dry_run).await?;
        let target = format!(
            "{} documents{}",
            outcome.changes.len(),
            if r.dry_run { " (dry run)" } else { "" }
        );
        let reply = pb::ApplyReply {
            revision: outcome.revision,
            changes: changes_to_pb(outcome.changes),
            warnings: outcome.warnings,
        };
        Ok(audited(reply, target))
    }

    async fn list_documents(
        &self,
        req: Request<pb::ListDocumentsRequest>,
    ) -> Result<Response<pb::ListDocumentsReply>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let kind = req.into_inner().kind;
        let revision = self.node.reader.revision();
        let documents = policy_store::stored(&self.node.reader)?
            .into_iter()
            .filter(|(doc, _)| kind.is_empty() || doc.kind() == kind)
            .map(|(doc, rev)| pb::PolicyDocument {
                key: doc.key(),
                json: serde_json::to_string_pretty(&doc).unwrap_or_default(),
                mod_revision: rev,
            })
            .collect();
        Ok(Response::new(pb::ListDocumentsReply { documents, revision }))
    }

    async fn get_document(
        &self,
        req: Request<pb::GetDocumentRequest>,
    ) -> Result<Response<pb::PolicyDocument>, Status> {
        self.node.read_barrier(Consistency::Linearizable).await?;
        let key = req.into_inner().key;
        let (doc, rev) = policy_store::stored(&self.node.reader)?
            .into_iter()
            .find(|(d, _)| d.key() == key)
            .ok_or_else(|| {
                Status::not_found(format!("no document {key} (keys look like Policy/modalities)"))
            })?;
        Ok(Response::new(pb::PolicyDocument {
            key,
            json: serde_json::to_string_pretty(&doc).unwrap_or_default(),
            mod_revision: rev,
        }))
    }

    async fn delete_document(
        &self,
        req: Request<pb::DeleteDocumentRequest>,
    ) -> Result<Response<pb::ApplyReply>, Status> {
        let key = req.into_inner().key;
        let revision = policy_store::delete(&self.node, &key).await?;
        let reply = pb::ApplyReply {
            revision,
            changes: vec![pb::DocumentChange { key: key.clone(), change: "deleted".into() }],
            warnings: Vec::new(),
        };
        Ok(audited(reply, key))
    }
}
