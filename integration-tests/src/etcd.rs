//! A real etcd cluster beside the Bulwark lab, for the side-by-side write benchmark
//! (`bulwark-raftbench`): Debian's `etcd-server` (`/usr/bin/etcd`, 3.4) on 127.0.0.1 with
//! temporary data dirs, default durability (the WAL is fsynced before a write is
//! acknowledged) and mutual TLS on both its client and peer ports, with certificates from
//! the lab's CA. [`EtcdPut`] drives it through the same tonic/rustls stack and the same
//! benchmark loop as Bulwark ([`bulwark_controller::ctl::bench::Put`]). Dropping the
//! cluster kills its processes and removes its files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bulwark_controller::ctl::bench::Put;
use bulwark_controller::tls::{TlsFiles, TlsMaterial};
use tonic::transport::{Channel, Endpoint};

use crate::certs::TestPki;
use crate::cluster::free_port;
use crate::wait::eventually;

/// The subset of etcd's v3 API in `proto/etcd_kv.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("etcdserverpb");
}

/// Where Debian's `etcd-server` installs etcd.
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// One etcd member's process and files.
pub struct EtcdMember {
    pub name: String,
    /// `127.0.0.1:<port>` of its client (gRPC) listener.
    pub client_addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// An etcd cluster of real processes on 127.0.0.1.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    pub pki: TestPki,
    /// The client certificate the benchmark presents (issued by the lab CA).
    pub client: TlsFiles,
    // Dropped last: files go after processes.
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Whether etcd is installed (`apt-get install -y etcd-server`).
    pub fn available() -> bool {
        Path::new(ETCD_BIN).exists()
    }

    /// Starts `n` members as one new cluster and waits until they agree on a leader.
    pub async fn start(n: usize) -> Result<Self> {
        ensure!(
            Self::available(),
            "{ETCD_BIN} is missing: install it with `apt-get install -y etcd-server`"
        );
        let dir = tempfile::Builder::new().prefix("bulwark-etcd-").tempdir()?;
        let pki = TestPki::create(&dir.path().join("pki"))?;
        let client = pki.admin("etcd-bench")?;
        let ports: Vec<(u16, u16)> =
            (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=https://127.0.0.1:{peer}", i + 1))
            .collect();
        let mut cluster = Self { members: Vec::new(), pki, client, dir };
        for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
            // A controller certificate: server and client auth, SANs 127.0.0.1 and
            // localhost; etcd uses it for its client port and for its peers.
            let tls = cluster.pki.controller(i as u64 + 1)?;
            let name = format!("e{}", i + 1);
            let data_dir = cluster.dir.path().join(&name);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let client_url = format!("https://127.0.0.1:{client_port}");
            let peer_url = format!("https://127.0.0.1:{peer_port}");
            let out = std::fs::File::create(&log)?;
            let child = Command::new(ETCD_BIN)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-token",
                    "bulwark-bench",
                    "--initial-cluster-state",
                    "new",
                ])
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth")
                .arg("--peer-cert-file")
                .arg(&tls.cert)
                .arg("--peer-key-file")
                .arg(&tls.key)
                .arg("--peer-trusted-ca-file")
                .arg(&tls.ca)
                .arg("--peer-client-cert-auth")
                .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
                .env_clear()
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {ETCD_BIN} ({name})"))?;
            cluster.members.push(EtcdMember {
                name,
                client_addr: format!("127.0.0.1:{client_port}"),
                data_dir,
                log,
                child: Some(child),
            });
        }
        if let Err(e) = cluster.leader(Duration::from_secs(30)).await {
            bail!("{e:#}\n{}", cluster.log_tails(20));
        }
        Ok(cluster)
    }

    /// The directory holding the members' data dirs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new connection (its own HTTP/2 connection, made on first use) to member `i`,
    /// with mutual TLS through the same rustls configuration as Bulwark's client.
    pub fn channel(&self, i: usize) -> Result<Channel> {
        let m = self.members.get(i).with_context(|| format!("no etcd member {i}"))?;
        let tls = TlsMaterial::load(&self.client)?.client_config();
        Ok(Endpoint::from_shared(format!("https://{}", m.client_addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy())
    }

    /// Waits until every member names the same leader; returns its index in `members`.
    pub async fn leader(&self, timeout: Duration) -> Result<usize> {
        let channels: Vec<Channel> =
            (0..self.members.len()).map(|i| self.channel(i)).collect::<Result<_>>()?;
        eventually("an agreed etcd leader", timeout, || {
            let channels = channels.clone();
            async move {
                let mut leaders = Vec::new();
                let mut ids = Vec::new();
                for ch in channels {
                    let s = pb::maintenance_client::MaintenanceClient::new(ch)
                        .status(pb::StatusRequest {})
                        .await?
                        .into_inner();
                    leaders.push(s.leader);
                    ids.push(s.header.map_or(0, |h| h.member_id));
                }
                ensure!(
                    leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]),
                    "leaders seen: {leaders:?}"
                );
                ids.iter()
                    .position(|id| *id == leaders[0])
                    .with_context(|| format!("leader {} is none of {ids:?}", leaders[0]))
            }
        })
        .await
    }

    /// The last `lines` lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} ({})\n", m.name, m.log.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// etcd's put: `KV.Put` of a new key, acknowledged once committed (the entry fsynced in
/// the WAL of a majority) and applied.
#[derive(Clone)]
pub struct EtcdPut(pub pb::kv_client::KvClient<Channel>);

impl EtcdPut {
    pub fn new(channel: Channel) -> Self {
        Self(pb::kv_client::KvClient::new(channel))
    }

    /// Reads `key` back (a linearizable Range): its value, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let reply = self
            .0
            .clone()
            .range(pb::RangeRequest { key: key.as_bytes().to_vec() })
            .await?
            .into_inner();
        Ok(reply.kvs.into_iter().next().map(|kv| kv.value))
    }
}

impl Put for EtcdPut {
    type Error = tonic::Status;

    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), Self::Error> {
        let req = pb::PutRequest { key: key.into_bytes(), value };
        self.0.clone().put(req).await.map(|_| ())
    }
}
