//! `bulwarkctl policy ...`.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Cli, CtlError};
use crate::policy::{self, Severity};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Check policy files offline: syntax, fields, types, ranges, references between
    /// documents and contradictory rules. Every problem is printed as FILE:LINE:COL: PATH:
    /// MESSAGE; the exit status is 1 when there is any error.
    Validate {
        /// Files, or directories of *.yaml / *.yml files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate files against the cluster's documents and store them all at once (one
    /// revision), or nothing if anything is wrong. Agents get the change at once, unless
    /// --staged.
    Apply {
        /// Files, or directories of *.yaml / *.yml files.
        #[arg(short = 'f', long = "file", required = true)]
        paths: Vec<PathBuf>,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Store without releasing: agents keep the released revision until
        /// `bulwarkctl rollout start --revision R` rolls this one out (R is printed).
        #[arg(long)]
        staged: bool,
    },
    /// Show what applying the files would change: documents, and which agents' desired
    /// state, with the firewall rules added and removed per group of agents. Stores nothing.
    Diff {
        #[arg(short = 'f', long = "file", required = true)]
        paths: Vec<PathBuf>,
    },
    /// List stored documents (optionally of one kind: Segment, Service, Policy).
    List { kind: Option<String> },
    /// Print one stored document (KEY is Kind/name, e.g. Policy/modalities).
    Get { key: String },
    /// Delete one document; refused while others still refer to it.
    Delete { key: String },
    /// Every retained change of one document (KEY is Kind/name).
    History { key: String },
    /// Make the stored documents what they were at a revision, as one new revision.
    Rollback {
        /// The revision to return to (see `policy history` or `policy list`).
        #[arg(long = "to")]
        to_revision: u64,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Store without releasing, to roll it out with `bulwarkctl rollout start`.
        #[arg(long)]
        staged: bool,
    },
}

async fn apply(cli: &Cli, paths: &[PathBuf], dry_run: bool, staged: bool) -> Result<(), CtlError> {
    let sources = policy::read_paths(paths).map_err(CtlError::Io)?;
    let reply = cli.client()?.apply_policies_with(sources, dry_run, staged).await?;
    print_reply(&reply, dry_run, staged);
    Ok(())
}

fn print_reply(reply: &bulwark_proto::v1::ApplyReply, dry_run: bool, staged: bool) {
    for w in &reply.warnings {
        eprintln!("{w}");
    }
    for c in &reply.changes {
        println!("{:<10} {}", c.change, c.key);
    }
    let verb = match (dry_run, staged) {
        (true, _) => "would change",
        (false, true) => "changes when released",
        (false, false) => "changed",
    };
    println!("{} agents' desired state {verb}", reply.agents_affected);
    for group in &reply.impacts {
        println!("  {} agents ({}):", group.agent_ids.len(), group.hostnames.join(", "));
        for p in &group.policies_changed {
            println!("    policy {p}");
        }
        for s in &group.sections_changed {
            println!("    ~ {s}");
        }
        for r in &group.rules_added {
            println!("    + {r}");
        }
        for r in &group.rules_removed {
            println!("    - {r}");
        }
    }
    if dry_run {
        eprintln!("dry run: nothing was stored");
    } else if reply.revision > 0 && staged {
        eprintln!(
            "staged at revision {r}; agents keep the released revision until \
             `bulwarkctl rollout start --revision {r} --canary SELECTOR | --percent N`",
            r = reply.revision
        );
    } else if reply.revision > 0 {
        eprintln!("applied at revision {}", reply.revision);
    } else {
        eprintln!("nothing changed");
    }
}

pub async fn run(cli: &Cli, cmd: &PolicyCmd) -> Result<(), CtlError> {
    match cmd {
        PolicyCmd::Validate { paths } => validate(paths),
        PolicyCmd::Apply { paths, dry_run, staged } => apply(cli, paths, *dry_run, *staged).await,
        PolicyCmd::Diff { paths } => apply(cli, paths, true, false).await,
        PolicyCmd::List { kind } => {
            let reply = cli.client()?.list_documents(kind.as_deref().unwrap_or("")).await?;
            for d in &reply.documents {
                println!("{:<40} revision {}", d.key, d.mod_revision);
            }
            eprintln!("{} documents at revision {}", reply.documents.len(), reply.revision);
            Ok(())
        }
        PolicyCmd::Get { key } => {
            let doc = cli.client()?.get_document(key).await?;
            println!("{}", doc.json);
            Ok(())
        }
        PolicyCmd::History { key } => {
            for e in cli.client()?.policy_history(key).await? {
                println!("--- revision {} ({})\n{}", e.revision, e.op, e.json);
            }
            Ok(())
        }
        PolicyCmd::Rollback { to_revision, dry_run, staged } => {
            let reply = cli.client()?.policy_rollback_with(*to_revision, *dry_run, *staged).await?;
            print_reply(&reply, *dry_run, *staged);
            Ok(())
        }
        PolicyCmd::Delete { key } => {
            let reply = cli.client()?.delete_document(key).await?;
            println!("deleted {key} at revision {}", reply.revision);
            Ok(())
        }
    }
}

pub fn validate(paths: &[PathBuf]) -> Result<(), CtlError> {
    let sources = policy::read_paths(paths).map_err(CtlError::Io)?;
    let loaded = policy::load_sources(&sources, &[]);
    for d in &loaded.diagnostics {
        println!("{d}");
    }
    let errors = loaded.errors().count();
    let warnings = loaded.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count();
    let summary = format!(
        "{} documents in {} files: {errors} errors, {warnings} warnings",
        loaded.documents.len(),
        sources.len()
    );
    if errors > 0 {
        return Err(CtlError::Usage(summary));
    }
    eprintln!("{summary}");
    Ok(())
}
