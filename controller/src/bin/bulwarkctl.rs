//! `bulwarkctl`: administer a Bulwark controller cluster.

use std::process::ExitCode;

use bulwark_controller::ctl::Cli;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    bulwark_controller::telemetry::init("warn");
    match bulwark_controller::ctl::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwarkctl: {e}");
            ExitCode::FAILURE
        }
    }
}
