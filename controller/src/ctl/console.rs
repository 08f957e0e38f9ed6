//! `bulwarkctl console`: the web console on a loopback address (see `crate::console`).

use std::net::SocketAddr;
use std::time::Duration;

use super::{Cli, CtlError};
use crate::console::{self, data::Timing};

/// `bulwarkctl console`.
#[derive(Debug, clap::Args)]
pub struct ConsoleArgs {
    /// Where to serve the console: a loopback address only (127.0.0.1 or [::1]). Anything
    /// else is refused: the console acts with your certificate. From another machine,
    /// tunnel: `ssh -L 8080:127.0.0.1:8080 admin-host`.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// How often the console polls the fleet, the rollout and the cluster for changes
    /// (events arrive as they are committed).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub poll: Duration,
    /// A point of the fleet chart at least this often (and whenever the counts change).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sample_every: Duration,
    /// Points the fleet chart keeps (in memory; lost when the console stops).
    #[arg(long, default_value_t = 720)]
    pub samples: usize,
}

pub async fn run(cli: &Cli, args: &ConsoleArgs) -> Result<(), CtlError> {
    console::check_listen(args.listen).map_err(|e| CtlError::Usage(e.to_string()))?;
    let client = cli.client()?;
    let listener = console::bind(args.listen).await.map_err(|e| CtlError::Io(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| CtlError::Io(e.to_string()))?;
    eprintln!(
        "Bulwark console on http://{addr}/ for the cluster at {} (Ctrl-C stops it)",
        client.endpoints().join(",")
    );
    let timing = Timing { poll: args.poll, sample_every: args.sample_every, samples: args.samples };
    console::run(client, listener, timing, stopped()).await.map_err(|e| CtlError::Io(e.to_string()))
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
