//! `bulwark-controller`: one node of the Raft-replicated controller cluster, or
//! `bulwark-controller restore`: seed a new node's data dir from a snapshot file.

use std::path::PathBuf;
use std::process::ExitCode;

use bulwark_controller::backup::{RestoreOptions, restore};
use bulwark_controller::config::ControllerArgs;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Seeds a new, empty data dir from a `bulwarkctl snapshot save` file (checked: header,
/// length, SHA-256). The node then starts as the only voter of a cluster holding every
/// record, its history and the audit log; add the other nodes with `bulwarkctl cluster
/// add-learner` and `promote`: they receive the restored state by snapshot.
#[derive(Debug, Parser)]
#[command(name = "bulwark-controller restore", version)]
struct RestoreArgs {
    /// The snapshot file.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The new node's data dir (must be empty or absent).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// The address the node will be a member at (as its `--advertise`), e.g. 10.1.0.11:7000.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: String,
    /// The new cluster's name (as its `--cluster-name`).
    #[arg(long, default_value = "bulwark")]
    cluster_name: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("restore") {
        let args = RestoreArgs::parse_from(std::env::args().skip(1));
        bulwark_controller::telemetry::init("info,openraft=warn");
        let opts = RestoreOptions {
            from: args.from,
            data_dir: args.data_dir,
            node_id: args.node_id,
            advertise: args.advertise,
            cluster_name: args.cluster_name,
        };
        return match restore(&opts).await {
            Ok(header) => {
                println!(
                    "restored revision {} of cluster {} (SHA-256 {}) into {} as node {} of cluster {}",
                    header.revision,
                    header.cluster_name,
                    header.sha256,
                    opts.data_dir.display(),
                    opts.node_id,
                    opts.cluster_name
                );
                println!(
                    "start it with --node-id {} --advertise {} --cluster-name {} --data-dir {}, then add the other nodes",
                    opts.node_id,
                    opts.advertise,
                    opts.cluster_name,
                    opts.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bulwark-controller restore: {e}");
                ExitCode::from(e.exit_code() as u8)
            }
        };
    }
    let args = ControllerArgs::parse();
    bulwark_controller::telemetry::init("info,openraft=warn");
    let result = async {
        let resolved = args.resolve()?;
        let listener = bulwark_controller::bind(&resolved.listen).await?;
        let http = match &resolved.http_listen {
            Some(addr) => Some(bulwark_controller::bind(addr).await?),
            None => None,
        };
        tracing::info!(
            node_id = resolved.node.node_id,
            listen = %resolved.listen,
            data_dir = %resolved.node.data_dir.display(),
            http = resolved.http_listen.as_deref().unwrap_or("off"),
            "starting controller"
        );
        bulwark_controller::run(resolved.node, listener, http, shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!("controller stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulwark-controller: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}
