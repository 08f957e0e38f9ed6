//! The network lab: one Linux network namespace per lab host, each joined by a veth pair
//! to a bridge that lives in a namespace of its own. Addresses come from 198.18.0.0/16 (all
//! hosts on one segment, so nothing is routed) and there is no route out of the lab: no
//! default route, no NAT, nothing in the machine's own namespace changes.
//!
//! The test process reaches into a host's namespace through a thread that joined it
//! (`setns(2)`) and runs a small tokio runtime there: sockets created on that thread live in
//! the host's namespace (and can then be used from any thread). On it run the probes
//! ([`Lab::connect_tcp`], [`Lab::send_udp`]), the servers ([`LabHost::listen_tcp`],
//! [`LabHost::listen_udp`]) and the forwards ([`Lab::forward`]) that let in-process gRPC
//! clients reach a controller inside the lab.
//!
//! Namespaces are named `bwl-<pid>-<n>-<host>`. Dropping the last [`Lab`] handle (also while
//! a test panics) kills what still runs inside them and deletes them, which removes the
//! veths and the bridge; [`Lab::new`] first removes labs whose test process is gone.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The lab's segment: every host address is in 198.18.0.0/16.
pub const LAB_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 16);

const NETNS_DIR: &str = "/var/run/netns";
const NAME_PREFIX: &str = "bwl-";

/// What a TCP connection attempt met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handshake completed: something listens and the path is open.
    Accepted,
    /// A RST came back: the host is reachable and nothing listens (or a reject rule).
    Refused,
    /// Nothing came back within the timeout (a drop rule, a partition).
    TimedOut,
    /// The network said the host does not answer (ARP failed: it is cut off or absent).
    Unreachable,
    /// The sender's own firewall refused the SYN (`connect` failed with EPERM).
    Blocked,
}

/// What a UDP datagram sent to an echo server met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpOutcome {
    /// The echo came back (its payload).
    Answered(Vec<u8>),
    /// An ICMP port-unreachable came back: the host is there, nothing listens.
    Refused,
    /// Nothing came back within the timeout.
    NoAnswer,
}

/// A network lab. Clones share it; the namespaces go when the last clone is dropped.
#[derive(Clone)]
pub struct Lab {
    inner: Arc<LabInner>,
}

struct LabInner {
    prefix: String,
    bridge_ns: String,
    hosts: Mutex<Vec<LabHost>>,
}

/// One host of the lab: a network namespace with `lo` and `eth0` (its lab address).
#[derive(Clone)]
pub struct LabHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    /// The veth end in the bridge namespace, attached to the bridge.
    bridge_port: String,
    thread: Mutex<Option<NsThread>>,
}

impl Lab {
    /// Creates the bridge namespace (with bridge `br0`) of a new lab. Fails clearly when
    /// not root. Removes first what labs of dead test processes left behind.
    pub fn new() -> Result<Self> {
        ensure_root()?;
        remove_stale_labs();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let prefix =
            format!("{NAME_PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let bridge_ns = format!("{prefix}-br");
        let lab = Lab {
            inner: Arc::new(LabInner {
                prefix,
                bridge_ns: bridge_ns.clone(),
                hosts: Mutex::new(Vec::new()),
            }),
        };
        ip(&["netns", "add", &bridge_ns])?;
        ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// This lab's namespace name prefix (`bwl-<pid>-<n>`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The namespace holding the bridge.
    pub fn bridge_ns(&self) -> &str {
        &self.inner.bridge_ns
    }

    /// Every namespace this lab created (bridge first).
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.inner.bridge_ns.clone()];
        all.extend(self.inner.hosts().iter().map(|h| h.inner.ns.clone()));
        all
    }

    /// Adds host `name` (lowercase letters, digits, `-`) with address `addr`/16 on `eth0`.
    pub fn host(&self, name: &str, addr: Ipv4Addr) -> Result<LabHost> {
        ensure!(
            !name.is_empty()
                && name.len() <= 32
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "lab host name {name:?}: use 1-32 lowercase letters, digits and '-'"
        );
        let [a, b, c, d] = addr.octets();
        ensure!(
            [a, b] == [198, 18] && !matches!([c, d], [0, 0] | [255, 255]),
            "lab host {name}: {addr} is not a host address in the lab's 198.18.0.0/16"
        );
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hosts.iter().find(|h| h.inner.name == name || h.inner.addr == addr) {
            bail!("lab host {name} ({addr}) clashes with host {} ({})", h.name(), h.addr());
        }
        let ns = format!("{}-{name}", self.inner.prefix);
        let bridge_port = format!("v{}", hosts.len());
        let br = &self.inner.bridge_ns;
        ip(&["netns", "add", &ns])?;
        // Registered before it is complete, so a failure below still deletes it.
        let thread = Mutex::new(None);
        let host = LabHost {
            inner: Arc::new(HostInner { name: name.into(), ns, addr, bridge_port, thread }),
        };
        hosts.push(host.clone());
        let (ns, port) = (&host.inner.ns, &host.inner.bridge_port);
        let cidr = format!("{addr}/{}", LAB_NET.1);
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])?;
        ip(&["-n", br, "link", "set", port, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        *host.inner.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(NsThread::start(ns)?);
        Ok(host)
    }

    /// Cuts `host` off the bridge (its bridge port goes down): its frames and those sent
    /// to it vanish, as if its cable were pulled. Its own namespace is untouched.
    pub fn partition(&self, host: &LabHost) -> Result<()> {
        ip(&["-n", &self.inner.bridge_ns, "link", "set", &host.inner.bridge_port, "down"])
    }

    /// Plugs `host` back in after [`partition`](Self::partition).
    pub fn heal(&self, host: &LabHost) -> Result<()> {
        ip(&["-n", &self.inner.bridge_ns, "link", "set", &host.inner.bridge_port, "up"])
    }

    /// Tries a TCP connection from `from` to `to:port` for up to `timeout`.
    pub async fn connect_tcp(
        &self,
        from: &LabHost,
        to: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<Outcome> {
        let target = SocketAddr::new(to, port);
        from.run(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
                Err(_) => Ok(Outcome::TimedOut),
                Ok(Ok(_)) => Ok(Outcome::Accepted),
                Ok(Err(e)) => match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Ok(Outcome::Refused),
                    std::io::ErrorKind::HostUnreachable => Ok(Outcome::Unreachable),
                    std::io::ErrorKind::PermissionDenied => Ok(Outcome::Blocked),
                    _ => Err(e).with_context(|| format!("connecting to {target}")),
                },
            }
        })
        .await?
    }

    /// Sends `payload` from `from` to `to:port` over UDP and waits up to `timeout` for an
    /// echo (see [`LabHost::listen_udp`]).
    pub async fn send_udp(
        &self,
        from: &LabHost,
        to: IpAddr,
        port: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<UdpOutcome> {
        let (target, payload) = (SocketAddr::new(to, port), payload.to_vec());
        from.run(async move {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
            socket.connect(target).await?;
            socket.send(&payload).await?;
            let mut buf = vec![0u8; 65_536];
            match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
                Err(_) => Ok(UdpOutcome::NoAnswer),
                Ok(Ok(n)) => Ok(UdpOutcome::Answered(buf[..n].to_vec())),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Ok(UdpOutcome::Refused)
                }
                Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("udp to {target}"))),
            }
        })
        .await?
    }

    /// A listener on 127.0.0.1 in the test process's own namespace that forwards every
    /// connection to `target`, dialed from inside `host`'s namespace. It lives as long as the
    /// lab. Call it from a test thread (one that did not join a lab namespace).
    pub fn forward(&self, host: &LabHost, target: SocketAddr) -> Result<SocketAddr> {
        ensure!(
            same_netns_as_process()?,
            "Lab::forward called from a thread inside a lab namespace"
        );
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        crate::cluster::mark_port_used(local.port());
        host.handle()?.spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::warn!(%local, error = %e, "lab forward failed"),
            };
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = inbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(local)
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LabHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabHost")
            .field("ns", &self.inner.ns)
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl LabInner {
    fn hosts(&self) -> Vec<LabHost> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for LabInner {
    fn drop(&mut self) {
        let hosts = self.hosts();
        for host in &hosts {
            let thread = host.inner.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(thread);
        }
        for ns in hosts.iter().map(|h| h.inner.ns.as_str()).chain([self.bridge_ns.as_str()]) {
            if let Err(e) = delete_netns(ns) {
                eprintln!("lab: could not delete namespace {ns}: {e:#}");
            }
        }
    }
}

impl LabHost {
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The namespace's name (for `ip netns exec`, `ip -n`, `nft` inside it).
    pub fn ns(&self) -> &str {
        &self.inner.ns
    }

    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.inner.addr)
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.inner.addr
    }

    /// `program` to run inside this host's namespace (`ip netns exec NS program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.inner.ns]).arg(program).stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` inside this host and returns its output; fails with its stderr
    /// when it exits unsuccessfully.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in lab host {}", self.name()))?;
        ensure!(
            out.status.success(),
            "{program} {} in lab host {} failed ({}): {}",
            args.join(" "),
            self.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(out)
    }

    /// Starts `program args` inside this host; the process is killed when the returned
    /// handle drops (and, at the latest, when the lab drops).
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<LabChild> {
        let child = self
            .command(program)
            .args(args)
            .spawn()
            .with_context(|| format!("starting {program} in lab host {}", self.name()))?;
        Ok(LabChild(child))
    }

    /// A TCP server on `0.0.0.0:port` inside this host (port 0: any) that echoes what it
    /// receives, until the returned handle drops.
    pub fn listen_tcp(&self, port: u16) -> Result<LabServer> {
        let addr = self.inner.addr;
        self.serve(async move {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
            let port = listener.local_addr()?.port();
            let serve = async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let (mut r, mut w) = stream.into_split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            };
            Ok((SocketAddr::new(IpAddr::V4(addr), port), serve))
        })
    }

    /// A UDP echo server on `0.0.0.0:port` inside this host, until the handle drops.
    pub fn listen_udp(&self, port: u16) -> Result<LabServer> {
        let addr = self.inner.addr;
        self.serve(async move {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await?;
            let port = socket.local_addr()?.port();
            let serve = async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(&buf[..n], peer).await;
                }
            };
            Ok((SocketAddr::new(IpAddr::V4(addr), port), serve))
        })
    }

    /// Binds with `setup` on this host's thread, then runs the server it returns there.
    fn serve<S, F>(&self, setup: S) -> Result<LabServer>
    where
        S: Future<Output = Result<(SocketAddr, F)>> + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let task = self.handle()?.spawn(async move {
            match setup.await {
                Ok((addr, serve)) => {
                    let _ = tx.send(Ok(addr));
                    serve.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let addr = rx.recv().context("the lab host's thread stopped")??;
        Ok(LabServer { addr, task })
    }

    /// Runs `f` on this host's thread, inside its namespace, and returns its result. Sockets
    /// it creates belong to the namespace; tasks it spawns run on the host's thread.
    pub fn block_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.handle()?.spawn(async move {
            let _ = tx.send(f());
        });
        rx.recv().context("the lab host's thread stopped")
    }

    /// Runs `fut` on this host's thread, inside its namespace.
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T> {
        Ok(self.handle()?.spawn(fut).await?)
    }

    /// The runtime on this host's thread.
    pub fn handle(&self) -> Result<tokio::runtime::Handle> {
        let thread = self.inner.thread.lock().unwrap_or_else(|p| p.into_inner());
        let t = thread.as_ref().with_context(|| format!("lab host {} is gone", self.name()))?;
        if std::thread::current().id() == t.id {
            bail!("called from lab host {}'s own thread", self.name());
        }
        Ok(t.handle.clone())
    }
}

/// A server running inside a lab host; dropping it stops it.
pub struct LabServer {
    /// The lab address and port it listens on.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LabServer {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A process started in a lab host; killed when dropped.
pub struct LabChild(pub std::process::Child);

impl Drop for LabChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for LabChild {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for LabChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A thread that joined a network namespace and runs a current-thread tokio runtime there
/// until dropped.
struct NsThread {
    handle: tokio::runtime::Handle,
    id: std::thread::ThreadId,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    fn start(ns: &str) -> Result<Self> {
        let path = format!("{NETNS_DIR}/{ns}");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name(format!("netns {ns}")).spawn(move || {
            let runtime = (|| -> Result<tokio::runtime::Runtime> {
                let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {path}"))?;
                Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
            })();
            match runtime {
                Ok(runtime) => {
                    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                    let _ = tx.send(Ok((runtime.handle().clone(), stop_tx)));
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                    // Dropping the runtime here cancels its tasks, closing their sockets.
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
        let id = thread.thread().id();
        let (handle, stop) = rx.recv().context("the namespace thread died")??;
        Ok(Self { handle, id, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether the calling thread is in the test process's own network namespace.
fn same_netns_as_process() -> Result<bool> {
    Ok(std::fs::read_link("/proc/thread-self/ns/net")? == std::fs::read_link("/proc/self/ns/net")?)
}

/// This process's effective uid ("?" if unreadable).
fn effective_uid() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            uid.split_whitespace().nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

/// Whether this process can build a lab (it runs as root).
pub fn is_root() -> bool {
    effective_uid() == "0"
}

/// Fails, saying why, unless this process can build a lab.
pub fn ensure_root() -> Result<()> {
    let euid = effective_uid();
    ensure!(
        euid == "0",
        "the network lab needs root (it creates network namespaces and veths), but this \
         process runs with effective uid {euid}: run the lab tests as root"
    );
    Ok(())
}

/// The lab namespaces of the process `pid` (`bwl-<pid>-...`), sorted.
pub fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("{NAME_PREFIX}{pid}-");
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

/// Removes the lab namespaces process `pid` left (killing what runs in them) and returns
/// their names: for a test whose lab-building child failed to clean up.
pub fn remove_namespaces_of(pid: u32) -> Vec<String> {
    let left = namespaces_of(pid);
    for ns in &left {
        if let Err(e) = delete_netns(ns) {
            eprintln!("lab: could not remove namespace {ns}: {e:#}");
        }
    }
    left
}

/// Kills what still runs in namespace `ns` (only ever a lab's own), then deletes it.
fn delete_netns(ns: &str) -> Result<()> {
    if !std::path::Path::new(NETNS_DIR).join(ns).exists() {
        return Ok(());
    }
    let me = std::process::id().to_string();
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if pid != me {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
    ip(&["netns", "delete", ns])
}

/// Deletes the namespaces of labs whose test process (the pid in the name) is gone.
fn remove_stale_labs() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return };
    let stale: BTreeSet<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let pid = name.strip_prefix(NAME_PREFIX).and_then(|rest| rest.split('-').next());
            match pid.and_then(|p| p.parse::<u32>().ok()) {
                Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
                None => false,
            }
        })
        .collect();
    for ns in stale {
        match delete_netns(&ns) {
            Ok(()) => eprintln!("lab: removed stale namespace {ns}"),
            Err(e) => eprintln!("lab: could not remove stale namespace {ns}: {e:#}"),
        }
    }
}

/// Whether a namespace of this name exists.
pub fn netns_exists(ns: &str) -> bool {
    std::path::Path::new(NETNS_DIR).join(ns).exists()
}
