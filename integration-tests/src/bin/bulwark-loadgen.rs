//! `bulwark-loadgen`: thousands of simulated agents in one process against a real 3-node
//! controller cluster on 127.0.0.1 it starts itself; prints a table per scenario.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bulwark_integration_tests::loadgen::{self, Config, Scenario};
use clap::Parser;

/// Fleet-scale benchmarks: N agents, each with its own key, certificate (from the real
/// Enroll), mTLS connection and desired-state stream, reporting like `bulwark-agent`.
#[derive(Debug, Parser)]
#[command(name = "bulwark-loadgen", version)]
struct Args {
    /// Fleet sizes, ascending; the rollout is measured at each.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    agents: Vec<usize>,
    /// Scenarios to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "rollout,membership,reconnect,events")]
    scenarios: Vec<Scenario>,
    /// Enroll calls in flight at once.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// Events per report in the events scenario (a real agent sends up to 500).
    #[arg(long, default_value_t = 100)]
    event_batch: usize,
    /// Agents sending events in the events scenario, each one report after another.
    #[arg(long, default_value_t = 1000)]
    event_agents: usize,
    /// How long the events scenario sends.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    event_duration: Duration,
    /// Give up on a step (all agents received, all streaming...) after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    step_timeout: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULWARK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let config = Config {
        agents: args.agents,
        scenarios: args.scenarios,
        enroll_concurrency: args.enroll_concurrency,
        event_batch: args.event_batch,
        event_agents: args.event_agents,
        event_duration: args.event_duration,
        step_timeout: args.step_timeout,
        verbose: true,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // On Ctrl-C or SIGTERM the run future is dropped, and with it the cluster (its
    // processes are killed and its files removed).
    let results = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = loadgen::run(&config) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
        }
    })?;
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
