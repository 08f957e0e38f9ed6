//! `bulwarkctl pki | token | agent | admin | audit`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulwark_proto::v1 as pb;
use clap::Subcommand;

use super::{Cli, CtlError};
use crate::pki::{Ca, Role, write_issued, write_pem};

#[derive(Debug, Subcommand)]
pub enum PkiCmd {
    /// Create the cluster CA, one certificate per controller and a first admin (role admin).
    ///
    /// Controller N (from 1) gets the N-th --controller-names entry and the N-th
    /// --controller-ips entry as its names (a single IP is shared by all). Private keys are
    /// written with mode 0600. Keep ca-key.pem offline or in a secret store; controllers
    /// that sign agent certificates need it (--ca-key).
    Init {
        /// Directory for the PEM files (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// DNS names of the controllers, comma-separated, one per node.
        #[arg(long, value_delimiter = ',')]
        controller_names: Vec<String>,
        /// IP addresses of the controllers, comma-separated, one per node (or one for all).
        #[arg(long, value_delimiter = ',')]
        controller_ips: Vec<IpAddr>,
        /// Name of the first admin.
        #[arg(long, default_value = "admin")]
        admin: String,
        /// Replace an existing CA in --out (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
    },
    /// Issue another admin certificate from the CA in --dir.
    IssueAdmin {
        name: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// Directory holding ca.pem and ca-key.pem; the new files are written there.
        #[arg(long)]
        dir: PathBuf,
        /// Replace existing files for this admin.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a bootstrap token for enrolling agents; it is printed once, only here.
    Create {
        /// Labels every agent enrolled with the token gets, as k=v,k=v.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// How long the token can be used.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List tokens (ids, labels, uses, expiry; never the secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Set an admin identity's role (viewer, operator, admin); overrides its certificate's.
    SetRole { name: String, role: Role },
    /// List roles stored in the cluster.
    List,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CtlError + '_ {
    move |e| CtlError::Io(format!("{}: {e}", path.display()))
}

fn pki_err(e: crate::pki::PkiError) -> CtlError {
    CtlError::Io(e.to_string())
}

pub fn pki(cmd: &PkiCmd) -> Result<(), CtlError> {
    match cmd {
        PkiCmd::Init { out, controller_names, controller_ips, admin, force } => {
            let count = controller_names.len().max(controller_ips.len());
            if count == 0 {
                return Err(CtlError::Usage(
                    "give --controller-names and/or --controller-ips, one per controller".into(),
                ));
            }
            if controller_ips.len() > 1
                && !controller_names.is_empty()
                && controller_ips.len() != controller_names.len()
            {
                return Err(CtlError::Usage(format!(
                    "{} names but {} IPs: give one IP per controller, or one for all",
                    controller_names.len(),
                    controller_ips.len()
                )));
            }
            std::fs::create_dir_all(out).map_err(io(out))?;
            let ca_cert = out.join("ca.pem");
            if ca_cert.exists() && !force {
                return Err(pki_err(crate::pki::PkiError::Exists { path: ca_cert }));
            }
            let ca = Ca::generate("Bulwark cluster CA").map_err(pki_err)?;
            write_pem(&ca_cert, ca.cert_pem(), false, *force).map_err(pki_err)?;
            write_pem(&out.join("ca-key.pem"), ca.key_pem(), true, *force).map_err(pki_err)?;
            println!("CA            {}", ca_cert.display());
            println!("CA SHA-256    {}", ca.fingerprint().map_err(pki_err)?);
            for i in 0..count {
                let id = i as u64 + 1;
                let names: Vec<String> = controller_names.get(i).cloned().into_iter().collect();
                let ips: Vec<IpAddr> = match controller_ips.as_slice() {
                    [one] => vec![*one],
                    many => many.get(i).copied().into_iter().collect(),
                };
                let issued = ca.issue_controller(id, &names, &ips).map_err(pki_err)?;
                let (cert, _) = write_issued(out, &format!("controller-{id}"), &issued, *force)
                    .map_err(pki_err)?;
                let sans: Vec<String> =
                    names.iter().cloned().chain(ips.iter().map(|ip| ip.to_string())).collect();
                println!("controller {id:<2} {} ({})", cert.display(), sans.join(", "));
            }
            let issued = ca.issue_admin(admin, Role::Admin).map_err(pki_err)?;
            let (cert, _) =
                write_issued(out, &format!("admin-{admin}"), &issued, *force).map_err(pki_err)?;
            println!("admin         {} (admin/{admin}, role admin)", cert.display());
            println!(
                "CA key        {} (mode 0600; keep it offline or in a secret store)",
                out.join("ca-key.pem").display()
            );
            Ok(())
        }
        PkiCmd::IssueAdmin { name, role, dir, force } => {
            let ca = Ca::load(&dir.join("ca.pem"), &dir.join("ca-key.pem")).map_err(pki_err)?;
            let issued = ca.issue_admin(name, *role).map_err(pki_err)?;
            let (cert, key) =
                write_issued(dir, &format!("admin-{name}"), &issued, *force).map_err(pki_err)?;
            println!("admin/{name} (role {role}): {} {}", cert.display(), key.display());
            Ok(())
        }
    }
}

fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>, CtlError> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CtlError::Usage(format!("label {l:?}: expected key=value")))
        })
        .collect()
}

pub(super) fn when(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(super) fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    if l.is_empty() { "-".into() } else { l.join(",") }
}

pub async fn token(cli: &Cli, cmd: &TokenCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    match cmd {
        TokenCmd::Create { labels, ttl, uses } => {
            let reply = client.create_token(parse_labels(labels)?, *ttl, *uses).await?;
            let info = reply.info.unwrap_or_default();
            eprintln!(
                "token {} for {} enrollment(s) until {}, labels {} (shown once; store it now):",
                info.id,
                info.uses_total,
                when(info.expires_at),
                labels_text(&info.labels)
            );
            println!("{}", reply.token);
        }
        TokenCmd::List => {
            println!("{:<13} {:<9} {:<21} {:<8} LABELS", "ID", "USES", "EXPIRES", "STATE");
            let now =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            for t in client.list_tokens().await? {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires_at <= now {
                    "expired"
                } else if t.uses_left == 0 {
                    "used up"
                } else {
                    "valid"
                };
                let uses = format!("{}/{}", t.uses_left, t.uses_total);
                println!(
                    "{:<13} {:<9} {:<21} {:<8} {}",
                    t.id,
                    uses,
                    when(t.expires_at),
                    state,
                    labels_text(&t.labels)
                );
            }
        }
        TokenCmd::Revoke { id } => {
            let t = client.revoke_token(id).await?;
            println!("token {} revoked ({} of {} uses were left)", t.id, t.uses_left, t.uses_total);
        }
    }
    Ok(())
}

pub async fn admin(cli: &Cli, cmd: &AdminCmd) -> Result<(), CtlError> {
    let client = cli.client()?;
    match cmd {
        AdminCmd::SetRole { name, role } => {
            let r = client.set_admin_role(name, &role.to_string()).await?;
            println!("admin/{} has role {}", r.name, r.role);
        }
        AdminCmd::List => {
            for r in client.list_admin_roles().await? {
                println!("admin/{:<20} {}", r.name, r.role);
            }
        }
    }
    Ok(())
}

pub async fn audit(
    cli: &Cli,
    since: Option<Duration>,
    who: &str,
    method: &str,
) -> Result<(), CtlError> {
    let client = cli.client()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let since = since.map_or(0, |d| now - d.as_secs() as i64);
    let req = pb::ListAuditRequest { since, who: who.to_owned(), method: method.to_owned() };
    for e in client.list_audit(req).await? {
        let at = humantime::format_rfc3339_millis(
            UNIX_EPOCH + Duration::from_millis(e.at_unix_ms.max(0) as u64),
        );
        let detail =
            if e.message.is_empty() { e.target } else { format!("{} {}", e.target, e.message) };
        println!("{at} {:<20} {:<45} {:<17} {:<9} {detail}", e.who, e.method, e.peer, e.code);
    }
    Ok(())
}
