//! `bulwarkctl bench`: write throughput and latency against a running cluster, and the
//! fsync latency of a disk (the floor under every durable commit).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::{Cli, CtlError};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Durable writes of fixed-size records through the leader, at several concurrencies.
    Put(PutArgs),
    /// Time to resolve the desired state of a synthetic fleet (offline, in this process):
    /// AGENTS agents over 20 label-selected segments, POLICIES policies of 5 rules each.
    Resolve {
        #[arg(long, default_value_t = 10_000)]
        agents: usize,
        #[arg(long, default_value_t = 50)]
        policies: usize,
    },
    /// Latency of write + fdatasync of 4 KiB to a file in DIR.
    Fsync {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
}

/// The put driver's flags: `bulwarkctl bench put` and the side-by-side `bulwark-raftbench`.
#[derive(Debug, Clone, clap::Args)]
pub struct PutArgs {
    /// Concurrent clients per round, comma-separated; one round each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub clients: Vec<usize>,
    /// How long each round writes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Bytes per record value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// TLS connections the clients of a round share (at most one per client).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Latency summary of one round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub clients: usize,
    pub connections: usize,
    pub writes: usize,
    pub errors: usize,
    /// The first failed write's error, to see why a round has errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub seconds: f64,
    pub writes_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Round {
    /// The column titles matching [`Round::row`].
    pub const HEADER: &'static str =
        " clients  conns    writes    writes/s    p50 ms    p99 ms    max ms  errors";

    /// The round as one table row.
    pub fn row(&self) -> String {
        format!(
            "{:>8} {:>6} {:>9} {:>11.0} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            self.clients,
            self.connections,
            self.writes,
            self.writes_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors
        )
    }
}

/// The value at quantile `q` of sorted samples, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// One durable write of a new key, as the put benchmark drives it: returns once the store
/// acknowledged the write. Bulwark's implementation is [`RecordPut`]; the integration
/// tests implement it for etcd, so both stores are measured by the same loop.
pub trait Put: Clone + Send + Sync + 'static {
    type Error: std::fmt::Display + Send + 'static;

    fn put(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Bulwark's put: a raw record (kind `bench`) through the admin client, which the node
/// acknowledges after the entry is on disk on a majority and applied.
#[derive(Clone)]
pub struct RecordPut(pub Client);

impl Put for RecordPut {
    type Error = crate::client::ClientError;

    async fn put(&self, key: String, value: Vec<u8>) -> Result<(), Self::Error> {
        self.0.put("bench", &key, value, None).await.map(|_| ())
    }
}

/// Why a round could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error("the round needs at least one connection")]
    NoConnection,
    #[error("warm-up write on connection {conn} failed: {message}")]
    WarmUp { conn: usize, message: String },
    #[error("a benchmark client task failed: {0}")]
    Task(String),
}

/// A key prefix no earlier run used (seconds since the epoch), so every run writes new keys
/// even against the same cluster.
pub fn run_prefix() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("run{secs}/")
}

/// One round: `clients` tasks share `conns` round-robin; each writes `value_size`-byte
/// values under new keys (`{prefix}{clients}/{task}/{n}`), one write at a time, until
/// `duration` has passed. Every connection writes once before the clock starts (so TLS
/// handshakes are not in the figures). A write counts when it was acknowledged; its
/// latency is from the call to the acknowledgement.
pub async fn put_round<P: Put>(
    conns: &[P],
    clients: usize,
    duration: Duration,
    value_size: usize,
    prefix: &str,
) -> Result<Round, RoundError> {
    if conns.is_empty() {
        return Err(RoundError::NoConnection);
    }
    let value: Vec<u8> = (0..value_size).map(|i| (i % 251) as u8).collect();
    for (conn, p) in conns.iter().enumerate() {
        p.put(format!("{prefix}{clients}/warm/{conn}"), value.clone())
            .await
            .map_err(|e| RoundError::WarmUp { conn, message: e.to_string() })?;
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let p = conns[i % conns.len()].clone();
            let value = value.clone();
            let prefix = format!("{prefix}{clients}/{i}/");
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut first_error = None;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match p.put(format!("{prefix}{n}"), value.clone()).await {
                        Ok(()) => lat.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                    n += 1;
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (lat, e, first) = t.await.map_err(|e| RoundError::Task(e.to_string()))?;
        all.extend(lat);
        errors += e;
        first_error = first_error.or(first);
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort();
    Ok(Round {
        clients,
        connections: conns.len(),
        writes: all.len(),
        errors,
        first_error,
        seconds,
        writes_per_sec: all.len() as f64 / seconds,
        p50_ms: quantile_ms(&all, 0.50),
        p99_ms: quantile_ms(&all, 0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    })
}

pub async fn run(cli: &Cli, cmd: &BenchCmd) -> Result<(), CtlError> {
    match cmd {
        BenchCmd::Put(PutArgs { clients, duration, value_size, connections, json }) => {
            let leader = leader_endpoint(cli).await?;
            println!(
                "bench put: {value_size}-byte values, {duration:?} per round, writes to leader {leader}"
            );
            println!("{}", Round::HEADER);
            let prefix = run_prefix();
            let mut rounds = Vec::new();
            for &c in clients {
                // Each connection is its own client (own TLS connection), pinned to the leader.
                let conns: Vec<RecordPut> = (0..(*connections).clamp(1, c.max(1)))
                    .map(|_| cli.client().map(|c| RecordPut(c.pinned(&leader))))
                    .collect::<Result<_, _>>()?;
                let round = put_round(&conns, c, *duration, *value_size, &prefix)
                    .await
                    .map_err(|e| CtlError::Io(e.to_string()))?;
                println!("{}", round.row());
                if let Some(e) = &round.first_error {
                    println!("         first error: {e}");
                }
                rounds.push(round);
            }
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&rounds).unwrap_or_default();
                std::fs::write(path, text)
                    .map_err(|e| CtlError::Io(format!("cannot write {}: {e}", path.display())))?;
            }
            Ok(())
        }
        BenchCmd::Resolve { agents, policies } => {
            resolve_fleet(*agents, *policies);
            Ok(())
        }
        BenchCmd::Fsync { dir, count } => {
            let (p50, p99) = fsync_latency(dir, *count)
                .map_err(|e| CtlError::Io(format!("fsync bench in {}: {e}", dir.display())))?;
            println!(
                "fsync of 4 KiB in {}: p50 {p50:.2} ms, p99 {p99:.2} ms ({count} samples)",
                dir.display()
            );
            Ok(())
        }
    }
}

/// The address to reach the leader at: the given endpoint that answers as the leader (so
/// forwarded or NATed endpoints work), else the leader's member address.
async fn leader_endpoint(cli: &Cli) -> Result<String, CtlError> {
    let base = cli.client()?;
    for endpoint in base.endpoints() {
        if let Ok(s) = base.pinned(endpoint).with_retry_for(Duration::ZERO).status().await
            && s.leader_id != 0
            && s.node_id == s.leader_id
        {
            return Ok(endpoint.clone());
        }
    }
    let status = base.status().await?;
    status
        .members
        .iter()
        .find(|m| m.id == status.leader_id)
        .map(|m| m.addr.clone())
        .ok_or_else(|| CtlError::Usage("the cluster has no leader".into()))
}

/// A synthetic fleet: `agents` agents in 20 roles, 20 segments (one per role), 10
/// services, and `policies` policies of 5 rules each, every policy selecting one role.
pub fn synthetic_fleet(
    agents: usize,
    policies: usize,
) -> (Vec<crate::policy::Document>, Vec<crate::security::AgentEntry>) {
    use std::collections::BTreeMap;

    use crate::policy::model::*;
    let label = |i: usize| BTreeMap::from([("role".to_owned(), format!("role-{}", i % 20))]);
    let mut docs = Vec::new();
    for i in 0..20 {
        let selector = Some(Selector { match_labels: label(i) });
        docs.push(Document::Segment(Segment {
            name: format!("seg-{i}"),
            cidrs: Vec::new(),
            selector,
        }));
    }
    for i in 0..10 {
        let port =
            PortRange { protocol: Protocol::Tcp, first: 1000 + i as u16, last: 1000 + i as u16 };
        docs.push(Document::Service(Service { name: format!("svc-{i}"), ports: vec![port] }));
    }
    for i in 0..policies {
        let rules = (0..5)
            .map(|r| FirewallRule {
                action: Action::Allow,
                direction: if r % 2 == 0 { Direction::Outbound } else { Direction::Inbound },
                peers: vec![format!("seg-{}", (i + r + 1) % 20)],
                services: vec![format!("svc-{}", (i + r) % 10)],
                interface: InterfaceKind::Any,
                log: false,
                failsafe: false,
            })
            .collect();
        docs.push(Document::Policy(Box::new(Policy {
            name: format!("policy-{i:03}"),
            selector: Selector { match_labels: label(i) },
            priority: (i % 7) as i32 * 10,
            mode: Mode::Enforce,
            firewall: Some(Firewall {
                default_inbound: Some(Action::Deny),
                default_outbound: None,
                rules,
                log_rate_per_minute: 60,
            }),
            wireless: None,
            passwords: None,
            users: None,
            logins: None,
            annotations: Annotations::default(),
        })));
    }
    let fleet = (0..agents)
        .map(|i| {
            let agent = crate::security::AgentRecord {
                id: format!("agt-{i:05}"),
                hostname: format!("host-{i}"),
                os: String::new(),
                addresses: vec![format!("198.18.{}.{}", (i / 250) % 250, i % 250 + 1)],
                mac: String::new(),
                labels: label(i),
                enrolled_at: 0,
                cert_not_after: 0,
                token_id: String::new(),
                released_accounts: Default::default(),
            };
            (agent, None, i as u64 + 1)
        })
        .collect();
    (docs, fleet)
}

fn resolve_fleet(agents: usize, policies: usize) {
    use crate::policy::resolve::{Inputs, SegmentIndex, resolve_with};
    let (docs, fleet) = synthetic_fleet(agents, policies);
    let inputs = Inputs { documents: &docs, agents: &fleet, documents_revision: 1 };
    let started = Instant::now();
    let index = SegmentIndex::new(&inputs);
    let indexed = started.elapsed();
    let mut rules = 0usize;
    let mut addresses = 0usize;
    for (agent, _, rev) in &fleet {
        let r = resolve_with(&inputs, &index, agent, *rev);
        for rule in r.firewall.iter().flat_map(|f| &f.rules) {
            rules += 1;
            addresses += rule.peers.as_ref().map_or(0, Vec::len);
        }
    }
    let took = started.elapsed();
    println!(
        "resolved {agents} agents x {policies} policies in {:.2} s: segment index {:.1} ms, then {:.3} ms per agent ({rules} rules, {addresses} addresses in all)",
        took.as_secs_f64(),
        indexed.as_secs_f64() * 1e3,
        (took - indexed).as_secs_f64() * 1e3 / agents.max(1) as f64
    );
    incremental(docs, fleet);
}

/// The per-node resolver on the same fleet: its full load, then (a) one agent enrolling
/// into the most referenced segment, (b) one policy changing; each time only the agents
/// it reports affected are resolved again.
fn incremental(docs: Vec<crate::policy::Document>, fleet: Vec<crate::security::AgentEntry>) {
    use crate::policy::Document;
    use std::collections::BTreeMap;

    use crate::policy::model::*;
    use crate::policy::resolver::{Affected, Core, Sources};
    // Half the fleet (label half=0) talks to a PACS segment (role=pacs, empty so far).
    let mut fleet = fleet;
    for (i, (a, _, _)) in fleet.iter_mut().enumerate() {
        a.labels.insert("half".into(), (i % 2).to_string());
    }
    let mut docs = docs;
    let pacs = BTreeMap::from([("role".to_owned(), "pacs".to_owned())]);
    docs.push(Document::Segment(Segment {
        name: "seg-pacs".into(),
        cidrs: Vec::new(),
        selector: Some(Selector { match_labels: pacs.clone() }),
    }));
    docs.push(Document::Policy(Box::new(Policy {
        name: "pacs-clients".into(),
        selector: Selector { match_labels: BTreeMap::from([("half".into(), "0".into())]) },
        priority: 0,
        mode: Mode::Enforce,
        firewall: Some(Firewall {
            default_inbound: None,
            default_outbound: None,
            rules: vec![FirewallRule {
                action: Action::Allow,
                direction: Direction::Outbound,
                peers: vec!["seg-pacs".into()],
                services: vec!["svc-0".into()],
                interface: InterfaceKind::Any,
                log: false,
                failsafe: false,
            }],
            log_rate_per_minute: 60,
        }),
        wireless: None,
        passwords: None,
        users: None,
        logins: None,
        annotations: Annotations::default(),
    })));
    let total = fleet.len();
    let mut revision = fleet.iter().map(|e| e.2).max().unwrap_or(0) + 1;
    let started = Instant::now();
    let mut core =
        Core::new(Sources::plain(docs.iter().map(|d| (d.clone(), 1)).collect(), 1), fleet);
    println!(
        "incremental resolver: load of {total} agents in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let recompute = |core: &Core, affected: &Affected| -> usize {
        let ids: Vec<String> = if affected.all {
            core.ids().cloned().collect()
        } else {
            affected.ids.iter().cloned().collect()
        };
        ids.iter().filter_map(|id| core.resolve(id)).count()
    };
    // (a) A new PACS host enrols: the 5,000 agents of half=0 refer to its segment.
    let agent = crate::security::AgentRecord {
        id: "agt-new".into(),
        hostname: "host-new".into(),
        os: String::new(),
        addresses: vec!["198.19.0.1".into()],
        mac: String::new(),
        labels: pacs,
        enrolled_at: 0,
        cert_not_after: 0,
        token_id: String::new(),
        released_accounts: Default::default(),
    };
    let t = Instant::now();
    let affected = core.set_agent("agt-new", Some((agent, None, revision)));
    let n = recompute(&core, &affected);
    println!(
        "  (a) one agent enrols into a segment {} agents refer to: {n} of {} agents recomputed in {:.1} ms",
        total / 2,
        total + 1,
        t.elapsed().as_secs_f64() * 1e3
    );
    revision += 1;
    // (b) One policy changes: its first rule allows one more service.
    let mut changed = docs.clone();
    if let Some(Document::Policy(p)) = changed.iter_mut().find(|d| matches!(d, Document::Policy(_)))
        && let Some(rule) = p.firewall.as_mut().and_then(|f| f.rules.first_mut())
    {
        rule.services.push("svc-9".into());
    }
    let revs: Vec<(Document, u64)> = changed
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), if d != &docs[i] { revision } else { 1 }))
        .collect();
    let t = Instant::now();
    let affected = core.set_sources(Sources::plain(revs, 1));
    let n = recompute(&core, &affected);
    println!(
        "  (b) one policy changes: {n} of {} agents recomputed in {:.1} ms",
        total + 1,
        t.elapsed().as_secs_f64() * 1e3
    );
}

/// Writes 4 KiB and fdatasyncs it `count` times; returns (p50, p99) in ms.
pub fn fsync_latency(dir: &std::path::Path, count: usize) -> std::io::Result<(f64, f64)> {
    let path = dir.join(format!(".bulwark-fsync-bench-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        let block = [0x5au8; 4096];
        let mut lat = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            f.write_all(&block)?;
            f.sync_data()?;
            lat.push(t.elapsed());
        }
        lat.sort();
        Ok((quantile_ms(&lat, 0.5), quantile_ms(&lat, 0.99)))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect::<Vec<_>>();
        let s = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(quantile_ms(&s, 0.5), 5.0);
        assert_eq!(quantile_ms(&s, 0.99), 10.0);
        assert_eq!(quantile_ms(&ms(&[7]), 0.5), 7.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }
}
