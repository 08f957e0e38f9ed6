//! `bulwark-controller`: one node of the Raft-replicated controller cluster.

use std::process::ExitCode;

use bulwark_controller::config::ControllerArgs;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ControllerArgs::parse();
    bulwark_controller::telemetry::init("info,openraft=warn");
    let result = async {
        let resolved = args.resolve()?;
        let listener = bulwark_controller::bind(&resolved.listen).await?;
        tracing::info!(
            node_id = resolved.node.node_id,
            listen = %resolved.listen,
            data_dir = %resolved.node.data_dir.display(),
            "starting controller"
        );
        bulwark_controller::run(resolved.node, listener, shutdown_signal()).await
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
