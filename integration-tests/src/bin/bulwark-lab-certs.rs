//! `bulwark-lab-certs`: writes a test PKI (cluster CA, controller and admin certificates)
//! for trying a cluster by hand, until `bulwarkctl pki init` exists. Not for production:
//! the CA key is written next to the certificates.

use std::path::PathBuf;

use anyhow::Result;
use bulwark_integration_tests::certs::TestPki;
use clap::Parser;

/// Writes ca.pem, controller-<N>.pem/-key.pem for N in 1..=--nodes and admin-<NAME>.pem/-key.pem.
#[derive(Debug, Parser)]
#[command(name = "bulwark-lab-certs", version)]
struct Args {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Number of controller certificates (node ids 1..=N), valid for 127.0.0.1 and localhost.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Name of the admin identity.
    #[arg(long, default_value = "ops")]
    admin: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.out.join("ca.pem").exists() {
        anyhow::bail!("{} already holds a CA (ca.pem); choose an empty --out", args.out.display());
    }
    let pki = TestPki::create(&args.out)?;
    for id in 1..=args.nodes {
        let files = pki.controller(id)?;
        println!("controller {id}: {} {}", files.cert.display(), files.key.display());
    }
    let admin = pki.admin(&args.admin)?;
    println!("admin {}: {} {}", args.admin, admin.cert.display(), admin.key.display());
    println!("CA: {}", admin.ca.display());
    Ok(())
}
