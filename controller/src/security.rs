//! The security plane's records and rules: admin roles, bootstrap tokens, enrolled agents,
//! revocations and the admin audit log. All are records of the replicated store under kinds
//! starting `bulwark.`, which the raw StoreService refuses to write: they change only
//! through these functions, and the audit log is append-only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::grpc::auth::Caller;
use crate::node::{Consistency, Node, NodeError};
use crate::pki::tokens::{self, TokenRecord, TokenRefusal};
use crate::pki::{Ca, Role};
use crate::raft::state_machine::Reader;
use crate::store::{Command, Proposal, Record};

/// Kinds under this prefix are Bulwark's own.
pub const RESERVED_KIND_PREFIX: &str = "bulwark.";
pub const ROLE: &str = "bulwark.role";
pub const TOKEN: &str = "bulwark.token";
pub const AGENT: &str = "bulwark.agent";
pub const REVOKED_AGENT: &str = "bulwark.revoked-agent";
pub const REENROLL: &str = "bulwark.reenroll";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(v).map_err(|e| NodeError::Internal(format!("encoding a record: {e}")))
}

fn parse<T: DeserializeOwned>(r: &Record) -> Result<T, NodeError> {
    serde_json::from_slice(&r.value)
        .map_err(|e| NodeError::Internal(format!("corrupt {} record {}: {e}", r.kind, r.key)))
}

fn read<T: DeserializeOwned>(
    reader: &Reader,
    kind: &str,
    key: &str,
) -> Result<Option<(T, u64)>, NodeError> {
    match reader.get(kind, key).map_err(|e| NodeError::Internal(e.to_string()))? {
        Some(r) => Ok(Some((parse(&r)?, r.mod_revision))),
        None => Ok(None),
    }
}

fn list<T: DeserializeOwned>(reader: &Reader, kind: &str) -> Result<Vec<T>, NodeError> {
    let (records, _) = reader.list(kind).map_err(|e| NodeError::Internal(e.to_string()))?;
    records.iter().map(parse).collect()
}

fn put(kind: &str, key: &str, value: Vec<u8>, expect: Option<u64>) -> Command {
    Command::Put { kind: kind.into(), key: key.into(), value, expect_mod_revision: expect }
}

async fn commit(node: &Node, command: Command) -> Result<crate::node::Written, NodeError> {
    node.write(Proposal { request_id: Some(rand::random()), command }).await
}

// ---- admin roles ----------------------------------------------------------------------

/// The role stored in the cluster for admin `name`, if any.
pub fn stored_role(reader: &Reader, name: &str) -> Option<Role> {
    read::<Role>(reader, ROLE, name).ok().flatten().map(|(role, _)| role)
}

pub async fn set_role(node: &Node, name: &str, role: Role) -> Result<(), NodeError> {
    if !crate::pki::identity::valid_name(name) {
        return Err(NodeError::Invalid(format!("{name:?} is not an admin name")));
    }
    commit(node, put(ROLE, name, json(&role)?, None)).await.map(|_| ())
}

pub fn list_roles(reader: &Reader) -> Result<Vec<(String, Role)>, NodeError> {
    let (records, _) = reader.list(ROLE).map_err(|e| NodeError::Internal(e.to_string()))?;
    records.iter().map(|r| Ok((r.key.clone(), parse(r)?))).collect()
}

// ---- bootstrap tokens -------------------------------------------------------------------

/// Creates a token; returns the secret (shown once) and its record.
pub async fn create_token(
    node: &Node,
    labels: BTreeMap<String, String>,
    ttl: Duration,
    uses: u32,
    by: &Caller,
) -> Result<(String, TokenRecord), NodeError> {
    if uses == 0 {
        return Err(NodeError::Invalid("a token needs at least one use (--uses)".into()));
    }
    if ttl.is_zero() {
        return Err(NodeError::Invalid("a token needs a lifetime (--ttl)".into()));
    }
    for (k, v) in &labels {
        if !crate::pki::identity::valid_name(k) || v.len() > 128 || v.contains('\0') {
            return Err(NodeError::Invalid(format!("label {k}={v} is not valid")));
        }
    }
    let secret = tokens::generate();
    let now = unix_now();
    let record = TokenRecord {
        hash: tokens::hash(&secret),
        labels,
        created_at: now,
        expires_at: now + ttl.as_secs(),
        uses_left: uses,
        uses_total: uses,
        revoked: false,
        created_by: by.name(),
    };
    let id = tokens::token_id(&record.hash);
    commit(node, put(TOKEN, &id, json(&record)?, Some(0))).await?;
    tracing::info!(token_id = %id, uses, ttl_s = ttl.as_secs(), "bootstrap token created");
    Ok((secret, record))
}

pub fn list_tokens(reader: &Reader) -> Result<Vec<TokenRecord>, NodeError> {
    list(reader, TOKEN)
}

pub async fn revoke_token(node: &Node, id: &str) -> Result<TokenRecord, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let (mut record, rev) = read::<TokenRecord>(&node.reader, TOKEN, id)?
        .ok_or_else(|| NodeError::NotFound(format!("no token with id {id}")))?;
    record.revoked = true;
    commit(node, put(TOKEN, id, json(&record)?, Some(rev))).await?;
    Ok(record)
}

// ---- agents -----------------------------------------------------------------------------

/// An enrolled agent (kind `bulwark.agent`, key: its id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub addresses: Vec<String>,
    pub mac: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at: u64,
    pub cert_not_after: u64,
    pub token_id: String,
    /// Accounts an operator released on this host (`bulwarkctl agents unlock`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub released_accounts: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revocation {
    reason: String,
    by: String,
    at: u64,
}

/// Host facts an agent reports at enrollment.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub os: String,
    pub addresses: Vec<String>,
    pub mac: String,
}

/// The write that records changed host facts of agent `id` (addresses move segments), or
/// `None` when nothing changed. Labels stay: they come from the token or an operator.
pub fn facts_update(
    reader: &Reader,
    id: &str,
    facts: HostFacts,
) -> Result<Option<Command>, NodeError> {
    let Some(record) = reader.get(AGENT, id).map_err(|e| NodeError::Internal(e.to_string()))?
    else {
        return Err(NodeError::NotFound(format!("agent {id} is not enrolled")));
    };
    let mut agent: AgentRecord = parse(&record)?;
    let before = (&agent.hostname, &agent.os, &agent.addresses, &agent.mac);
    if before == (&facts.hostname, &facts.os, &facts.addresses, &facts.mac) {
        return Ok(None);
    }
    agent.hostname = facts.hostname;
    agent.os = facts.os;
    agent.addresses = facts.addresses;
    agent.mac = facts.mac;
    Ok(Some(Command::Put {
        kind: AGENT.into(),
        key: id.into(),
        value: json(&agent)?,
        expect_mod_revision: Some(record.mod_revision),
    }))
}

/// Why agent `id` is revoked, if it is.
pub fn agent_revoked(reader: &Reader, id: &str) -> Option<String> {
    read::<Revocation>(reader, REVOKED_AGENT, id).ok().flatten().map(|(r, _)| r.reason)
}

/// An enrolled agent, why it is revoked (if it is), and the newest revision of its record
/// or its revocation.
pub type AgentEntry = (AgentRecord, Option<String>, u64);

/// Every enrolled agent (the fleet view and the inputs of resolution).
pub fn agents(reader: &Reader) -> Result<Vec<AgentEntry>, NodeError> {
    let (records, _) = reader.list(AGENT).map_err(|e| NodeError::Internal(e.to_string()))?;
    records
        .iter()
        .map(|r| {
            let agent: AgentRecord = parse(r)?;
            let revoked = reader
                .get(REVOKED_AGENT, &agent.id)
                .map_err(|e| NodeError::Internal(e.to_string()))?;
            let rev = r.mod_revision.max(revoked.as_ref().map_or(0, |x| x.mod_revision));
            let reason = revoked.as_ref().map(parse::<Revocation>).transpose()?.map(|r| r.reason);
            Ok((agent, reason, rev))
        })
        .collect()
}

/// The certificate issuing side of a controller: the CA and how long agent certs live.
pub struct Issuing {
    pub ca: Ca,
    pub agent_validity: Duration,
}

fn not_after(cert_pem: &str) -> u64 {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .ok()
        .and_then(|der| {
            x509_parser::parse_x509_certificate(&der)
                .ok()
                .map(|(_, c)| c.validity().not_after.timestamp().max(0) as u64)
        })
        .unwrap_or(0)
}

/// The outcome of an enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent: AgentRecord,
    pub cert_pem: String,
}

/// Enrolls an agent: checks the token, counts the use and records the agent in one Raft
/// transaction (so concurrent enrollments never exceed the token's uses), then signs the
/// agent's CSR for the assigned id.
pub async fn enroll(
    node: &Node,
    issuing: &Issuing,
    token: &str,
    csr_pem: &str,
    facts: HostFacts,
    expected_labels: &BTreeMap<String, String>,
    reenroll_id: Option<&str>,
) -> Result<Enrolled, NodeError> {
    let refused = |r: TokenRefusal| NodeError::Unauthenticated(r.to_string());
    if token.is_empty() {
        return Err(refused(TokenRefusal::Empty));
    }
    let token_id = tokens::token_id(&tokens::hash(token));
    // Sign first: a bad CSR must not use up the token. The id is fixed before signing.
    let agent_id = match reenroll_id {
        Some(id) => id.to_owned(),
        None => format!("agt-{}", hex::encode(rand::random::<[u8; 8]>())),
    };
    let cert_pem = issuing
        .ca
        .sign_agent_csr(csr_pem, &agent_id, issuing.agent_validity)
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
    for _attempt in 0..20 {
        node.read_barrier(Consistency::Linearizable).await?;
        let Some((mut record, token_rev)) = read::<TokenRecord>(&node.reader, TOKEN, &token_id)?
        else {
            return Err(refused(TokenRefusal::Unknown));
        };
        // Compare the full hash: the id is only a prefix.
        if record.hash != tokens::hash(token) {
            return Err(refused(TokenRefusal::Unknown));
        }
        record.check(unix_now()).map_err(refused)?;
        if let Some((k, v)) = expected_labels.iter().find(|(k, v)| record.labels.get(*k) != Some(v))
        {
            let given = record.labels.get(k).map_or("no such label".into(), |g| format!("{k}={g}"));
            return Err(NodeError::Invalid(format!(
                "the host expects label {k}={v} but this token gives {given}; is it the right token?"
            )));
        }
        record.uses_left -= 1;
        // A re-enrolled host keeps the accounts an operator released on it.
        let released_accounts = match reenroll_id {
            Some(id) => read::<AgentRecord>(&node.reader, AGENT, id)?
                .map(|(a, _)| a.released_accounts)
                .unwrap_or_default(),
            None => BTreeSet::new(),
        };
        let agent = AgentRecord {
            id: agent_id.clone(),
            hostname: facts.hostname.clone(),
            os: facts.os.clone(),
            addresses: facts.addresses.clone(),
            mac: facts.mac.clone(),
            labels: record.labels.clone(),
            enrolled_at: unix_now(),
            cert_not_after: not_after(&cert_pem),
            token_id: token_id.clone(),
            released_accounts,
        };
        let mut ops = vec![put(TOKEN, &token_id, json(&record)?, Some(token_rev))];
        match reenroll_id {
            None => ops.push(put(AGENT, &agent_id, json(&agent)?, Some(0))),
            Some(id) => {
                let permit = node
                    .reader
                    .get(REENROLL, id)
                    .map_err(|e| NodeError::Internal(e.to_string()))?;
                let Some(permit) = permit else {
                    return Err(NodeError::Refused(format!(
                        "agent {id} is already enrolled; an operator must run `bulwarkctl agent permit-reenroll {id}` first"
                    )));
                };
                if let Some(reason) = agent_revoked(&node.reader, id) {
                    return Err(NodeError::Refused(format!(
                        "agent {id} is revoked ({reason}); enroll as a new agent"
                    )));
                }
                let current =
                    node.reader.get(AGENT, id).map_err(|e| NodeError::Internal(e.to_string()))?;
                ops.push(put(
                    AGENT,
                    id,
                    json(&agent)?,
                    Some(current.map_or(0, |r| r.mod_revision)),
                ));
                ops.push(Command::Delete {
                    kind: REENROLL.into(),
                    key: id.into(),
                    expect_mod_revision: Some(permit.mod_revision),
                });
            }
        }
        let written = commit(node, Command::Txn(ops)).await?;
        if written.outcome.conflict.is_none() {
            tracing::info!(agent_id = %agent_id, token_id = %token_id, hostname = %facts.hostname, "agent enrolled");
            return Ok(Enrolled { agent, cert_pem });
        }
        // Another enrollment used the token at the same time: read it again.
    }
    Err(NodeError::Unavailable("the token is being used by many enrollments at once; retry".into()))
}

/// Issues a new certificate for agent `id` from a new CSR.
pub async fn renew(
    node: &Node,
    issuing: &Issuing,
    id: &str,
    csr_pem: &str,
) -> Result<(String, u64), NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let (mut agent, rev) = read::<AgentRecord>(&node.reader, AGENT, id)?.ok_or_else(|| {
        NodeError::NotFound(format!("agent {id} is not enrolled in this cluster"))
    })?;
    let cert_pem = issuing
        .ca
        .sign_agent_csr(csr_pem, id, issuing.agent_validity)
        .map_err(|e| NodeError::Invalid(e.to_string()))?;
    agent.cert_not_after = not_after(&cert_pem);
    commit(node, put(AGENT, id, json(&agent)?, Some(rev))).await?;
    tracing::info!(agent_id = %id, "agent certificate renewed");
    Ok((cert_pem, agent.cert_not_after))
}

pub async fn revoke_agent(
    node: &Node,
    id: &str,
    reason: &str,
    by: &Caller,
) -> Result<AgentRecord, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let (agent, _) = read::<AgentRecord>(&node.reader, AGENT, id)?.ok_or_else(|| {
        NodeError::NotFound(format!("agent {id} is not enrolled in this cluster"))
    })?;
    let reason = if reason.is_empty() { "revoked by an operator" } else { reason };
    let revocation = Revocation { reason: reason.to_owned(), by: by.name(), at: unix_now() };
    commit(node, put(REVOKED_AGENT, id, json(&revocation)?, None)).await?;
    tracing::info!(agent_id = %id, by = %by.name(), "agent revoked");
    Ok(agent)
}

/// Releases `user` on agent `id`: the agent's desired state lists it, so the agent removes
/// the lock Bulwark put on it and never locks it again. Idempotent.
pub async fn release_account(
    node: &Node,
    id: &str,
    user: &str,
    by: &Caller,
) -> Result<AgentRecord, NodeError> {
    if !valid_account_name(user) {
        return Err(NodeError::Invalid(format!(
            "{user:?} is not an account name (letters, digits, '.', '_', '-', at most 32, not starting with '-')"
        )));
    }
    loop {
        node.read_barrier(Consistency::Linearizable).await?;
        let (mut agent, revision) =
            read::<AgentRecord>(&node.reader, AGENT, id)?.ok_or_else(|| {
                NodeError::NotFound(format!("agent {id} is not enrolled in this cluster"))
            })?;
        if !agent.released_accounts.insert(user.to_owned()) {
            return Ok(agent);
        }
        // The record may change under us (renewal, host facts): compare-and-set, again.
        let written = commit(node, put(AGENT, id, json(&agent)?, Some(revision))).await?;
        if written.outcome.conflict.is_none() {
            tracing::info!(agent_id = %id, user, by = %by.name(), "account released");
            return Ok(agent);
        }
    }
}

/// A local account name as useradd accepts it by default.
fn valid_account_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && !user.starts_with('-')
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-$".contains(&b))
}

pub async fn permit_reenroll(node: &Node, id: &str, by: &Caller) -> Result<AgentRecord, NodeError> {
    node.read_barrier(Consistency::Linearizable).await?;
    let (agent, _) = read::<AgentRecord>(&node.reader, AGENT, id)?.ok_or_else(|| {
        NodeError::NotFound(format!("agent {id} is not enrolled in this cluster"))
    })?;
    commit(node, put(REENROLL, id, json(&by.name())?, None)).await?;
    Ok(agent)
}

// ---- audit log ----------------------------------------------------------------------------

/// One mutating admin call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_unix_ms: u64,
    pub who: String,
    pub method: String,
    pub target: String,
    pub peer: String,
    pub code: String,
    pub message: String,
}

impl AuditEntry {
    pub fn new(
        caller: &Caller,
        method: &str,
        target: String,
        peer: Option<SocketAddr>,
        code: tonic::Code,
        message: String,
    ) -> Self {
        let at_unix_ms =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        AuditEntry {
            at_unix_ms,
            who: caller.name(),
            method: method.to_owned(),
            target,
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            code: format!("{code:?}"),
            message,
        }
    }
}

/// The command that appends `entry` to the audit log (keys sort by time).
pub fn audit_command(entry: &AuditEntry) -> Result<Command, NodeError> {
    let key = format!("{:016}-{}", entry.at_unix_ms, hex::encode(rand::random::<[u8; 4]>()));
    Ok(Command::Audit { key, entry: json(entry)? })
}

/// Appends an entry to the audit log, committed through Raft.
pub async fn record_audit(node: &Node, entry: AuditEntry) -> Result<(), NodeError> {
    commit(node, audit_command(&entry)?).await.map(|_| ())
}

/// Audit entries since `since_ms`, optionally by `who` and for methods containing `method`.
pub fn list_audit(
    reader: &Reader,
    since_ms: u64,
    who: &str,
    method: &str,
) -> Result<Vec<AuditEntry>, NodeError> {
    let raw = reader
        .audit_from(&format!("{since_ms:016}"))
        .map_err(|e| NodeError::Internal(e.to_string()))?;
    let all = raw
        .iter()
        .map(|b| {
            serde_json::from_slice(b)
                .map_err(|e| NodeError::Internal(format!("corrupt audit entry: {e}")))
        })
        .collect::<Result<Vec<AuditEntry>, _>>()?;
    Ok(all
        .into_iter()
        .filter(|e| e.at_unix_ms >= since_ms)
        .filter(|e| who.is_empty() || e.who == who || e.who.ends_with(&format!("/{who}")))
        .filter(|e| method.is_empty() || e.method.contains(method))
        .collect())
}
