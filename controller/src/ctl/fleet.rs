//! `bulwarkctl agent|agents`: the fleet table, one agent's detail, revocation.

use std::time::Duration;

use bulwark_proto::v1 as pb;
use clap::Subcommand;

use super::security::{labels_text, when};
use super::{Cli, CtlError};
use crate::fleet::now_ms;

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// The fleet table: online, revision applied vs desired, per-enforcer state.
    List {
        /// Only agents with these labels, e.g. `role=modality,site=north`.
        #[arg(long, default_value = "")]
        selector: String,
        /// Only agents that are online, offline, compliant, drifted, failed or revoked.
        #[arg(long, default_value = "")]
        status: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One agent: facts, labels, per-enforcer state with reasons, recent events.
    Show {
        id: String,
        /// How many recent events to show.
        #[arg(long, default_value_t = 20)]
        events: u32,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an agent: its certificates are refused on every controller and its open
    /// streams are closed.
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let an enrolled agent id enroll once more (e.g. after its certificate expired offline).
    PermitReenroll { id: String },
    /// Release an account the agent locked under a users policy with `action: lock`: the
    /// agent removes Bulwark's lock (the `!` it put before the password hash) and never
    /// locks that account again; a `user-unlocked` event confirms it.
    Unlock {
        /// The agent (id, as `agents list` shows).
        id: String,
        /// The local account name.
        user: String,
    },
}

/// `bulwarkctl events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only these kinds, comma-separated (drift-repaired, drift-detected,
    /// commit-confirmed-rollback, apply-failed, user-added, privileged-group-added, login,
    /// brute-force, events-dropped, ...).
    #[arg(long, value_delimiter = ',')]
    kind: Vec<String>,
    /// Only this host (hostname, or an agent id such as agt-5f0c...).
    #[arg(long)]
    host: Option<String>,
    /// Only events newer than this (e.g. 1h, 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Keep printing new events as they are committed, until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
    /// At most this many (without --follow).
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// `table`, or `json`: one JSON object per line.
    #[arg(long, short, default_value = "table")]
    output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

fn print_event(e: &pb::StoredEvent, output: Output) {
    let ev = e.event.clone().unwrap_or_default();
    match output {
        Output::Json => {
            let line = serde_json::json!({
                "agent_id": e.agent_id, "hostname": e.hostname, "id": ev.id, "kind": ev.kind,
                "enforcer": ev.enforcer, "at_ms": ev.at_ms, "revision": ev.revision,
                "summary": ev.summary, "before": ev.before, "after": ev.after,
                "fields": ev.fields,
            });
            println!("{line}");
        }
        Output::Table => {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(ev.at_ms.max(0) as u64);
            let host = if e.hostname.is_empty() { &e.agent_id } else { &e.hostname };
            println!(
                "{} {:<18} {:<26} {:<10} {}",
                humantime::format_rfc3339_millis(at),
                host,
                ev.kind,
                ev.enforcer,
                ev.summary
            );
        }
    }
}

pub async fn events(cli: &Cli, args: &EventsArgs) -> Result<(), CtlError> {
    let client = cli.client()?;
    let (agent_id, hostname) = match &args.host {
        Some(h) if h.starts_with("agt-") => (h.clone(), String::new()),
        Some(h) => (String::new(), h.clone()),
        None => (String::new(), String::new()),
    };
    let since_ms = args.since.map_or(0, |d| now_ms() - d.as_millis() as i64);
    let req = pb::ListEventsRequest {
        kinds: args.kind.clone(),
        agent_id,
        hostname,
        since_ms,
        after: String::new(),
        limit: args.limit,
    };
    if matches!(args.output, Output::Table) {
        println!("{:<24} {:<18} {:<26} {:<10} SUMMARY", "TIME", "HOST", "KIND", "ENFORCER");
    }
    if args.follow {
        let mut stream = client.follow_events(req).await?;
        let ended =
            |s: tonic::Status| CtlError::Io(format!("following events ended: {}", s.message()));
        while let Some(e) = stream.message().await.map_err(ended)? {
            print_event(&e, args.output);
        }
        return Ok(());
    }
    let reply = client.list_events(req).await?;
    for e in &reply.events {
        print_event(e, args.output);
    }
    if !reply.next.is_empty() {
        eprintln!(
            "(showing the first {}; narrow with --since, --kind or --host)",
            reply.events.len()
        );
    }
    Ok(())
}

fn state_name(state: i32) -> &'static str {
    match pb::EnforcerState::try_from(state) {
        Ok(pb::EnforcerState::Compliant) => "compliant",
        Ok(pb::EnforcerState::DriftedRepaired) => "repaired",
        Ok(pb::EnforcerState::Failed) => "FAILED",
        Ok(pb::EnforcerState::AuditNoncompliant) => "audit-differs",
        _ => "-",
    }
}

fn ago(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let secs = ((now_ms() - ms).max(0) / 1000) as u64;
    if secs < 2 {
        "now".into()
    } else {
        format!("{} ago", humantime::format_duration(Duration::from_secs(secs)))
    }
}

fn online(a: &pb::Agent) -> String {
    if a.revoked {
        "revoked".into()
    } else if a.online {
        format!("online@{}", a.node)
    } else {
        "OFFLINE".into()
    }
}

/// "all 5 compliant", or the enforcers that are not, e.g. "firewall:repaired users:FAILED".
fn enforcers_text(a: &pb::Agent) -> String {
    summarize_enforcers(a, |e| format!("{}:{}", e.enforcer, state_name(e.state)), " ")
}

/// "-" when no enforcer is managed, "all N compliant", or the enforcers that are not, each
/// as `item` writes it, joined by `separator` (the CLI's table and the web console).
pub(crate) fn summarize_enforcers(
    a: &pb::Agent,
    item: impl Fn(&pb::EnforcerStatus) -> String,
    separator: &str,
) -> String {
    let managed: Vec<&pb::EnforcerStatus> =
        a.enforcers.iter().filter(|e| e.state != pb::EnforcerState::NotManaged as i32).collect();
    if managed.is_empty() {
        return "-".into();
    }
    let off: Vec<String> = managed
        .iter()
        .filter(|e| e.state != pb::EnforcerState::Compliant as i32)
        .map(|e| item(e))
        .collect();
    if off.is_empty() { format!("all {} compliant", managed.len()) } else { off.join(separator) }
}

fn agent_json(a: &pb::Agent) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "hostname": a.hostname,
        "addresses": a.addresses,
        "labels": a.labels,
        "online": a.online,
        "node": a.node,
        "last_seen_ms": a.last_seen_ms,
        "applied_revision": a.applied_revision,
        "desired_revision": a.desired_revision,
        "revoked": a.revoked,
        "revoked_reason": a.revoked_reason,
        "agent_version": a.agent_version,
        "enforcers": a.enforcers.iter().map(|e| serde_json::json!({
            "enforcer": e.enforcer,
            "state": state_name(e.state),
            "revision": e.revision,
            "reason": e.reason,
            "details": e.details,
        })).collect::<Vec<_>>(),
    })
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub async fn agent(cli: &Cli, cmd: &AgentCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    match cmd {
        AgentCmd::List { selector, status, json } => {
            let req = pb::ListAgentsRequest { selector: selector.clone(), status: status.clone() };
            let reply = client.list_agents_where(req).await?;
            if *json {
                print_json(&serde_json::json!({
                    "revision": reply.revision,
                    "agents": reply.agents.iter().map(agent_json).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!(
                "{:<21} {:<18} {:<16} {:<10} {:<9} {:<44} LAST SEEN",
                "ID", "HOSTNAME", "ADDRESS", "ONLINE", "REVISION", "ENFORCERS"
            );
            for a in &reply.agents {
                let revision = if a.applied_revision == a.desired_revision {
                    a.applied_revision.to_string()
                } else {
                    format!("{}/{}", a.applied_revision, a.desired_revision)
                };
                println!(
                    "{:<21} {:<18} {:<16} {:<10} {:<9} {:<44} {}",
                    a.id,
                    a.hostname,
                    a.addresses.first().map_or("-", String::as_str),
                    online(a),
                    revision,
                    enforcers_text(a),
                    ago(a.last_seen_ms),
                );
            }
            eprintln!(
                "{} agents at revision {} (REVISION: applied, or applied/desired while behind; `agents show ID` for every enforcer)",
                reply.agents.len(),
                reply.revision
            );
        }
        AgentCmd::Show { id, events, json } => {
            let reply = client.show_agent(id, *events).await?;
            let a = reply.agent.unwrap_or_default();
            if *json {
                let mut v = agent_json(&a);
                v["events"] = reply
                    .events
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "id": e.id, "kind": e.kind, "enforcer": e.enforcer,
                            "at_ms": e.at_ms, "revision": e.revision, "summary": e.summary,
                            "before": e.before, "after": e.after, "fields": e.fields,
                        })
                    })
                    .collect();
                print_json(&v);
                return Ok(());
            }
            println!("agent      {}", a.id);
            println!("hostname   {} ({})", a.hostname, if a.os.is_empty() { "-" } else { &a.os });
            println!("addresses  {}", a.addresses.join(", "));
            println!("labels     {}", labels_text(&a.labels));
            println!("state      {}, last seen {}", online(&a), ago(a.last_seen_ms));
            println!(
                "revision   applied {} / desired {}{}",
                a.applied_revision,
                a.desired_revision,
                if a.agent_version.is_empty() {
                    String::new()
                } else {
                    format!(" (agent {})", a.agent_version)
                }
            );
            println!("cert       expires {}", when(a.cert_not_after));
            if a.revoked {
                println!("revoked    {}", a.revoked_reason);
            }
            println!("enforcers");
            for e in &a.enforcers {
                let reason =
                    if e.reason.is_empty() { String::new() } else { format!(": {}", e.reason) };
                println!(
                    "  {:<10} {:<13} r{}{}",
                    e.enforcer,
                    state_name(e.state),
                    e.revision,
                    reason
                );
            }
            println!("recent events");
            for e in &reply.events {
                println!("  {:<12} {:<26} {:<10} {}", ago(e.at_ms), e.kind, e.enforcer, e.summary);
                if !e.before.is_empty() || !e.after.is_empty() {
                    println!("  {:<12} before: {}; after: {}", "", e.before, e.after);
                }
            }
            if reply.events.is_empty() {
                println!("  (none)");
            }
        }
        AgentCmd::Revoke { id, reason } => {
            client.revoke_agent(id, reason).await?;
            println!("agent {id} revoked; its certificates are refused from now on");
        }
        AgentCmd::PermitReenroll { id } => {
            client.permit_reenroll(id).await?;
            println!("agent {id} may enroll once more (with a valid token)");
        }
        AgentCmd::Unlock { id, user } => {
            client.unlock_account(id, user).await?;
            println!(
                "account {user} released on agent {id}; the agent unlocks it when it next \
                 receives its desired state (watch for user-unlocked: bulwarkctl events --kind user-unlocked)"
            );
        }
    }
    Ok(())
}
