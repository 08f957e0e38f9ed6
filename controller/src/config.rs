//! `bulwark-controller` settings from flags, environment and an optional TOML file.
//! Flags and environment win over the file; the file wins over defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::node::{NodeConfig, StartError, Tuning};
use crate::tls::TlsFiles;

/// Runs one controller node of a Bulwark cluster.
///
/// A new node starts uninitialized. Initialize a cluster on one node with
/// `bulwarkctl cluster init`, then add the others with `bulwarkctl cluster add-learner`
/// and `bulwarkctl cluster promote`. Exit codes: 0 after a clean shutdown (SIGTERM or
/// Ctrl-C), 2 when flags, files or the data dir need fixing, 1 on any other failure.
#[derive(Debug, Parser)]
#[command(name = "bulwark-controller", version)]
pub struct ControllerArgs {
    /// A TOML file with any of the settings below (keys as the long flags, with `_`).
    #[arg(long, env = "BULWARK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id in the cluster (1 or more, unique, never reused).
    #[arg(long, env = "BULWARK_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address to listen on for peers and clients [default: 127.0.0.1:7400].
    #[arg(long, env = "BULWARK_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Plain-HTTP address for /healthz, /readyz and /metrics, or `off`
    /// [default: 127.0.0.1:7080].
    #[arg(long, env = "BULWARK_HTTP_LISTEN", value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// Address others reach this node at [default: the listen address].
    #[arg(long, env = "BULWARK_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Where the Raft log, vote and state machine live (sled).
    #[arg(long, env = "BULWARK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of the cluster; peers of another cluster are refused [default: bulwark].
    #[arg(long, env = "BULWARK_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, env = "BULWARK_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM); its SANs must cover the advertised address.
    #[arg(long, env = "BULWARK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "BULWARK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Build a snapshot (and compact the log) after this many entries [default: 10000].
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_threshold: Option<u64>,
    /// Entries kept behind a snapshot for lagging followers [default: 1000].
    #[arg(long, value_name = "ENTRIES")]
    pub snapshot_keep_logs: Option<u64>,
    /// Leader heartbeat interval [default: 100ms].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat: Option<Duration>,
    /// Minimum election timeout; the maximum is twice this [default: 300ms]. A follower
    /// calls an election this long (at random up to twice as long) after the leader lease,
    /// which equals the maximum, ran out: 0.9-1.2 s after the last heartbeat by default.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub election_timeout: Option<Duration>,
    /// How long a write or linearizable read waits for a quorum [default: 5s].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub quorum_timeout: Option<Duration>,
    /// The cluster CA's private key (mode 0600). With it this node signs agent
    /// certificates at enrollment and renewal; without it, it refuses to.
    #[arg(long, env = "BULWARK_CA_KEY", value_name = "FILE")]
    pub ca_key: Option<PathBuf>,
    /// Lifetime of agent certificates; agents renew at two thirds [default: 7d].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub agent_cert_ttl: Option<Duration>,
    /// Enrollments per minute accepted from one source address [default: 60].
    #[arg(long, value_name = "N")]
    pub enroll_rate: Option<u32>,
    /// Agent events (drift, rollbacks, users, logins) older than this are forgotten
    /// [default: 90d].
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub event_retention: Option<Duration>,
    /// At most this many agent events are kept (plus up to one report's); the oldest
    /// reports' events go first [default: 1000000].
    #[arg(long, value_name = "N")]
    pub event_max: Option<usize>,
}

/// The TOML file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    listen: Option<String>,
    http_listen: Option<String>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    cluster_name: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    snapshot_threshold: Option<u64>,
    snapshot_keep_logs: Option<u64>,
    #[serde(default, with = "humantime_serde_opt")]
    heartbeat: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    election_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde_opt")]
    quorum_timeout: Option<Duration>,
    ca_key: Option<PathBuf>,
    #[serde(default, with = "humantime_serde_opt")]
    agent_cert_ttl: Option<Duration>,
    enroll_rate: Option<u32>,
    #[serde(default, with = "humantime_serde_opt")]
    event_retention: Option<Duration>,
    event_max: Option<usize>,
}

mod humantime_serde_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

/// The resolved settings: where to listen, and the node's configuration.
#[derive(Debug)]
pub struct Resolved {
    pub listen: String,
    /// `None`: no HTTP endpoints (`--http-listen off`).
    pub http_listen: Option<String>,
    pub node: NodeConfig,
}

fn read_file(path: &Path) -> Result<FileConfig, StartError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::Config(format!("cannot read --config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // One line: FILE:LINE:COLUMN: message.
        let (line, col) = e.span().map_or((1, 1), |span| line_col(&text, span.start));
        StartError::Config(format!("{}:{line}:{col}: {}", path.display(), e.message().trim()))
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl ControllerArgs {
    pub fn resolve(self) -> Result<Resolved, StartError> {
        let file = match &self.config {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let missing = |flag: &str| {
            StartError::Config(format!("--{flag} is required (flag, environment or --config file)"))
        };
        let node_id = self.node_id.or(file.node_id).ok_or_else(|| missing("node-id"))?;
        let listen = self.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:7400".into());
        let advertise = self.advertise.or(file.advertise).unwrap_or_else(|| listen.clone());
        let data_dir = self.data_dir.or(file.data_dir).ok_or_else(|| missing("data-dir"))?;
        let tls = TlsFiles {
            ca: self.tls_ca.or(file.tls_ca).ok_or_else(|| missing("tls-ca"))?,
            cert: self.tls_cert.or(file.tls_cert).ok_or_else(|| missing("tls-cert"))?,
            key: self.tls_key.or(file.tls_key).ok_or_else(|| missing("tls-key"))?,
        };
        let d = Tuning::default();
        let election =
            self.election_timeout.or(file.election_timeout).unwrap_or(d.election_timeout_min);
        let tuning = Tuning {
            heartbeat: self.heartbeat.or(file.heartbeat).unwrap_or(d.heartbeat),
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_threshold: self
                .snapshot_threshold
                .or(file.snapshot_threshold)
                .unwrap_or(d.snapshot_threshold),
            snapshot_keep_logs: self
                .snapshot_keep_logs
                .or(file.snapshot_keep_logs)
                .unwrap_or(d.snapshot_keep_logs),
            quorum_timeout: self.quorum_timeout.or(file.quorum_timeout).unwrap_or(d.quorum_timeout),
        };
        if tuning.heartbeat >= tuning.election_timeout_min {
            return Err(StartError::Config(format!(
                "--heartbeat ({:?}) must be shorter than --election-timeout ({:?})",
                tuning.heartbeat, tuning.election_timeout_min
            )));
        }
        let cluster_name =
            self.cluster_name.or(file.cluster_name).unwrap_or_else(|| "bulwark".into());
        let http_listen = match self.http_listen.or(file.http_listen) {
            Some(off) if off == "off" => None,
            Some(addr) => Some(addr),
            None => Some("127.0.0.1:7080".into()),
        };
        Ok(Resolved {
            listen,
            http_listen,
            node: NodeConfig {
                node_id,
                advertise,
                data_dir,
                cluster_name,
                tls,
                tuning,
                ca_key: self.ca_key.or(file.ca_key),
                agent_cert_ttl: self
                    .agent_cert_ttl
                    .or(file.agent_cert_ttl)
                    .unwrap_or(crate::pki::AGENT_VALIDITY),
                enroll_rate: self.enroll_rate.or(file.enroll_rate).unwrap_or(60),
                event_retention: crate::fleet::Retention {
                    max_age: self
                        .event_retention
                        .or(file.event_retention)
                        .unwrap_or(crate::fleet::Retention::default().max_age),
                    max_events: self
                        .event_max
                        .or(file.event_max)
                        .unwrap_or(crate::fleet::Retention::default().max_events),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ControllerArgs {
        let mut argv = vec!["bulwark-controller"];
        argv.extend_from_slice(extra);
        ControllerArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "node_id = 3\nlisten = \"127.0.0.1:7403\"\ndata_dir = \"/d\"\ntls_ca = \"ca\"\ntls_cert = \"c\"\ntls_key = \"k\"\nheartbeat = \"50ms\"\n",
        )
        .unwrap();
        let r = args(&["--config", file.to_str().unwrap(), "--node-id", "4"]).resolve().unwrap();
        assert_eq!(r.node.node_id, 4);
        assert_eq!(r.listen, "127.0.0.1:7403");
        assert_eq!(r.node.advertise, "127.0.0.1:7403");
        assert_eq!(r.node.cluster_name, "bulwark");
        assert_eq!(r.node.tuning.heartbeat, Duration::from_millis(50));
        assert_eq!(r.node.tuning.election_timeout_max, Duration::from_millis(600));
    }

    #[test]
    fn errors_name_the_missing_flag_and_the_bad_key() {
        let err = args(&["--node-id", "1"]).resolve().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: --data-dir is required (flag, environment or --config file)"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "node_id = 1\nnode_idd = 2\n").unwrap();
        let err = args(&["--config", file.to_str().unwrap()]).resolve().unwrap_err().to_string();
        let want =
            format!("invalid configuration: {}:2:1: unknown field `node_idd`", file.display());
        assert!(err.starts_with(&want), "{err}");
    }
}
