//! An admin client for a controller cluster, used by `bulwarkctl`, the lab and the
//! benchmarks. It tries the listed endpoints in turn, follows a node's "the leader is
//! there" answer, and retries what is retryable (unavailable nodes, elections, lost
//! quorum) until its deadline, so a caller sees one clear error or one result.
//!
//! Writes carry a random request id that stays the same across retries, so a write whose
//! reply was lost is applied once.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::agent_service_client::AgentServiceClient;
use bulwark_proto::v1::cluster_service_client::ClusterServiceClient;
use bulwark_proto::v1::event_service_client::EventServiceClient;
use bulwark_proto::v1::fleet_service_client::FleetServiceClient;
use bulwark_proto::v1::policy_service_client::PolicyServiceClient;
use bulwark_proto::v1::rollout_service_client::RolloutServiceClient;
use bulwark_proto::v1::security_service_client::SecurityServiceClient;
use bulwark_proto::v1::store_service_client::StoreServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::grpc::status::{ACTUAL_REVISION, ERROR_KIND, LEADER_ADDR};
use crate::raft::network::Peers;
use crate::tls::TlsMaterial;

/// A failed call, with the node that answered (or could not be reached).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {message}")]
pub struct ClientError {
    pub endpoint: String,
    pub code: Code,
    /// The controller's error kind (`no-quorum`, `not-leader`, `conflict`, ...), when the
    /// controller answered; `None` for transport failures.
    pub kind: Option<String>,
    pub message: String,
    /// After a failed compare-and-set: the record's current revision.
    pub actual_revision: Option<u64>,
}

impl ClientError {
    fn from_status(endpoint: &str, status: &Status) -> Self {
        let meta = |k| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut message = status.message().to_owned();
        if message.is_empty() {
            message = format!("{:?}", status.code());
        }
        if is_transport_failure(status) {
            message = format!("unreachable: {message}");
        }
        ClientError {
            endpoint: endpoint.to_owned(),
            code: status.code(),
            kind: meta(ERROR_KIND),
            message,
            actual_revision: meta(ACTUAL_REVISION).and_then(|v| v.parse().ok()),
        }
    }

    fn local(message: String) -> Self {
        ClientError {
            endpoint: "-".into(),
            code: Code::InvalidArgument,
            kind: None,
            message,
            actual_revision: None,
        }
    }

    /// True when the controller reported that no quorum is available.
    pub fn is_no_quorum(&self) -> bool {
        matches!(self.kind.as_deref(), Some("no-quorum" | "no-leader"))
    }
}

/// A failure of the connection rather than an answer from a controller (controllers tag
/// their answers with `x-bulwark-error` or use other codes).
fn is_transport_failure(status: &Status) -> bool {
    status.metadata().get(ERROR_KIND).is_none()
        && matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// Worth another try: the node or the cluster may be able to serve it shortly. Writes are
/// safe to retry because they carry a request id.
fn is_retryable(status: &Status) -> bool {
    status.code() == Code::Unavailable || is_transport_failure(status)
}

/// Where reads are served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Linearizable (ReadIndex through the leader): sees every acknowledged write.
    #[default]
    Linearizable,
    /// Whatever the contacted node has applied.
    Stale,
}

impl From<ReadMode> for i32 {
    fn from(m: ReadMode) -> i32 {
        match m {
            ReadMode::Linearizable => pb::Consistency::Linearizable as i32,
            ReadMode::Stale => pb::Consistency::Stale as i32,
        }
    }
}

/// Normalises `https://host:port/` and `host:port` to `host:port`.
pub fn normalize_endpoint(e: &str) -> String {
    e.trim().trim_start_matches("https://").trim_end_matches('/').to_owned()
}

/// A cluster client. Clones share connections.
#[derive(Clone)]
pub struct Client {
    pool: Peers,
    endpoints: Vec<String>,
    current: std::sync::Arc<Mutex<String>>,
    retry_for: Duration,
}

impl Client {
    /// A client for `endpoints` (`host:port`, tried in order) that retries retryable
    /// failures for up to `retry_for`.
    pub fn new(
        tls: &TlsMaterial,
        endpoints: &[String],
        retry_for: Duration,
    ) -> Result<Self, ClientError> {
        Self::with_tls(tls.client_config(), endpoints, retry_for)
    }

    /// A client without a certificate of its own, verifying the servers against `ca_pem`:
    /// all it may do is enroll (and health checks).
    pub fn anonymous(
        ca_pem: &[u8],
        endpoints: &[String],
        retry_for: Duration,
    ) -> Result<Self, ClientError> {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
            .timeout(Duration::from_secs(10));
        Self::with_tls(tls, endpoints, retry_for)
    }

    fn with_tls(
        tls: tonic::transport::ClientTlsConfig,
        endpoints: &[String],
        retry_for: Duration,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> =
            endpoints.iter().map(|e| normalize_endpoint(e)).filter(|e| !e.is_empty()).collect();
        let Some(first) = endpoints.first().cloned() else {
            return Err(ClientError::local("no controller endpoint given (--endpoints)".into()));
        };
        Ok(Self {
            pool: Peers::new(tls, String::new()),
            endpoints,
            current: std::sync::Arc::new(Mutex::new(first)),
            retry_for,
        })
    }

    /// The same connections, pinned to one node and never moving to another: for
    /// inspecting a particular node (status, stale reads).
    pub fn pinned(&self, endpoint: &str) -> Client {
        let endpoint = normalize_endpoint(endpoint);
        Client {
            pool: self.pool.clone(),
            endpoints: vec![endpoint.clone()],
            current: std::sync::Arc::new(Mutex::new(endpoint)),
            retry_for: self.retry_for,
        }
    }

    /// The same client with another retry budget.
    pub fn with_retry_for(&self, retry_for: Duration) -> Client {
        Client { retry_for, ..self.clone() }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn current(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_current(&self, e: &str) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = e.to_owned();
    }

    fn next_endpoint(&self, after: &str) -> String {
        let pos = self.endpoints.iter().position(|e| e == after);
        match pos {
            Some(i) => self.endpoints[(i + 1) % self.endpoints.len()].clone(),
            None => self.endpoints[0].clone(),
        }
    }

    /// Runs `f` against the current node, moving to the leader or the next node and
    /// retrying while the failure is retryable and the budget lasts.
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut target = self.current();
        let mut backoff = Duration::from_millis(25);
        // Following a leader hint, or moving on from a node that refused the connection
        // (the request was never sent), costs no retry budget, a bounded number of times.
        let mut free_hops = self.endpoints.len() + 2;
        loop {
            let channel =
                self.pool.channel(&target).map_err(|e| ClientError::local(e.to_string()))?;
            let status = match f(channel).await {
                Ok(v) => {
                    self.set_current(&target);
                    return Ok(v);
                }
                Err(status) => status,
            };
            let err = ClientError::from_status(&target, &status);
            let leader_hint = (err.kind.as_deref() == Some("not-leader"))
                .then(|| status.metadata().get(LEADER_ADDR).and_then(|a| a.to_str().ok()))
                .flatten();
            let not_connected =
                is_transport_failure(&status) && status.message().contains("connect");
            if free_hops > 0 && (leader_hint.is_some() || not_connected) {
                free_hops -= 1;
                target = match leader_hint {
                    Some(addr) => addr.to_owned(),
                    None => self.next_endpoint(&target),
                };
                continue;
            }
            let retryable = is_retryable(&status);
            if !retryable || Instant::now() >= deadline {
                return Err(err);
            }
            match (err.kind.as_deref(), status.metadata().get(LEADER_ADDR)) {
                (Some("not-leader"), Some(addr)) => {
                    if let Ok(addr) = addr.to_str() {
                        tracing::debug!(from = %target, to = addr, "following the leader");
                        target = addr.to_owned();
                        continue;
                    }
                }
                // The node did not answer: try the next one.
                (None, _) => target = self.next_endpoint(&target),
                _ => {}
            }
            tracing::debug!(endpoint = %target, error = %err, "retrying");
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    fn security(channel: Channel) -> SecurityServiceClient<Channel> {
        SecurityServiceClient::new(channel)
    }

    fn fleet(channel: Channel) -> FleetServiceClient<Channel> {
        FleetServiceClient::new(channel)
    }

    fn events(channel: Channel) -> EventServiceClient<Channel> {
        EventServiceClient::new(channel)
    }

    /// Stored agent events matching `req`, oldest first (one page; see `next`).
    pub async fn list_events(
        &self,
        req: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsReply, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::events(c).list_events(req).await?.into_inner()) }
        })
        .await
    }

    /// The stored events matching `req`, then each new one as it is committed.
    pub async fn follow_events(
        &self,
        req: pb::ListEventsRequest,
    ) -> Result<tonic::Streaming<pb::StoredEvent>, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::events(c).follow_events(req).await?.into_inner()) }
        })
        .await
    }

    fn agent(channel: Channel) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(channel)
    }

    /// Creates a bootstrap token. Not retried: a lost reply would leave a token nobody saw.
    pub async fn create_token(
        &self,
        labels: std::collections::HashMap<String, String>,
        ttl: Duration,
        uses: u32,
    ) -> Result<pb::CreateTokenReply, ClientError> {
        let req = pb::CreateTokenRequest { labels, ttl_seconds: ttl.as_secs(), uses };
        self.with_retry_for(Duration::ZERO)
            .call(|c| {
                let req = req.clone();
                async move { Ok(Self::security(c).create_token(req).await?.into_inner()) }
            })
            .await
    }

    pub async fn list_tokens(&self) -> Result<Vec<pb::TokenInfo>, ClientError> {
        self.call(|c| async move {
            Ok(Self::security(c).list_tokens(pb::ListTokensRequest {}).await?.into_inner().tokens)
        })
        .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<pb::TokenInfo, ClientError> {
        let req = pb::RevokeTokenRequest { id: id.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::security(c).revoke_token(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn set_admin_role(
        &self,
        name: &str,
        role: &str,
    ) -> Result<pb::AdminRole, ClientError> {
        let req = pb::SetAdminRoleRequest { name: name.to_owned(), role: role.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::security(c).set_admin_role(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list_admin_roles(&self) -> Result<Vec<pb::AdminRole>, ClientError> {
        self.call(|c| async move {
            Ok(Self::security(c)
                .list_admin_roles(pb::ListAdminRolesRequest {})
                .await?
                .into_inner()
                .roles)
        })
        .await
    }

    pub async fn list_audit(
        &self,
        req: pb::ListAuditRequest,
    ) -> Result<Vec<pb::AuditEntry>, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::security(c).list_audit(req).await?.into_inner().entries) }
        })
        .await
    }

    /// Every enrolled agent.
    pub async fn list_agents(&self) -> Result<pb::ListAgentsReply, ClientError> {
        self.list_agents_where(pb::ListAgentsRequest::default()).await
    }

    /// The agents matching a label selector and a status (see `ListAgentsRequest`).
    pub async fn list_agents_where(
        &self,
        req: pb::ListAgentsRequest,
    ) -> Result<pb::ListAgentsReply, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::fleet(c).list_agents(req).await?.into_inner()) }
        })
        .await
    }

    /// One agent with its newest `events` events (0: 20).
    pub async fn show_agent(
        &self,
        id: &str,
        events: u32,
    ) -> Result<pb::ShowAgentReply, ClientError> {
        let req = pb::ShowAgentRequest { id: id.to_owned(), events };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::fleet(c).show_agent(req).await?.into_inner()) }
        })
        .await
    }

    /// Sends an agent's report (status and events); the caller must be that agent.
    pub async fn report(&self, report: pb::AgentReport) -> Result<pb::ReportAck, ClientError> {
        self.call(|c| {
            let report = report.clone();
            async move { Ok(Self::agent(c).report(report).await?.into_inner()) }
        })
        .await
    }

    pub async fn revoke_agent(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<pb::AgentReply, ClientError> {
        let req = pb::RevokeAgentRequest { id: id.to_owned(), reason: reason.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::fleet(c).revoke_agent(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn permit_reenroll(&self, id: &str) -> Result<pb::AgentReply, ClientError> {
        let req = pb::PermitReenrollRequest { id: id.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::fleet(c).permit_reenroll(req).await?.into_inner()) }
        })
        .await
    }

    /// Releases `user` on agent `id` (see `FleetService.UnlockAccount`).
    pub async fn unlock_account(
        &self,
        id: &str,
        user: &str,
    ) -> Result<pb::AgentReply, ClientError> {
        let req = pb::UnlockAccountRequest { id: id.to_owned(), user: user.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::fleet(c).unlock_account(req).await?.into_inner()) }
        })
        .await
    }

    /// Enrolls with a bootstrap token (a [`Client::anonymous`] suffices). Not retried: each
    /// attempt may use up one of the token's uses.
    pub async fn enroll(&self, req: pb::EnrollRequest) -> Result<pb::EnrollReply, ClientError> {
        self.with_retry_for(Duration::ZERO)
            .call(|c| {
                let req = req.clone();
                async move { Ok(Self::agent(c).enroll(req).await?.into_inner()) }
            })
            .await
    }

    /// An agent renewing its own certificate.
    pub async fn renew(&self, csr_pem: &str) -> Result<pb::RenewReply, ClientError> {
        let req = pb::RenewRequest { csr_pem: csr_pem.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::agent(c).renew(req).await?.into_inner()) }
        })
        .await
    }

    /// An agent opening its desired-state stream.
    pub async fn stream_desired_state(
        &self,
        have_revision: u64,
    ) -> Result<tonic::Streaming<pb::DesiredState>, ClientError> {
        self.call(|c| async move {
            let req = pb::DesiredStateRequest { have_revision, agent_id: String::new() };
            Ok(Self::agent(c).stream_desired_state(req).await?.into_inner())
        })
        .await
    }

    fn policy(channel: Channel) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(channel).max_decoding_message_size(64 << 20)
    }

    /// Applies policy files (name, text) atomically, or reports what would change.
    pub async fn apply_policies(
        &self,
        files: Vec<(String, String)>,
        dry_run: bool,
    ) -> Result<pb::ApplyReply, ClientError> {
        self.apply_policies_with(files, dry_run, false).await
    }

    /// [`Client::apply_policies`]; `staged` stores them without releasing them to agents.
    pub async fn apply_policies_with(
        &self,
        files: Vec<(String, String)>,
        dry_run: bool,
        staged: bool,
    ) -> Result<pb::ApplyReply, ClientError> {
        let files: Vec<pb::SourceFile> =
            files.into_iter().map(|(name, text)| pb::SourceFile { name, text }).collect();
        let req = pb::ApplyRequest { files, dry_run, staged };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::policy(c).apply(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list_documents(&self, kind: &str) -> Result<pb::ListDocumentsReply, ClientError> {
        let req = pb::ListDocumentsRequest { kind: kind.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::policy(c).list_documents(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn get_document(&self, key: &str) -> Result<pb::PolicyDocument, ClientError> {
        let req = pb::GetDocumentRequest { key: key.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::policy(c).get_document(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete_document(&self, key: &str) -> Result<pb::ApplyReply, ClientError> {
        let req = pb::DeleteDocumentRequest { key: key.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::policy(c).delete_document(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn policy_history(&self, key: &str) -> Result<Vec<pb::HistoryEntry>, ClientError> {
        let req = pb::HistoryRequest { key: key.to_owned() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::policy(c).history(req).await?.into_inner().entries) }
        })
        .await
    }

    pub async fn policy_rollback(
        &self,
        to_revision: u64,
        dry_run: bool,
    ) -> Result<pb::ApplyReply, ClientError> {
        self.policy_rollback_with(to_revision, dry_run, false).await
    }

    /// [`Client::policy_rollback`]; `staged` stores it without releasing it to agents.
    pub async fn policy_rollback_with(
        &self,
        to_revision: u64,
        dry_run: bool,
        staged: bool,
    ) -> Result<pb::ApplyReply, ClientError> {
        let req = pb::RollbackRequest { to_revision, dry_run, staged };
        self.call(|c| async move { Ok(Self::policy(c).rollback(req).await?.into_inner()) }).await
    }

    fn rollout_svc(channel: Channel) -> RolloutServiceClient<Channel> {
        RolloutServiceClient::new(channel)
    }

    /// Starts rolling out staged revision `revision` to canaries (a label selector, or a
    /// percentage of agents when `canary_selector` is empty).
    pub async fn rollout_start(
        &self,
        revision: u64,
        canary_selector: &str,
        percent: u32,
        wait: Duration,
    ) -> Result<pb::RolloutStatus, ClientError> {
        let req = pb::RolloutStartRequest {
            revision,
            canary_selector: canary_selector.to_owned(),
            percent,
            wait_seconds: wait.as_secs(),
        };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::rollout_svc(c).start(req).await?.into_inner()) }
        })
        .await
    }

    /// `what`: status, pause, resume or abort.
    pub async fn rollout(&self, what: &str) -> Result<pb::RolloutStatus, ClientError> {
        let what = what.to_owned();
        self.call(|c| {
            let what = what.clone();
            async move {
                let mut r = Self::rollout_svc(c);
                let req = pb::RolloutStatusRequest {};
                let reply = match what.as_str() {
                    "pause" => r.pause(req).await?,
                    "resume" => r.resume(req).await?,
                    "abort" => r.abort(req).await?,
                    _ => r.status(req).await?,
                };
                Ok(reply.into_inner())
            }
        })
        .await
    }

    fn cluster(channel: Channel) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(channel).max_decoding_message_size(256 << 20)
    }

    fn store(channel: Channel) -> StoreServiceClient<Channel> {
        StoreServiceClient::new(channel).max_decoding_message_size(256 << 20)
    }

    /// The status of the node this client talks to.
    pub async fn status(&self) -> Result<pb::NodeStatus, ClientError> {
        self.call(|c| async move {
            Ok(Self::cluster(c).status(pb::StatusRequest {}).await?.into_inner())
        })
        .await
    }

    pub async fn init(&self, members: Vec<pb::Member>) -> Result<pb::MembershipReply, ClientError> {
        self.call(|c| {
            let members = members.clone();
            async move { Ok(Self::cluster(c).init(pb::InitRequest { members }).await?.into_inner()) }
        })
        .await
    }

    pub async fn add_learner(
        &self,
        id: u64,
        addr: &str,
    ) -> Result<pb::MembershipReply, ClientError> {
        let addr = normalize_endpoint(addr);
        self.call(|c| {
            let req = pb::AddLearnerRequest { id, addr: addr.clone() };
            async move { Ok(Self::cluster(c).add_learner(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn promote(&self, id: u64) -> Result<pb::MembershipReply, ClientError> {
        self.call(|c| async move {
            Ok(Self::cluster(c).promote(pb::PromoteRequest { id }).await?.into_inner())
        })
        .await
    }

    pub async fn remove(&self, id: u64) -> Result<pb::MembershipReply, ClientError> {
        self.call(|c| async move {
            Ok(Self::cluster(c).remove_node(pb::RemoveNodeRequest { id }).await?.into_inner())
        })
        .await
    }

    /// Streams a snapshot built on the contacted node into `out`; returns its description.
    pub async fn snapshot_save(
        &self,
        out: &mut (impl std::io::Write + Send),
    ) -> Result<pb::SnapshotInfo, ClientError> {
        let endpoint = self.current();
        let channel =
            self.pool.channel(&endpoint).map_err(|e| ClientError::local(e.to_string()))?;
        let status = |s: Status| ClientError::from_status(&endpoint, &s);
        let mut stream = Self::cluster(channel)
            .snapshot_save(pb::SnapshotSaveRequest {})
            .await
            .map_err(status)?
            .into_inner();
        let mut info = None;
        while let Some(chunk) = stream.message().await.map_err(status)? {
            if chunk.info.is_some() {
                info = chunk.info;
            }
            out.write_all(&chunk.data)
                .map_err(|e| ClientError::local(format!("writing snapshot: {e}")))?;
        }
        info.ok_or_else(|| ClientError::local("the snapshot stream carried no description".into()))
    }

    fn request_id() -> Vec<u8> {
        rand::random::<u128>().to_be_bytes().to_vec()
    }

    /// Writes a record; `expect_mod_revision` makes it a compare-and-set.
    pub async fn put(
        &self,
        kind: &str,
        key: &str,
        value: Vec<u8>,
        expect_mod_revision: Option<u64>,
    ) -> Result<pb::WriteReply, ClientError> {
        let req = pb::PutRequest {
            kind: kind.to_owned(),
            key: key.to_owned(),
            value,
            expect_mod_revision,
            request_id: Self::request_id(),
        };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::store(c).put(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn delete(
        &self,
        kind: &str,
        key: &str,
        expect_mod_revision: Option<u64>,
    ) -> Result<pb::WriteReply, ClientError> {
        let req = pb::DeleteRequest {
            kind: kind.to_owned(),
            key: key.to_owned(),
            expect_mod_revision,
            request_id: Self::request_id(),
        };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::store(c).delete(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn get(
        &self,
        kind: &str,
        key: &str,
        mode: ReadMode,
    ) -> Result<pb::GetReply, ClientError> {
        let req =
            pb::GetRequest { kind: kind.to_owned(), key: key.to_owned(), consistency: mode.into() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::store(c).get(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list(&self, kind: &str, mode: ReadMode) -> Result<pb::ListReply, ClientError> {
        let req = pb::ListRequest { kind: kind.to_owned(), consistency: mode.into() };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::store(c).list(req).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch on the current node for changes after `after_revision`.
    pub async fn watch(
        &self,
        kind: &str,
        after_revision: u64,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, ClientError> {
        let req = pb::WatchRequest { kind: kind.to_owned(), after_revision };
        self.call(|c| {
            let req = req.clone();
            async move { Ok(Self::store(c).watch(req).await?.into_inner()) }
        })
        .await
    }

    /// The status of every member the contacted node knows of, each asked directly
    /// (`Err` for a member that did not answer within `timeout`).
    pub async fn member_statuses(
        &self,
        timeout: Duration,
    ) -> Result<(pb::NodeStatus, Vec<(pb::Member, Result<pb::NodeStatus, ClientError>)>), ClientError>
    {
        let first = self.status().await?;
        let asks = first.members.iter().map(|m| {
            let pinned = self.pinned(&m.addr).with_retry_for(Duration::ZERO);
            let m = m.clone();
            async move {
                let status = match tokio::time::timeout(timeout, pinned.status()).await {
                    Ok(r) => r,
                    Err(_) => Err(ClientError {
                        endpoint: m.addr.clone(),
                        code: Code::DeadlineExceeded,
                        kind: None,
                        message: format!("no answer within {} ms", timeout.as_millis()),
                        actual_revision: None,
                    }),
                };
                (m, status)
            }
        });
        let members = futures::future::join_all(asks).await;
        Ok((first, members))
    }
}
