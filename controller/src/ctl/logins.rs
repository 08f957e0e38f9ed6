//! `bulwarkctl logins report`: the login audit trail summed up per host and per user —
//! attempts, failures, successes and the sources they came from — from the `login` events
//! the agents reported (paged through `ListEvents`), summed by
//! [`crate::report::logins::summarize`], which the compliance report uses too.

use std::time::Duration;

use clap::Subcommand;

use super::fleet::Output;
use super::{Cli, CtlError};
use crate::fleet::now_ms;
use crate::report::logins::summarize;

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
        /// `table`, or `json`: one JSON object per host and user (host, user, attempts,
        /// failures, successes, sources, brute_force).
        #[arg(long, short, default_value = "table")]
        output: Output,
    },
}

pub async fn run(cli: &Cli, cmd: &LoginsCmd) -> Result<(), CtlError> {
    let LoginsCmd::Report { since, host, output } = cmd;
    let client = cli.client()?;
    let (agent_id, hostname) = match host {
        Some(h) if h.starts_with("agt-") => (h.clone(), String::new()),
        Some(h) => (String::new(), h.clone()),
        None => (String::new(), String::new()),
    };
    let events = super::report::all_events(
        &client,
        crate::report::LOGIN_EVENTS,
        agent_id,
        hostname,
        now_ms() - since.as_millis() as i64,
    )
    .await?;
    let rows = summarize(&events);
    match output {
        Output::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            }
        }
        Output::Table => {
            println!(
                "{:<18} {:<16} {:>8} {:>8} {:>9} {:>6}  SOURCES",
                "HOST", "USER", "ATTEMPTS", "FAILED", "SUCCEEDED", "BRUTE"
            );
            for r in &rows {
                let (host, user) = (&r.host, &r.user);
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
