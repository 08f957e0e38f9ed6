//! `bulwarkctl`: the admin command line. `main` parses [`Cli`] and calls [`run`].

pub mod bench;
mod console;
pub(crate) mod fleet;
mod logins;
mod policy;
pub mod report;
mod rollout;
mod security;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use bulwark_proto::v1 as pb;
use clap::{Parser, Subcommand};

use crate::client::{Client, ClientError, ReadMode};
use crate::tls::{TlsFiles, TlsMaterial};

/// Administers a Bulwark controller cluster.
///
/// Every call is mutual TLS: give the cluster CA and an admin certificate and key with the
/// flags or the BULWARK_TLS_* environment variables. Calls go to the first reachable
/// endpoint; calls only the leader can serve follow it there.
#[derive(Debug, Parser)]
#[command(name = "bulwarkctl", version, propagate_version = true)]
pub struct Cli {
    /// Controller addresses, comma-separated (host:port).
    #[arg(
        long,
        short = 'e',
        env = "BULWARK_ENDPOINTS",
        value_delimiter = ',',
        global = true,
        default_value = "127.0.0.1:7400"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long = "tls-ca", env = "BULWARK_TLS_CA", value_name = "FILE", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// The admin certificate (PEM).
    #[arg(long = "tls-cert", env = "BULWARK_TLS_CERT", value_name = "FILE", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// The admin private key (PEM).
    #[arg(long = "tls-key", env = "BULWARK_TLS_KEY", value_name = "FILE", global = true)]
    pub tls_key: Option<PathBuf>,
    /// How long to keep retrying while the cluster elects a leader or a node is down.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Raw records of the replicated store (for inspection and tooling).
    #[command(subcommand)]
    Record(RecordCmd),
    /// Snapshots of the controller state.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Measure the cluster and the disk under it.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// The cluster CA and certificates (offline: works on files, not on the cluster).
    #[command(subcommand)]
    Pki(security::PkiCmd),
    /// Bootstrap tokens for enrolling agents.
    #[command(subcommand)]
    Token(security::TokenCmd),
    /// The fleet: enrolled agents, whether they are online and compliant, their recent
    /// drift and events; revoke an agent or permit it to enroll again.
    #[command(subcommand, visible_alias = "agents")]
    Agent(fleet::AgentCmd),
    /// Admin identities' roles.
    #[command(subcommand)]
    Admin(security::AdminCmd),
    /// Policy documents: validate (offline), apply, list, get, delete.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Staged rollouts: release a staged policy revision to canary agents first, and to
    /// every agent once the canaries confirm it.
    #[command(subcommand)]
    Rollout(rollout::RolloutCmd),
    /// The admin audit log: every mutating call, who made it, from where, and the result.
    Audit {
        /// Only entries newer than this (e.g. 1h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only calls by this identity (e.g. alice or admin/alice).
        #[arg(long, default_value = "")]
        who: String,
        /// Only methods containing this (e.g. CreateToken).
        #[arg(long, default_value = "")]
        method: String,
    },
    /// Events the agents reported (drift repaired or found, commit-confirmed rollbacks,
    /// apply failures, new users and privileged-group changes, logins, brute force),
    /// oldest first; `--follow` keeps printing new ones.
    Events(fleet::EventsArgs),
    /// The login audit: attempts, failures, successes and sources per host and user.
    #[command(subcommand)]
    Logins(logins::LoginsCmd),
    /// Reports for auditors: `report compliance` (HTML, JSON or CSV).
    #[command(subcommand)]
    Report(report::ReportCmd),
    /// The web console: fleet overview, hosts, rollouts (pause, resume, abort, start),
    /// alerts, the login audit, policy history and cluster health in a browser, updated
    /// live.
    ///
    /// Served on 127.0.0.1 only (like `kubectl proxy`): it reads and acts through the
    /// controller with this command's admin certificate, so the controller enforces your
    /// role (viewers see everything and change nothing). Every asset is built in; no
    /// internet access is needed. Open the printed address in a browser on this machine.
    ///
    /// Example: bulwarkctl console --listen 127.0.0.1:8080
    Console(console::ConsoleArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Initialize a new cluster on the first endpoint.
    ///
    /// Without --member the cluster starts with that node as its only voter; add the
    /// others with add-learner and promote. With --member, every listed node becomes a
    /// voter at once (each must be running and reachable).
    Init {
        /// A voter as ID=HOST:PORT; repeat for each (include the node itself).
        #[arg(long = "member", value_name = "ID=HOST:PORT")]
        members: Vec<String>,
    },
    /// Add a running, empty node as a non-voting learner; returns once it caught up.
    AddLearner {
        /// The new node's --node-id.
        id: u64,
        /// The new node's advertised address.
        addr: String,
    },
    /// Make a caught-up learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner from the cluster.
    Remove { id: u64 },
    /// Every member with its role, term, log and applied index, and reachability.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordCmd {
    /// Write a record.
    Put {
        kind: String,
        key: String,
        /// The value (UTF-8); use --file for binary content.
        #[arg(required_unless_present = "file")]
        value: Option<String>,
        /// Read the value from a file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Only write if the record is at this revision (0: only if it does not exist).
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Read one record (linearizable unless --stale).
    Get {
        kind: String,
        key: String,
        /// Serve from the contacted node's applied state, which may be behind.
        #[arg(long)]
        stale: bool,
    },
    /// List records of a kind (all kinds when omitted).
    List {
        kind: Option<String>,
        #[arg(long)]
        stale: bool,
    },
    /// Delete a record.
    Delete {
        kind: String,
        key: String,
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Print changes after a revision, then live changes, until Ctrl-C.
    Watch {
        kind: Option<String>,
        /// Start after this revision (0: the oldest retained).
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Build a snapshot on the contacted node and save it to FILE.
    Save { file: PathBuf },
}

/// Errors `bulwarkctl` prints before exiting with status 1.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
}

impl Cli {
    fn tls(&self) -> Result<TlsMaterial, CtlError> {
        let need = |v: &Option<PathBuf>, flag: &str, env: &str| {
            v.clone().ok_or_else(|| CtlError::Usage(format!("--{flag} (or {env}) is required")))
        };
        let files = TlsFiles {
            ca: need(&self.tls_ca, "tls-ca", "BULWARK_TLS_CA")?,
            cert: need(&self.tls_cert, "tls-cert", "BULWARK_TLS_CERT")?,
            key: need(&self.tls_key, "tls-key", "BULWARK_TLS_KEY")?,
        };
        Ok(TlsMaterial::load(&files)?)
    }

    pub fn client(&self) -> Result<Client, CtlError> {
        Ok(Client::new(&self.tls()?, &self.endpoints, self.timeout)?)
    }
}

fn parse_member(s: &str) -> Result<pb::Member, CtlError> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| CtlError::Usage(format!("--member {s:?}: expected ID=HOST:PORT")))?;
    let id = id
        .parse()
        .map_err(|_| CtlError::Usage(format!("--member {s:?}: {id:?} is not a node id")))?;
    Ok(pb::Member { id, addr: addr.to_owned(), voter: true })
}

/// A node's Raft role as a word (the CLI's tables and the console).
pub(crate) fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Learner) => "learner",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::Uninitialized) => "uninitialized",
        _ => "unknown",
    }
}

fn print_members(reply: &pb::MembershipReply) {
    for m in &reply.members {
        println!("  node {:<3} {:<22} {}", m.id, m.addr, if m.voter { "voter" } else { "learner" });
    }
}

/// Runs one `bulwarkctl` command, printing to stdout.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    match &cli.command {
        Command::Cluster(cmd) => cluster(&cli, cmd).await,
        Command::Record(cmd) => record(&cli, cmd).await,
        Command::Snapshot(SnapshotCmd::Save { file }) => snapshot_save(&cli, file).await,
        Command::Bench(cmd) => bench::run(&cli, cmd).await,
        Command::Pki(cmd) => security::pki(cmd),
        Command::Policy(cmd) => policy::run(&cli, cmd).await,
        Command::Rollout(cmd) => rollout::run(&cli, cmd).await,
        Command::Token(cmd) => security::token(&cli, cmd).await,
        Command::Agent(cmd) => fleet::agent(&cli, cmd).await,
        Command::Admin(cmd) => security::admin(&cli, cmd).await,
        Command::Audit { since, who, method } => security::audit(&cli, *since, who, method).await,
        Command::Events(args) => fleet::events(&cli, args).await,
        Command::Logins(cmd) => logins::run(&cli, cmd).await,
        Command::Report(cmd) => report::run(&cli, cmd).await,
        Command::Console(args) => console::run(&cli, args).await,
    }
}

async fn cluster(cli: &Cli, cmd: &ClusterCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    match cmd {
        ClusterCmd::Init { members } => {
            let members = members.iter().map(|m| parse_member(m)).collect::<Result<Vec<_>, _>>()?;
            let reply = client.init(members).await?;
            println!("cluster initialized; members:");
            print_members(&reply);
        }
        ClusterCmd::AddLearner { id, addr } => {
            eprintln!("adding node {id} at {addr} as a learner and waiting for it to catch up...");
            let reply = client.add_learner(*id, addr).await?;
            println!("node {id} is a learner; members:");
            print_members(&reply);
        }
        ClusterCmd::Promote { id } => {
            let reply = client.promote(*id).await?;
            println!("node {id} is a voter; members:");
            print_members(&reply);
        }
        ClusterCmd::Remove { id } => {
            let reply = client.remove(*id).await?;
            println!("node {id} removed; members:");
            print_members(&reply);
        }
        ClusterCmd::Status { json } => print_status(&client, *json).await?,
    }
    Ok(())
}

/// Prints every member of the cluster `client` reaches: a table, or JSON.
pub async fn print_status(client: &Client, json: bool) -> Result<(), CtlError> {
    let (first, members) = client.member_statuses(Duration::from_secs(2)).await?;
    if json {
        let rows: Vec<serde_json::Value> = members
            .iter()
            .map(|(m, s)| match s {
                Ok(s) => serde_json::json!({
                    "id": m.id, "addr": m.addr, "voter": m.voter, "reachable": true,
                    "role": role_name(s.role), "term": s.term, "last_log_index": s.last_log_index,
                    "applied_index": s.applied_index, "revision": s.revision,
                    "leader_id": s.leader_id, "snapshot_index": s.snapshot_index,
                }),
                Err(e) => serde_json::json!({
                    "id": m.id, "addr": m.addr, "voter": m.voter, "reachable": false,
                    "error": e.message,
                }),
            })
            .collect();
        let doc = serde_json::json!({ "cluster": first.cluster_name, "members": rows });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    if first.members.is_empty() {
        println!(
            "node {} at {} is not part of a cluster yet (run `bulwarkctl cluster init`)",
            first.node_id, first.addr
        );
        return Ok(());
    }
    println!("cluster {:?}", first.cluster_name);
    println!(
        "{:<4} {:<22} {:<13} {:>6} {:>10} {:>10} {:>10}  REACHABLE",
        "ID", "ADDRESS", "ROLE", "TERM", "LAST LOG", "APPLIED", "REVISION"
    );
    for (m, s) in &members {
        match s {
            Ok(s) => println!(
                "{:<4} {:<22} {:<13} {:>6} {:>10} {:>10} {:>10}  yes",
                m.id,
                m.addr,
                role_name(s.role),
                s.term,
                s.last_log_index,
                s.applied_index,
                s.revision
            ),
            Err(e) => println!(
                "{:<4} {:<22} {:<13} {:>6} {:>10} {:>10} {:>10}  no ({})",
                m.id,
                m.addr,
                if m.voter { "voter" } else { "learner" },
                "-",
                "-",
                "-",
                "-",
                e.message
            ),
        }
    }
    Ok(())
}

async fn record(cli: &Cli, cmd: &RecordCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    let mode = |stale: bool| if stale { ReadMode::Stale } else { ReadMode::Linearizable };
    match cmd {
        RecordCmd::Put { kind, key, value, file, expect_revision } => {
            let value = match (value, file) {
                (_, Some(f)) => std::fs::read(f).map_err(|e| {
                    CtlError::Io(format!("cannot read --file {}: {e}", f.display()))
                })?,
                (Some(v), None) => v.clone().into_bytes(),
                (None, None) => Vec::new(),
            };
            let reply = client.put(kind, key, value, *expect_revision).await?;
            println!("revision {}", reply.revision);
        }
        RecordCmd::Get { kind, key, stale } => {
            let reply = client.get(kind, key, mode(*stale)).await?;
            match reply.record {
                Some(r) => println!("{}", String::from_utf8_lossy(&r.value)),
                None => {
                    return Err(CtlError::Usage(format!(
                        "{kind}/{key} not found (at revision {})",
                        reply.revision
                    )));
                }
            }
        }
        RecordCmd::List { kind, stale } => {
            let reply = client.list(kind.as_deref().unwrap_or(""), mode(*stale)).await?;
            for r in &reply.records {
                println!(
                    "{}/{}\trevision {}\t{} bytes",
                    r.kind,
                    r.key,
                    r.mod_revision,
                    r.value.len()
                );
            }
            eprintln!("{} records at revision {}", reply.records.len(), reply.revision);
        }
        RecordCmd::Delete { kind, key, expect_revision } => {
            let reply = client.delete(kind, key, *expect_revision).await?;
            println!("revision {}", reply.revision);
        }
        RecordCmd::Watch { kind, after } => {
            let mut stream = client.watch(kind.as_deref().unwrap_or(""), *after).await?;
            let endpoint = client.endpoints()[0].clone();
            let status = |s: tonic::Status| {
                CtlError::Io(format!("watch on {endpoint} ended: {}", s.message()))
            };
            while let Some(ev) = stream.message().await.map_err(status)? {
                let op = if ev.op == pb::ChangeOp::Delete as i32 { "delete" } else { "put" };
                let (k, key) = ev.record.map(|r| (r.kind, r.key)).unwrap_or_default();
                println!("{}\t{op}\t{k}/{key}", ev.revision);
            }
        }
    }
    Ok(())
}

async fn snapshot_save(cli: &Cli, file: &PathBuf) -> Result<(), CtlError> {
    let client = cli.client()?;
    let mut data = Vec::new();
    let info = client.snapshot_save(&mut data).await?;
    let sha256 = crate::backup::sha256_hex(&data);
    if sha256 != info.sha256 || data.len() as u64 != info.size {
        return Err(CtlError::Io(format!(
            "the snapshot arrived damaged ({} of {} bytes, SHA-256 {sha256}, expected {}); nothing was written",
            data.len(),
            info.size,
            info.sha256
        )));
    }
    let header = crate::backup::SnapshotHeader {
        cluster_name: info.cluster_name.clone(),
        revision: info.revision,
        last_log_index: info.last_log_index,
        last_log_term: info.last_log_term,
        size: info.size,
        sha256,
    };
    let tmp = file.with_extension("partial");
    let io = |e: std::io::Error| CtlError::Io(format!("cannot write {}: {e}", tmp.display()));
    let mut out = std::fs::File::create(&tmp).map_err(io)?;
    out.write_all(header.line().as_bytes()).map_err(io)?;
    out.write_all(&data).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, file).map_err(io)?;
    println!(
        "saved snapshot of cluster {} to {} ({} bytes, SHA-256 {}, revision {}, log index {}, term {})",
        header.cluster_name,
        file.display(),
        header.size,
        header.sha256,
        header.revision,
        header.last_log_index,
        header.last_log_term
    );
    Ok(())
}
