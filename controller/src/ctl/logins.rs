//! `bulwarkctl logins report`: the login audit trail summed up per host and per user —
//! attempts, failures, successes and the sources they came from — from the `login` events
//! the agents reported (paged through `ListEvents`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bulwark_proto::v1 as pb;
use clap::Subcommand;

use super::fleet::Output;
use super::{Cli, CtlError};
use crate::fleet::now_ms;

#[derive(Debug, Subcommand)]
pub enum LoginsCmd {
    /// Per host and user: login attempts, failures, successes and their sources.
    Report {
        /// Only attempts newer than this (e.g. 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Only this host (hostname, or an agent id such as agt-5f0c...).
        #[arg(long)]
        host: Option<String>,
        /// `table`, or `json`: one JSON object per host and user.
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
}

/// One line of the report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Row {
    pub attempts: u64,
    pub failures: u64,
    pub successes: u64,
    pub sources: BTreeSet<String>,
    pub brute_force: u64,
}

/// (host, user) → counts, from stored `login` and `brute-force` events.
pub fn summarize(events: &[pb::StoredEvent]) -> BTreeMap<(String, String), Row> {
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for e in events {
        let Some(ev) = &e.event else { continue };
        let host = if e.hostname.is_empty() { e.agent_id.clone() } else { e.hostname.clone() };
        let field = |k: &str| ev.fields.get(k).cloned().unwrap_or_default();
        let user = match field("user") {
            u if u.is_empty() => "?".to_owned(),
            u => u,
        };
        let row = rows.entry((host, user)).or_default();
        match ev.kind.as_str() {
            "login" => {
                row.attempts += 1;
                if field("success") == "true" {
                    row.successes += 1;
                } else {
                    row.failures += 1;
                }
                let source = field("source");
                if !source.is_empty() {
                    row.sources.insert(source);
                }
            }
            "brute-force" => row.brute_force += 1,
            _ => {}
        }
    }
    rows
}

pub async fn run(cli: &Cli, cmd: &LoginsCmd) -> Result<(), CtlError> {
    let LoginsCmd::Report { since, host, output } = cmd;
    let client = cli.client()?;
    let (agent_id, hostname) = match host {
        Some(h) if h.starts_with("agt-") => (h.clone(), String::new()),
        Some(h) => (String::new(), h.clone()),
        None => (String::new(), String::new()),
    };
    let mut req = pb::ListEventsRequest {
        kinds: vec!["login".into(), "brute-force".into()],
        agent_id,
        hostname,
        since_ms: now_ms() - since.as_millis() as i64,
        after: String::new(),
        limit: 10_000,
    };
    let mut events = Vec::new();
    loop {
        let reply = client.list_events(req.clone()).await?;
        events.extend(reply.events);
        if reply.next.is_empty() {
            break;
        }
        req.after = reply.next;
    }
    let rows = summarize(&events);
    match output {
        Output::Json => {
            for ((host, user), r) in &rows {
                let line = serde_json::json!({
                    "host": host, "user": user, "attempts": r.attempts, "failures": r.failures,
                    "successes": r.successes, "sources": r.sources, "brute_force": r.brute_force,
                });
                println!("{line}");
            }
        }
        Output::Table => {
            println!(
                "{:<18} {:<16} {:>8} {:>8} {:>9} {:>6}  SOURCES",
                "HOST", "USER", "ATTEMPTS", "FAILED", "SUCCEEDED", "BRUTE"
            );
            for ((host, user), r) in &rows {
                let sources: Vec<&str> = r.sources.iter().map(String::as_str).collect();
                println!(
                    "{host:<18} {user:<16} {:>8} {:>8} {:>9} {:>6}  {}",
                    r.attempts,
                    r.failures,
                    r.successes,
                    r.brute_force,
                    sources.join(", ")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(host: &str, user: &str, success: bool, source: &str) -> pb::StoredEvent {
        pb::StoredEvent {
            hostname: host.into(),
            event: Some(pb::AgentEvent {
                kind: "login".into(),
                fields: [
                    ("user".to_owned(), user.to_owned()),
                    ("success".to_owned(), success.to_string()),
                    ("source".to_owned(), source.to_owned()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sums_per_host_and_user() {
        let events = vec![
            login("ws1", "rad", false, "198.18.0.9"),
            login("ws1", "rad", true, "198.18.0.10"),
            login("ws1", "", false, "198.18.0.7"),
            login("ct1", "rad", true, "198.18.0.9"),
        ];
        let rows = summarize(&events);
        let ws1 = &rows[&("ws1".to_owned(), "rad".to_owned())];
        assert_eq!((ws1.attempts, ws1.failures, ws1.successes), (2, 1, 1));
        assert_eq!(ws1.sources.len(), 2);
        assert_eq!(rows[&("ws1".to_owned(), "?".to_owned())].failures, 1);
        assert_eq!(rows.len(), 3);
    }
}
