//! `bulwark-agent`: enroll a host, run the agent daemon, show what it enforces.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bulwark_agent::enforce::wireless;
use bulwark_agent::enroll::{EnrollOptions, Trust, enroll};
use bulwark_agent::host::Host;
use bulwark_agent::identity::StateDir;
use bulwark_agent::monitor::logins::GivenSources;
use bulwark_agent::monitor::users::lock::LockRecord;
use bulwark_agent::run::{RunOptions, run, status_text};
use clap::{Parser, Subcommand};

/// The Bulwark host agent: keeps this workstation or modality host in the security state
/// its policies declare (firewall segmentation and wireless access today), repairs drift, and reports to the
/// controller cluster over mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "bulwark-agent", version)]
struct Cli {
    /// Where the agent keeps its key, certificates and cached state.
    #[arg(long, env = "BULWARK_STATE_DIR", default_value = "/var/lib/bulwark", global = true)]
    state_dir: PathBuf,
    /// Every host path the agent reads or writes hangs off this (tests, containers).
    #[arg(long, env = "BULWARK_ROOT", default_value = "/", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a key on this host, enroll with a bootstrap token, store the identity.
    Enroll {
        /// Controller URLs, comma-separated (https://IP:PORT); tried in order.
        #[arg(long, value_delimiter = ',', required = true)]
        controller: Vec<String>,
        /// The cluster CA certificate (PEM) to verify controllers with.
        #[arg(long, conflicts_with = "ca_fingerprint", required_unless_present = "ca_fingerprint")]
        ca: Option<PathBuf>,
        /// Instead of --ca: the SHA-256 fingerprint of the CA (from `bulwarkctl pki init`).
        #[arg(long)]
        ca_fingerprint: Option<String>,
        /// The bootstrap token (`bulwarkctl token create`).
        #[arg(long, env = "BULWARK_TOKEN")]
        token: String,
        /// Labels this host expects from the token, e.g. role=modality,site=north; the
        /// enrollment is refused if the token gives others (a wrong token is caught).
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Enroll again under this existing agent id (an operator must permit it).
        #[arg(long)]
        reenroll: Option<String>,
    },
    /// Run the agent: enforce the cached state at once, then follow the controllers.
    Run {
        /// Print the plans and change nothing on the host.
        #[arg(long)]
        dry_run: bool,
        /// The periodic full check of every enforcer.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        check_every: Duration,
        /// After a firewall change, a controller must answer within this or the previous
        /// ruleset comes back (commit-confirmed).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        confirm_within: Duration,
        /// A status report goes out at least this often.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        heartbeat: Duration,
        #[command(flatten)]
        logins: GivenSources,
        /// Serve Prometheus /metrics here (enforcer states, drift repairs, spool depth), or
        /// `off`.
        #[arg(long, env = "BULWARK_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
        metrics_listen: String,
    },
    /// Local account actions.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// What the running agent enforces, per enforcer, from its local state.
    Status,
    /// Wireless networks the allowlist quarantined (in the state dir).
    Wireless {
        #[command(subcommand)]
        command: WirelessCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WirelessCommand {
    /// `list`: the quarantined networks; `restore ID`: put one back where it came from
    /// (it is quarantined again while the policy still refuses it).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// The quarantined networks: id, SSID, security, where from, why.
    List,
    /// Put quarantined network ID back into its keyfile or wpa_supplicant file.
    Restore { id: String },
}

#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Unlock an account the user monitor locked (policy action `lock`): removes the `!`
    /// it put before the password hash in <root>/etc/shadow.
    Unlock { name: String },
    /// The accounts the user monitor locked, and when.
    Locked,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BULWARK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("BULWARK_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn labels(list: &[String]) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(format!("--labels: {l:?} is not key=value")),
        })
        .collect()
}

async fn main_result(cli: Cli) -> Result<(), String> {
    let host = Host::new(&cli.root);
    match cli.command {
        Command::Enroll { controller, ca, ca_fingerprint, token, labels: l, reenroll } => {
            let trust = match (ca, ca_fingerprint) {
                (Some(path), _) => Trust::CaFile(
                    std::fs::read(&path).map_err(|e| format!("--ca {}: {e}", path.display()))?,
                ),
                (None, Some(fp)) => Trust::Fingerprint(fp),
                (None, None) => return Err("give --ca FILE or --ca-fingerprint SHA256".into()),
            };
            let opts = EnrollOptions {
                controllers: controller,
                trust,
                token,
                labels: labels(&l)?,
                reenroll,
            };
            let state = StateDir::new(&cli.state_dir);
            let info = enroll(&host, &state, &opts).await.map_err(|e| e.to_string())?;
            let labels: Vec<String> = info.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("enrolled as {} with labels {}", info.agent_id, labels.join(","));
            println!(
                "identity stored in {}; start the agent: bulwark-agent run",
                cli.state_dir.display()
            );
            Ok(())
        }
        Command::Run {
            dry_run,
            check_every,
            confirm_within,
            heartbeat,
            metrics_listen,
            logins,
        } => {
            let opts = RunOptions {
                state_dir: cli.state_dir,
                root: cli.root,
                dry_run,
                check_every,
                confirm_within,
                heartbeat,
                metrics_listen: (metrics_listen != "off").then_some(metrics_listen),
                logins,
            };
            run(opts, shutdown_signal()).await.map_err(|e| e.to_string())
        }
        Command::Users { action } => {
            let record = LockRecord::new(&cli.state_dir);
            match action {
                UsersAction::Unlock { name } => {
                    record.unlock(&host, &name).map_err(|e| e.to_string())?;
                    println!("{name} unlocked");
                }
                UsersAction::Locked => {
                    let locks = record.load().map_err(|e| e.to_string())?;
                    for (name, at_ms) in &locks.locked {
                        let at = std::time::UNIX_EPOCH + Duration::from_millis(*at_ms as u64);
                        println!("{name}\tlocked {}", humantime::format_rfc3339_seconds(at));
                    }
                    for name in &locks.released {
                        println!("{name}\treleased by an operator (not locked again)");
                    }
                }
            }
            Ok(())
        }
        Command::Status => {
            print!("{}", status_text(&cli.state_dir).map_err(|e| e.to_string())?);
            Ok(())
        }
        Command::Wireless { command: WirelessCommand::Quarantine { command } } => match command {
            QuarantineCommand::List => {
                print!("{}", wireless::list_text(&cli.state_dir).map_err(|e| e.to_string())?);
                Ok(())
            }
            QuarantineCommand::Restore { id } => {
                let r =
                    wireless::restore(&cli.state_dir, &cli.root, &id).map_err(|e| e.to_string())?;
                println!("restored {id} into {}", r.source.display());
                Ok(())
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // One thread is plenty for an agent, and keeps its footprint small.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bulwark-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main_result(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulwark-agent: {e}");
            ExitCode::from(2)
        }
    }
}
