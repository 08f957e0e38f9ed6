//! Real `bulwark-controller` processes on 127.0.0.1 with temporary data dirs and test
//! certificates. [`Cluster`] starts, kills, stops, restarts and wipes nodes; dropping it
//! kills every process and removes every file, also when a test panics (and then prints
//! the tail of each node's log, to see why; `BULWARK_LAB_LOGS=1` prints them always).
//!
//! With [`ClusterOptions::lab`] the nodes run in a network lab instead ([`crate::netlab`]):
//! node `id` in lab host `c<id>` (198.18.0.<id>), listening and advertised (its Raft member
//! address) on 198.18.0.<id>:7000. The test process reaches each node through a forward on
//! 127.0.0.1 (that is [`Cluster::addr`]), and the clients the harness hands out follow
//! leader hints (lab addresses) through channels pinned to the lab hosts' namespaces.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bulwark_controller::client::Client;
use bulwark_controller::tls::{TlsFiles, TlsMaterial};
use bulwark_proto::v1 as pb;

use crate::certs::TestPki;
use crate::netlab::{Lab, LabHost};
use crate::wait::eventually;

/// Settings passed to every node.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub cluster_name: String,
    pub snapshot_threshold: u64,
    pub snapshot_keep_logs: u64,
    pub heartbeat: &'static str,
    pub election_timeout: &'static str,
    pub quorum_timeout: &'static str,
    /// `BULWARK_LOG` for the nodes.
    pub log: &'static str,
    /// More flags for every node.
    pub extra_args: Vec<String>,
    /// Run the nodes in this network lab instead of on 127.0.0.1.
    pub lab: Option<Lab>,
}

/// The port every controller listens on inside its lab host.
pub const LAB_CONTROLLER_PORT: u16 = 7000;
/// The port of every controller's /healthz, /readyz and /metrics inside its lab host.
pub const LAB_HTTP_PORT: u16 = 7080;

/// The lab address of controller node `id`: 198.18.0.<id>.
pub fn lab_controller_ip(id: u64) -> Result<Ipv4Addr> {
    match u8::try_from(id) {
        Ok(n @ 1..=254) => Ok(Ipv4Addr::new(198, 18, 0, n)),
        _ => bail!("node id {id} has no lab address (1-254)"),
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            cluster_name: "bulwark-lab".into(),
            snapshot_threshold: 10_000,
            snapshot_keep_logs: 1_000,
            heartbeat: "100ms",
            election_timeout: "300ms",
            quorum_timeout: "3s",
            log: "info,openraft=warn",
            extra_args: Vec::new(),
            lab: None,
        }
    }
}

/// One node's process and files.
pub struct NodeProc {
    pub id: u64,
    /// `--cluster-name` of this node (the lab's, unless spawned for another cluster).
    pub cluster_name: String,
    /// The address the test process dials (in the lab: a forward on 127.0.0.1).
    pub addr: String,
    /// The address the node listens on and is a member at (`--listen`; in the lab, its
    /// lab address; else the same as `addr`).
    pub member_addr: String,
    /// The lab host the node runs in, in lab mode.
    pub host: Option<LabHost>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub tls: TlsFiles,
    /// `--http-listen` (/healthz, /readyz, /metrics), and where the test process reaches it.
    pub http_listen: String,
    pub http_addr: String,
    child: Option<Child>,
}

impl NodeProc {
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// A cluster of controller processes.
pub struct Cluster {
    // Dropped last (declared last): files go after processes.
    pub nodes: BTreeMap<u64, NodeProc>,
    pub options: ClusterOptions,
    pub admin: TlsFiles,
    pub pki: TestPki,
    bin: PathBuf,
    dir: tempfile::TempDir,
    _turn: LabTurn,
}

/// One test's clusters at a time: timing assertions (a new leader within 2 s) measure the
/// cluster, not two clusters fighting for two cores. Re-entrant on one thread, so a test
/// may run a second cluster beside its first.
struct LabTurn;

static LAB: (std::sync::Mutex<Option<(std::thread::ThreadId, usize)>>, std::sync::Condvar) =
    (std::sync::Mutex::new(None), std::sync::Condvar::new());

impl LabTurn {
    fn take() -> Self {
        let me = std::thread::current().id();
        let mut owner = LAB.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match owner.as_mut() {
                None => {
                    *owner = Some((me, 1));
                    return LabTurn;
                }
                Some((id, count)) if *id == me => {
                    *count += 1;
                    return LabTurn;
                }
                Some(_) => owner = LAB.1.wait(owner).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }
}

impl Drop for LabTurn {
    fn drop(&mut self) {
        let mut owner = LAB.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = owner.as_mut() {
            *count -= 1;
            if *count == 0 {
                *owner = None;
                LAB.1.notify_all();
            }
        }
    }
}

/// The directory holding this workspace's binaries (`target/<profile>`), found from the
/// running executable (a test in `deps/`, or a binary beside the others).
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("executable has no directory")?.to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of a workspace binary, with a clear error when it was not built.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1 (bound and released; the node binds it right after).
/// Never the same port twice in one test process, so nodes starting side by side (whose
/// ports are released but not yet bound again) cannot be handed the same one.
pub fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !handed.contains(&port) {
            handed.push(port);
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 after 100 tries")
}

static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// Records a port bound on 127.0.0.1 elsewhere (a lab forward), so `free_port` never hands
/// it out.
pub(crate) fn mark_port_used(port: u16) {
    HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner()).push(port);
}

impl Cluster {
    /// Starts `n` nodes and initializes them as one cluster of `n` voters.
    pub async fn start(n: u64) -> Result<Self> {
        Self::start_with(n, ClusterOptions::default()).await
    }

    /// Starts `n` nodes inside `lab` (hosts `c1`..`cn`) as one cluster of `n` voters.
    pub async fn start_in_lab(lab: &Lab, n: u64) -> Result<Self> {
        Self::start_with(n, ClusterOptions { lab: Some(lab.clone()), ..Default::default() }).await
    }

    pub async fn start_with(n: u64, options: ClusterOptions) -> Result<Self> {
        let mut cluster = Self::empty(options)?;
        for id in 1..=n {
            cluster.spawn(id)?;
        }
        cluster.init(&(1..=n).collect::<Vec<_>>()).await?;
        Ok(cluster)
    }

    /// A cluster with a CA and no nodes yet.
    pub fn empty(options: ClusterOptions) -> Result<Self> {
        let turn = LabTurn::take();
        let dir = tempfile::Builder::new().prefix("bulwark-lab-").tempdir()?;
        let pki = TestPki::create(&dir.path().join("pki"))?;
        let admin = pki.admin("lab")?;
        let bin = workspace_bin("bulwark-controller")?;
        Ok(Self { nodes: BTreeMap::new(), options, admin, pki, bin, dir, _turn: turn })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates node `id` (port, data dir, certificate) and starts its process. It is not a
    /// member until `init` or `add_learner`.
    pub fn spawn(&mut self, id: u64) -> Result<()> {
        let name = self.options.cluster_name.clone();
        self.spawn_named(id, &name)
    }

    /// Like [`spawn`](Self::spawn), with another `--cluster-name` (same CA).
    pub fn spawn_named(&mut self, id: u64, cluster_name: &str) -> Result<()> {
        if self.nodes.contains_key(&id) {
            bail!("node {id} already exists in this lab");
        }
        let (addr, member_addr, host, tls, http_listen, http_addr) = match &self.options.lab {
            None => {
                let addr = format!("127.0.0.1:{}", free_port()?);
                let http = format!("127.0.0.1:{}", free_port()?);
                (addr.clone(), addr, None, self.pki.controller(id)?, http.clone(), http)
            }
            Some(lab) => {
                let host = lab.host(&format!("c{id}"), lab_controller_ip(id)?)?;
                let member = SocketAddr::new(host.addr(), LAB_CONTROLLER_PORT);
                let forward = lab.forward(&host, member)?;
                let tls = self.pki.controller_with_ips(id, &[host.addr()])?;
                let http = SocketAddr::new(host.addr(), LAB_HTTP_PORT);
                let http_forward = lab.forward(&host, http)?;
                (
                    forward.to_string(),
                    member.to_string(),
                    Some(host),
                    tls,
                    http.to_string(),
                    http_forward.to_string(),
                )
            }
        };
        let node = NodeProc {
            id,
            cluster_name: cluster_name.to_owned(),
            addr,
            member_addr,
            host,
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            tls,
            http_listen,
            http_addr,
            child: None,
        };
        self.nodes.insert(id, node);
        self.restart(id)
    }

    /// Seeds node `id`'s data dir from `snapshot` with the real `bulwark-controller
    /// restore`, then starts it: the only voter of a cluster holding the snapshot's state.
    pub fn spawn_restored(&mut self, id: u64, snapshot: &Path) -> Result<()> {
        let name = self.options.cluster_name.clone();
        self.spawn_named(id, &name)?;
        self.kill(id)?;
        let node = self.node(id)?;
        if node.data_dir.exists() {
            std::fs::remove_dir_all(&node.data_dir)?;
        }
        let out = Command::new(&self.bin)
            .arg("restore")
            .arg("--from")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--node-id", &id.to_string(), "--advertise", &node.member_addr])
            .args(["--cluster-name", &name])
            .output()?;
        if !out.status.success() {
            bail!("restore failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.restart(id)
    }

    /// The command line that starts node `id`, for tests that run it themselves (in the
    /// lab: `ip netns exec <its host> bulwark-controller ...`).
    pub fn command(&self, id: u64) -> Result<Command> {
        let node = self.node(id)?;
        let o = &self.options;
        let mut cmd = match &node.host {
            Some(host) => host.command(&self.bin),
            None => Command::new(&self.bin),
        };
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(&node.member_addr)
            .arg("--http-listen")
            .arg(&node.http_listen)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--cluster-name")
            .arg(&node.cluster_name)
            .arg("--tls-ca")
            .arg(&node.tls.ca)
            .arg("--tls-cert")
            .arg(&node.tls.cert)
            .arg("--tls-key")
            .arg(&node.tls.key)
            .arg("--ca-key")
            .arg(&self.pki.ca_key)
            .arg("--snapshot-threshold")
            .arg(o.snapshot_threshold.to_string())
            .arg("--snapshot-keep-logs")
            .arg(o.snapshot_keep_logs.to_string())
            .arg("--heartbeat")
            .arg(o.heartbeat)
            .arg("--election-timeout")
            .arg(o.election_timeout)
            .arg("--quorum-timeout")
            .arg(o.quorum_timeout)
            .env(
                "BULWARK_LOG",
                std::env::var("BULWARK_LAB_NODE_LOG").unwrap_or_else(|_| o.log.into()),
            )
            .args(&o.extra_args)
            .env_remove("BULWARK_CONFIG")
            .stdin(Stdio::null());
        Ok(cmd)
    }

    fn node(&self, id: u64) -> Result<&NodeProc> {
        self.nodes.get(&id).with_context(|| format!("no node {id} in this lab"))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeProc> {
        self.nodes.get_mut(&id).with_context(|| format!("no node {id} in this lab"))
    }

    /// (Re)starts node `id`'s process on its port and data dir.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let mut cmd = self.command(id)?;
        let node = self.node_mut(id)?;
        if node.is_running() {
            bail!("node {id} is already running");
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        cmd.stdout(log.try_clone()?).stderr(log);
        node.child = Some(cmd.spawn().with_context(|| format!("starting node {id}"))?);
        Ok(())
    }

    /// SIGKILL: the process dies at once, with whatever it had not flushed.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit (SIGKILL after 10 s).
    pub async fn stop(&mut self, id: u64) -> Result<()> {
        let node = self.node_mut(id)?;
        let Some(mut child) = node.child.take() else { return Ok(()) };
        // kill(1) sends SIGTERM without unsafe FFI.
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let exited = eventually("the node to exit", Duration::from_secs(10), || {
            let status = child.try_wait();
            async move {
                match status? {
                    Some(s) => Ok(s),
                    None => bail!("still running"),
                }
            }
        })
        .await;
        if exited.is_err() {
            let _ = child.kill();
        }
        child.wait()?;
        Ok(())
    }

    /// Kills node `id` and deletes its data dir (the node is still a member).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        self.kill(id)?;
        let dir = self.node(id)?.data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// The process id of node `id`, while it runs (to read its memory in /proc).
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.nodes.get(&id).and_then(|n| n.child.as_ref()).map(Child::id)
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes.get(&id).map(|n| n.addr.clone()).unwrap_or_default()
    }

    /// Where the test process reaches node `id`'s /healthz, /readyz and /metrics.
    pub fn http_addr(&self, id: u64) -> String {
        self.nodes.get(&id).map(|n| n.http_addr.clone()).unwrap_or_default()
    }

    /// The address node `id` is a member at (its lab address in the lab).
    pub fn member_addr(&self, id: u64) -> String {
        self.nodes.get(&id).map(|n| n.member_addr.clone()).unwrap_or_default()
    }

    /// The lab host node `id` runs in (lab mode only).
    pub fn host(&self, id: u64) -> Option<&LabHost> {
        self.nodes.get(&id).and_then(|n| n.host.as_ref())
    }

    /// Every node's member address, by id: what agents and `bulwarkctl` inside the lab
    /// connect to (the same as `addr` on 127.0.0.1).
    pub fn controller_urls(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.member_addr.clone()).collect()
    }

    pub fn tls(&self) -> Result<TlsMaterial> {
        Ok(TlsMaterial::load(&self.admin)?)
    }

    /// A client for every node of the lab, retrying for up to 10 s.
    pub fn client(&self) -> Result<Client> {
        let endpoints: Vec<String> = self.nodes.values().map(|n| n.addr.clone()).collect();
        self.route_hints(Client::new(&self.tls()?, &endpoints, Duration::from_secs(10))?)
    }

    /// A client that only ever talks to node `id`.
    pub fn node_client(&self, id: u64) -> Result<Client> {
        self.route_hints(Client::new(&self.tls()?, &[self.addr(id)], Duration::from_secs(10))?)
    }

    /// In the lab, lets `client` follow leader hints: a node names the leader by its member
    /// address (198.18.0.x:7000), which the test process cannot dial from its own
    /// namespace. So for each node, the client's channel to that address is created on the
    /// node's lab-host thread: tonic spawns a channel's worker, which makes its connections,
    /// on the runtime current when the channel is created, so its sockets are made inside
    /// the host's namespace (where that address is local, partitioned or not). Outside the
    /// lab it returns `client` as it is.
    pub fn route_hints(&self, client: Client) -> Result<Client> {
        for node in self.nodes.values() {
            let Some(host) = &node.host else { continue };
            let pinned = client.pinned(&node.member_addr).with_retry_for(Duration::ZERO);
            host.block_in(move || {
                // One poll creates and caches the channel (its worker now runs on this
                // thread's runtime); the status call itself is not needed.
                let call = std::pin::pin!(pinned.status());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                let _ = std::future::Future::poll(call, &mut cx);
            })?;
        }
        Ok(client)
    }

    /// Initializes the cluster on the first of `voters` with all of them as voters, and
    /// waits for a leader.
    pub async fn init(&self, voters: &[u64]) -> Result<u64> {
        let first = *voters.first().context("no voters")?;
        let members: Vec<pb::Member> = voters
            .iter()
            .map(|&id| pb::Member { id, addr: self.member_addr(id), voter: true })
            .collect();
        // The nodes may still be starting: init retries while they are unreachable.
        let client = self.node_client(first)?;
        eventually("cluster init", Duration::from_secs(20), || {
            let members = members.clone();
            let client = client.clone();
            async move { Ok(client.init(members).await?) }
        })
        .await?;
        self.wait_for_leader(Duration::from_secs(10)).await
    }

    /// Waits until every running member agrees on one leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64> {
        let running: Vec<u64> =
            self.nodes.iter().filter(|(_, n)| n.child.is_some()).map(|(id, _)| *id).collect();
        let clients: Vec<(u64, Client)> = running
            .iter()
            .map(|&id| Ok((id, self.node_client(id)?.with_retry_for(Duration::ZERO))))
            .collect::<Result<_>>()?;
        eventually("an agreed leader", timeout, || {
            let clients = clients.clone();
            async move {
                let mut leaders = std::collections::BTreeSet::new();
                for (id, c) in &clients {
                    let s = c.status().await?;
                    if s.members.iter().any(|m| m.id == *id) {
                        leaders.insert(s.leader_id);
                    }
                }
                match leaders.into_iter().collect::<Vec<_>>().as_slice() {
                    [leader] if *leader != 0 => Ok(*leader),
                    other => bail!("leaders seen: {other:?}"),
                }
            }
        })
        .await
    }

    /// Waits until node `id` answers (it has bound its port and loaded its state).
    pub async fn wait_ready(&self, id: u64) -> Result<pb::NodeStatus> {
        eventually(&format!("node {id} to answer"), Duration::from_secs(10), || self.status(id))
            .await
    }

    /// The status of node `id`, asked directly.
    pub async fn status(&self, id: u64) -> Result<pb::NodeStatus> {
        Ok(self.node_client(id)?.with_retry_for(Duration::ZERO).status().await?)
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Ok(node) = self.node(id) else { return String::new() };
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            let _ = self.kill(*id);
        }
        if std::thread::panicking() || std::env::var_os("BULWARK_LAB_LOGS").is_some() {
            for id in ids {
                eprintln!("---- node {id} log (tail) ----\n{}", self.log_tail(id, 40));
            }
        }
    }
}
