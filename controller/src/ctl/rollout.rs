//! `bulwarkctl rollout ...`.

use std::time::Duration;

use bulwark_proto::v1 as pb;
use clap::{ArgGroup, Subcommand};

use super::{Cli, CtlError};

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// Roll out a staged revision (from `policy apply --staged` or `policy rollback
    /// --staged`): the canary agents get it first; every other agent keeps the released
    /// revision. When every canary reports it applied with every managed enforcer compliant,
    /// the revision is released to all agents. When a canary reports a failed enforcer or a
    /// commit-confirmed rollback, or the canaries do not confirm within the wait, the
    /// rollout halts: canaries keep the new revision (to be inspected), the others the
    /// released one, until `rollout abort`.
    ///
    /// Example: bulwarkctl rollout start --revision 42 --canary role=ct --wait 10m
    #[command(group(ArgGroup::new("canaries").required(true).args(["canary", "percent"])))]
    Start {
        /// The staged revision to roll out.
        #[arg(long)]
        revision: u64,
        /// Canaries: the agents whose labels match, as key=value[,key=value].
        #[arg(long, value_name = "SELECTOR")]
        canary: Option<String>,
        /// Canaries: this percentage of agents (1-100), chosen by a stable hash of the agent
        /// id; at least one agent.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        percent: Option<u32>,
        /// How long the canaries have to confirm (e.g. 90s, 10m, 1h).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Show the active rollout (or how the last one ended): phase, target and released
    /// revisions, deadline, and each canary with its applied revision and state
    /// (confirmed, pending, failed: why); why it halted.
    Status,
    /// Stop the clock: the rollout neither advances nor halts until `resume`; canaries keep
    /// the target revision.
    Pause,
    /// Continue a paused rollout, with the wait that was left.
    Resume,
    /// End the rollout without releasing: canaries go back to the released revision and
    /// every other agent stays on it.
    Abort,
}

fn print(s: &pb::RolloutStatus) {
    if s.phase == "none" {
        println!("no rollout; released revision {}", s.released_revision);
    } else {
        println!("rollout of revision {}: {}", s.target_revision, s.phase);
        if !s.selection.is_empty() {
            println!("canaries: {} ({} agents)", s.selection, s.canaries.len());
        }
        if s.started_revision > 0 {
            println!("canaries switched at revision {}", s.started_revision);
        }
        println!("released revision: {}", s.released_revision);
        if s.deadline_ms > 0 {
            let left = (s.deadline_ms - crate::fleet::now_ms()).max(0) as u64;
            let left = humantime::format_duration(Duration::from_secs(left / 1000));
            println!("canaries must confirm within {left} (wait {}s)", s.wait_seconds);
        }
        if !s.reason.is_empty() {
            println!("reason: {}", s.reason);
        }
        for c in &s.canaries {
            if c.state.is_empty() {
                println!("  {}", c.agent_id);
            } else {
                println!("  {:<38} applied {:>6}  {}", c.agent_id, c.applied_revision, c.state);
            }
        }
    }
    if s.stored_revision > s.released_revision {
        println!("stored revision {} (staged, not released)", s.stored_revision);
    }
}

pub async fn run(cli: &Cli, cmd: &RolloutCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    let status = match cmd {
        RolloutCmd::Start { revision, canary, percent, wait } => {
            client
                .rollout_start(
                    *revision,
                    canary.as_deref().unwrap_or(""),
                    percent.unwrap_or(0),
                    *wait,
                )
                .await?
        }
        RolloutCmd::Status => client.rollout("status").await?,
        RolloutCmd::Pause => client.rollout("pause").await?,
        RolloutCmd::Resume => client.rollout("resume").await?,
        RolloutCmd::Abort => client.rollout("abort").await?,
    };
    print(&status);
    Ok(())
}
