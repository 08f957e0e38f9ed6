//! `bulwarkctl report compliance`: gathers what [`crate::report::build`] needs from a
//! cluster ([`fetch`]; a web console can call it too) and writes the report as HTML, JSON
//! or CSV.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_proto::v1 as pb;
use clap::Subcommand;

use super::{Cli, CtlError};
use crate::client::{Client, ClientError};
use crate::fleet::now_ms;
use crate::grpc::fleet::{enforcer_from_pb, event_from_pb};
use crate::policy::Document;
use crate::report::{
    self, ACCOUNT_EVENTS, ClusterIdentity, DRIFT_EVENTS, HostEvent, HostInput, Inputs,
    LOGIN_EVENTS, Options, Revisions,
};
use crate::security::AuditEntry;

#[derive(Debug, Subcommand)]
pub enum ReportCmd {
    /// Which hosts meet each checklist item and NIST SP 800-53 control named in the
    /// policies' annotations, and why the others do not.
    ///
    /// Each host is judged on the enforcers that are evidence for a control (e.g. SC-7: the
    /// firewall; AC-18: wireless; IA-5: passwords; AU-2: the login monitor), as its agent
    /// last reported them: met; repaired (compliant after drift was repaired in the
    /// period); not-met (an enforcer failed, or differs from a `mode: audit` policy); unknown
    /// (offline, never reported, or no state for the enforcer). Totals per site (label
    /// `site`) and class (label `role`). The report also holds the login audit and the
    /// user-account alerts of the period, the policy revision in force with who applied it
    /// and when (from the admin audit log), the time it was made, and the cluster's name and
    /// CA fingerprint.
    ///
    /// Formats: `html`, one self-contained file that prints well; `json`, the documented
    /// `ComplianceReport` shape (`schema` 1); `csv`, one row per host and control with
    /// status and reason. Needs the viewer role.
    ///
    /// Example: bulwarkctl report compliance --site north --since 30d -o html --out north.html
    Compliance(ComplianceArgs),
}

#[derive(Debug, clap::Args)]
pub struct ComplianceArgs {
    /// Only hosts whose `site` label is SITE.
    #[arg(long, value_name = "SITE")]
    site: Option<String>,
    /// The period the login audit, alerts, drift repairs and policy changes cover.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
    since: Duration,
    /// html, json or csv [default: from the --out extension, else html].
    #[arg(long, short, value_name = "FORMAT")]
    output: Option<Format>,
    /// Write the report to FILE (replaced atomically) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Html,
    Json,
    Csv,
}

impl Format {
    fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "html" | "htm" => Some(Format::Html),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// A stored event in domain form.
pub fn host_event(e: pb::StoredEvent) -> HostEvent {
    HostEvent {
        agent_id: e.agent_id,
        hostname: e.hostname,
        event: event_from_pb(e.event.unwrap_or_default()),
    }
}

/// Every stored event of `kinds` at or after `since_ms`, paging through `ListEvents`.
pub async fn all_events(
    client: &Client,
    kinds: &[&str],
    agent_id: String,
    hostname: String,
    since_ms: i64,
) -> Result<Vec<HostEvent>, ClientError> {
    let mut req = pb::ListEventsRequest {
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        agent_id,
        hostname,
        since_ms,
        after: String::new(),
        limit: 10_000,
    };
    let mut events = Vec::new();
    loop {
        let reply = client.list_events(req.clone()).await?;
        events.extend(reply.events.into_iter().map(host_event));
        if reply.next.is_empty() {
            return Ok(events);
        }
        req.after = reply.next;
    }
}

fn host_input(a: pb::Agent) -> HostInput {
    HostInput {
        id: a.id,
        hostname: a.hostname,
        labels: a.labels.into_iter().collect(),
        online: a.online,
        last_seen_ms: a.last_seen_ms,
        revoked: a.revoked,
        desired_revision: a.desired_revision,
        enforcers: a.enforcers.into_iter().map(enforcer_from_pb).collect(),
    }
}

/// Why a report could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the cluster CA certificate: {0}")]
    Ca(crate::pki::PkiError),
    #[error("stored policy document {key} does not parse: {error}")]
    Document { key: String, error: serde_json::Error },
}

/// Gathers the report's inputs from the cluster `client` talks to: the fleet view, the
/// stored policies, the rollout state, the events of the period and the admin audit of
/// policy changes. `ca_pem` is the cluster CA the client trusts (its fingerprint names the
/// cluster in the report).
pub async fn fetch(client: &Client, ca_pem: &str, options: Options) -> Result<Inputs, FetchError> {
    let ca_sha256 = crate::pki::fingerprint(ca_pem).map_err(FetchError::Ca)?;
    let status = client.status().await?;
    let cluster = ClusterIdentity {
        name: status.cluster_name,
        ca_sha256,
        answered_by: format!("{}@{}", status.node_id, status.addr),
    };
    let hosts = client.list_agents().await?.agents.into_iter().map(host_input).collect();
    let documents = client
        .list_documents("Policy")
        .await?
        .documents
        .into_iter()
        .map(|d| {
            serde_json::from_str::<Document>(&d.json)
                .map_err(|error| FetchError::Document { key: d.key.clone(), error })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rollout = client.rollout("status").await?;
    let revisions = Revisions {
        released: rollout.released_revision,
        stored: rollout.stored_revision,
        rollout_phase: rollout.phase,
        rollout_target: rollout.target_revision,
    };
    let kinds: Vec<&str> =
        LOGIN_EVENTS.iter().chain(ACCOUNT_EVENTS).chain(DRIFT_EVENTS).copied().collect();
    let events = all_events(client, &kinds, String::new(), String::new(), options.since_ms).await?;
    let mut audit = Vec::new();
    for method in ["PolicyService/", "RolloutService/Start"] {
        let req = pb::ListAuditRequest { since: 0, who: String::new(), method: method.into() };
        audit.extend(client.list_audit(req).await?.into_iter().map(AuditEntry::from));
    }
    Ok(Inputs { options, cluster, documents, revisions, hosts, events, audit })
}

/// Writes `bytes` to `path` through a temporary file beside it, then renames.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CtlError> {
    let tmp = path.with_extension("partial");
    let io = |e: std::io::Error| CtlError::Io(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub async fn run(cli: &Cli, cmd: &ReportCmd) -> Result<(), CtlError> {
    let ReportCmd::Compliance(args) = cmd;
    let format = args
        .output
        .or_else(|| args.out.as_deref().and_then(Format::from_path))
        .unwrap_or(Format::Html);
    let ca_path = cli
        .tls_ca
        .clone()
        .ok_or_else(|| CtlError::Usage("--tls-ca (or BULWARK_TLS_CA) is required".into()))?;
    let ca_pem = std::fs::read_to_string(&ca_path)
        .map_err(|e| CtlError::Io(format!("cannot read --tls-ca {}: {e}", ca_path.display())))?;
    let client = cli.client()?;
    let now = now_ms();
    let options = Options {
        site: args.site.clone(),
        since_ms: now - args.since.as_millis() as i64,
        now_ms: now,
    };
    let inputs = fetch(&client, &ca_pem, options).await.map_err(|e| match e {
        FetchError::Client(e) => CtlError::Client(e),
        other => CtlError::Io(other.to_string()),
    })?;
    let report = report::build(&inputs);
    let bytes = match format {
        Format::Html => report::html::render(&report).into_bytes(),
        Format::Json => {
            let mut text = serde_json::to_string_pretty(&report)
                .map_err(|e| CtlError::Io(format!("encoding the report as JSON: {e}")))?;
            text.push('\n');
            text.into_bytes()
        }
        Format::Csv => report::csv::render(&report)
            .map_err(|e| CtlError::Io(format!("encoding the report as CSV: {e}")))?,
    };
    if let Some(site) = &args.site
        && report.hosts.is_empty()
    {
        eprintln!("warning: no enrolled host has the label site={site}");
    }
    match &args.out {
        Some(path) => {
            write_atomically(path, &bytes)?;
            let t = report.totals;
            eprintln!(
                "wrote {} ({} hosts: {} met, {} repaired, {} not met, {} unknown; {} controls; policy revision {})",
                path.display(),
                t.hosts,
                t.met,
                t.repaired,
                t.not_met,
                t.unknown,
                report.controls.len(),
                report.policy.revision
            );
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| CtlError::Io(format!("writing the report: {e}")))?;
        }
    }
    Ok(())
}
