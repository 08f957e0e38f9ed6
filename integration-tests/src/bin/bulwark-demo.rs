//! `bulwark-demo`: the whole system on its embedded defaults, on this machine only.
//!
//! Generates a cluster CA, starts three controllers (as root: each in a lab network
//! namespace on 198.18.0.0/16; else on 127.0.0.1) with data in a temp dir, forms a Raft
//! cluster, writes records, kills the leader and shows the cluster carry on, applies the
//! radiology policy pack, then starts real agents for a CT scanner, a PACS, a reading
//! workstation and a print server, each in its own namespace with its own host root: the
//! fleet table, real traffic allowed and dropped, drift repaired, a new PACS reachable with
//! no admin action. Without root, one agent runs with `--dry-run` and prints the ruleset it
//! would apply. It stays up with the exact commands to explore until Ctrl-C, SIGTERM or
//! SIGHUP, and removes every namespace and file on the way out; a signal during the
//! walkthrough stops it the same way.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bulwark_controller::client::ReadMode;
use bulwark_controller::ctl::print_status;
use std::net::Ipv4Addr;

use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::cluster::bin_dir;
use bulwark_integration_tests::ctl::bulwarkctl;
use bulwark_integration_tests::netlab::{Lab, Outcome, is_root};
use bulwark_integration_tests::{Cluster, ClusterOptions, eventually};
use bulwark_proto::v1 as pb;
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Runs a local three-node Bulwark controller cluster and shows what it does.
#[derive(Debug, Parser)]
#[command(name = "bulwark-demo", version)]
struct Args {
    /// Exit after the walkthrough instead of waiting for Ctrl-C, SIGTERM or SIGHUP.
    #[arg(long)]
    no_wait: bool,
}

fn step(text: &str) {
    println!("\n==> {text}");
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    // Listening before anything is created: from here on these signals no longer kill the
    // process, they end the walkthrough below.
    let mut stop = StopSignals::listen()?;
    let mut walkthrough = Box::pin(walkthrough(args));
    let signal = tokio::select! {
        done = &mut walkthrough => return done,
        signal = stop.recv() => signal,
    };
    // Written without println!: after SIGHUP the terminal may be gone, and cleanup must
    // still run.
    let _ = writeln!(
        std::io::stdout(),
        "\n==> {signal}: stopping the agents and the cluster, removing every namespace and file"
    );
    // The walkthrough owns the lab, the cluster and the agents (Drop guards): dropping it
    // kills every process and deletes every namespace and temp dir, wherever it was.
    drop(walkthrough);
    Ok(())
}

/// The signals that stop the demo: Ctrl-C (SIGINT), SIGTERM (`kill`, `timeout`, systemd)
/// and SIGHUP (the terminal closed).
struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    fn listen() -> Result<Self> {
        let listen = |kind| signal(kind).context("listening for signals");
        Ok(Self {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    /// The name of the next signal received.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Everything the demo shows. Returns with `--no-wait`; otherwise it waits for `main` to
/// stop it on a signal.
async fn walkthrough(args: Args) -> Result<()> {
    let lab = if is_root() {
        match Lab::new() {
            Ok(lab) => Some(lab),
            Err(e) => {
                println!("(no network lab: {e:#}; running without host enforcement)");
                None
            }
        }
    } else {
        None
    };
    let options = ClusterOptions { log: "warn", lab: lab.clone(), ..Default::default() };

    step("Generating a cluster CA, controller and admin certificates (ECDSA P-256)");
    let mut cluster = Cluster::empty(options)?;
    println!("    in {}", cluster.dir().display());

    let place = if lab.is_some() { "in lab namespaces c1-c3" } else { "on 127.0.0.1" };
    step(&format!("Starting three controllers {place} and forming a Raft cluster"));
    for id in 1..=3 {
        cluster.spawn(id)?;
        println!("    node {id} listening on {}", cluster.member_addr(id));
    }
    let leader = cluster.init(&[1, 2, 3]).await?;
    println!("    node {leader} was elected leader");
    let client = cluster.client()?;
    print_status(&client, false).await?;

    step("Writing 1,000 records through all three nodes (followers forward to the leader)");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..16u64 {
        let c = cluster.node_client(lane % 3 + 1)?;
        tasks.spawn(async move {
            for i in (lane..1000).step_by(16) {
                c.put("policy", &format!("demo-{i:04}"), format!("value {i}").into_bytes(), None)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let took = started.elapsed();
    println!(
        "    1,000 durable writes in {:.2} s ({:.0} writes/s); every node applies them at the same revisions",
        took.as_secs_f64(),
        1000.0 / took.as_secs_f64()
    );

    step(&format!("Killing the leader (node {leader}) with SIGKILL, then writing again"));
    cluster.kill(leader)?;
    let killed = Instant::now();
    client.put("policy", "after-failover", b"still writable".to_vec(), None).await?;
    println!(
        "    a new leader acknowledged a write {} ms after the kill",
        killed.elapsed().as_millis()
    );
    let new_leader = cluster.wait_for_leader(Duration::from_secs(10)).await?;
    println!("    node {new_leader} leads now");
    print_status(&client, false).await?;

    step(&format!("Restarting node {leader}: it rejoins and catches up from its own disk"));
    cluster.restart(leader)?;
    let revision = client.list("", ReadMode::Linearizable).await?.revision;
    let back = cluster.node_client(leader)?;
    eventually("the restarted node to catch up", Duration::from_secs(20), || {
        let back = back.clone();
        async move {
            let r = back.list("", ReadMode::Stale).await?.revision;
            anyhow::ensure!(r >= revision, "at revision {r}");
            Ok(())
        }
    })
    .await?;
    println!("    node {leader} is at revision {revision} like the others");
    print_status(&client, false).await?;

    step("Applying the radiology policy pack (policies/): validated, then stored at one revision");
    let pack_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let pack = bulwark_controller::policy::read_paths(&[pack_dir]).map_err(anyhow::Error::msg)?;
    let applied = client.apply_policies(pack, false).await?;
    println!("    {} documents stored at revision {}", applied.changes.len(), applied.revision);

    let labels = |role: &str| [("role".to_owned(), role.to_owned())].into_iter().collect();
    let ttl = Duration::from_secs(3600);
    let mut agents = Vec::new();
    match &lab {
        Some(lab) => {
            step("Starting agents in their own network namespaces (198.18.0.0/16, no route out)");
            let hosts = [
                ("ct-scanner-1", [198, 18, 10, 5], "modality"),
                ("pacs-1", [198, 18, 20, 5], "pacs"),
                ("reading-ws-1", [198, 18, 30, 5], "reading-workstation"),
                ("print-1", [198, 18, 50, 5], "print-server"),
            ];
            for (name, ip, role) in hosts {
                let host = lab.host(name, Ipv4Addr::from(ip))?;
                let token = client.create_token(labels(role), ttl, 1).await?.token;
                let agent =
                    AgentProc::start_on_host_with_accounts(&cluster, &host, &token, &[]).await?;
                println!(
                    "    {name:<13} {:<13} role={role:<20} agent {} (enrolled with a token; its key never left the host)",
                    host.addr(),
                    agent.id
                );
                agents.push(agent);
            }
            let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
            eventually("every agent online and compliant", Duration::from_secs(60), || async {
                let listed = client.list_agents().await?.agents;
                for id in &ids {
                    let a = listed.iter().find(|a| &a.id == id).context("not listed")?;
                    let compliant = a.enforcers.iter().any(|e| {
                        e.enforcer == "firewall" && e.state == pb::EnforcerState::Compliant as i32
                    });
                    anyhow::ensure!(
                        a.online && a.applied_revision == a.desired_revision && compliant
                    );
                }
                Ok(())
            })
            .await?;

            step("The fleet: every agent online, on its desired revision, compliant");
            ctl(&cluster, &["agents", "list"]).await?;

            step("The CT scanner's ruleset, as nft shows it in its namespace (table inet bulwark)");
            let ct = &agents[0];
            let ruleset = ct.nft(&["list", "chain", "inet", "bulwark", "output"])?;
            for line in ruleset.lines().filter(|l| l.contains("comment")) {
                println!("    {}", line.trim());
            }

            step("Segmentation on real traffic");
            let (ct_host, pacs_host, ws_host) =
                (agents[0].host.clone(), agents[1].host.clone(), agents[2].host.clone());
            let print_host = agents[3].host.clone();
            let _dicom = pacs_host.listen_tcp(104)?;
            let _ssh = ct_host.listen_tcp(22)?;
            let _ipp = print_host.listen_tcp(631)?;
            let _jetdirect = pacs_host.listen_tcp(9100)?;
            let short = Duration::from_millis(700);
            let dicom = lab.connect_tcp(&ct_host, pacs_host.addr(), 104, short).await?;
            println!(
                "    ct-scanner-1 -> pacs-1:104 (DICOM)        {dicom:?}  (allowed: modalities reach PACS)"
            );
            let ssh = lab.connect_tcp(&ws_host, ct_host.addr(), 22, short).await?;
            println!(
                "    reading-ws-1 -> ct-scanner-1:22 (SSH)     {ssh:?}  (dropped: SSH only from jump hosts)"
            );
            let ipp = lab.connect_tcp(&ws_host, print_host.addr(), 631, short).await?;
            println!(
                "    reading-ws-1 -> print-1:631 (IPP)         {ipp:?}  (allowed: printing goes to print servers)"
            );
            let print = lab.connect_tcp(&ct_host, pacs_host.addr(), 9100, short).await?;
            println!(
                "    ct-scanner-1 -> pacs-1:9100 (JetDirect)   {print:?}  (dropped on the way out: print ports only to print servers)"
            );

            step("Drift: someone runs `nft flush table inet bulwark` on the scanner");
            let rules = ct.bulwark_rules();
            let started = Instant::now();
            ct.nft(&["flush", "table", "inet", "bulwark"])?;
            eventually("the table repaired", Duration::from_secs(10), || async {
                anyhow::ensure!(ct.bulwark_rules() == rules);
                Ok(())
            })
            .await?;
            println!(
                "    repaired in {} ms (nft monitor event -> observe -> one atomic re-apply)",
                started.elapsed().as_millis()
            );
            eventually("the drift event", Duration::from_secs(10), || async {
                let shown = client.show_agent(&ct.id, 5).await?;
                anyhow::ensure!(shown.events.iter().any(|e| e.kind == "drift-repaired"));
                Ok(())
            })
            .await?;
            ctl(&cluster, &["agents", "show", &ct.id, "--events", "3"]).await?;

            step("Someone adds a local account on the scanner (useradd): an alert within a second");
            let root = ct.root.display().to_string();
            let started = Instant::now();
            let out = std::process::Command::new("useradd")
                .args(["--prefix", &root, "-M", "-s", "/bin/bash", "service-tech"])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "useradd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            eventually("the user-added event", Duration::from_secs(10), || async {
                let events = client
                    .list_events(pb::ListEventsRequest {
                        kinds: vec!["user-added".into()],
                        ..Default::default()
                    })
                    .await?;
                anyhow::ensure!(!events.events.is_empty(), "not yet");
                Ok(())
            })
            .await?;
            println!(
                "    committed at the controller {} ms after useradd returned",
                started.elapsed().as_millis()
            );
            ctl(&cluster, &["events", "--kind", "user-added"]).await?;

            step("A second PACS server enrolls: the scanner's firewall follows, no admin action");
            let pacs2 = lab.host("pacs-2", Ipv4Addr::new(198, 18, 20, 6))?;
            let _dicom2 = pacs2.listen_tcp(104)?;
            let token = client.create_token(labels("pacs"), ttl, 1).await?.token;
            agents
                .push(AgentProc::start_on_host_with_accounts(&cluster, &pacs2, &token, &[]).await?);
            let started = Instant::now();
            eventually("the scanner reaches pacs-2", Duration::from_secs(30), || async {
                let o = lab.connect_tcp(&ct_host, pacs2.addr(), 104, short).await?;
                anyhow::ensure!(o == Outcome::Accepted, "{o:?}");
                Ok(())
            })
            .await?;
            println!(
                "    ct-scanner-1 -> pacs-2:104 Accepted {} ms after pacs-2 started enrolling",
                started.elapsed().as_millis()
            );
            // The report judges what agents reported: wait until pacs-2 has reported every
            // enforcer at its desired revision, like the others.
            eventually("every agent reported", Duration::from_secs(60), || async {
                for a in client.list_agents().await?.agents {
                    anyhow::ensure!(
                        a.online
                            && a.applied_revision == a.desired_revision
                            && a.enforcers.len() >= 5,
                        "{} has not reported everything yet",
                        a.hostname
                    );
                }
                Ok(())
            })
            .await?;
        }
        None => {
            step("Not root: no network namespaces, so one agent runs with --dry-run on this host");
            let token = client.create_token(labels("modality"), ttl, 1).await?.token;
            let dry = DryRunAgent::start(&cluster, &token)?;
            eventually("the dry-run plan", Duration::from_secs(30), || async {
                anyhow::ensure!(dry.output().contains("table inet bulwark"), "no plan yet");
                Ok(())
            })
            .await?;
            println!("    the ruleset a modality would get (nothing was changed):");
            for line in dry.output().lines().skip_while(|l| !l.contains("would apply")) {
                println!("    {line}");
            }
        }
    }

    step("Every mutating admin call is in the audit log");
    let audit = client.list_audit(pb::ListAuditRequest::default()).await?;
    for e in audit.iter().rev().take(4).rev() {
        println!("    {} {} {} {}", e.who, e.method, e.code, e.target);
    }

    step("Evidence for the auditor: the compliance report (HTML here; -o json|csv too)");
    let report = cluster.dir().join("compliance.html");
    ctl(&cluster, &["report", "compliance", "--out", &report.display().to_string()]).await?;
    let endpoints = [1, 2, 3].map(|id| cluster.addr(id)).join(",");
    let csv =
        bulwarkctl(&endpoints, &cluster.admin, &["report", "compliance", "-o", "csv"]).await?;
    println!("    what is not met, and why (from -o csv):");
    let not_met: Vec<&str> = csv.stdout.lines().filter(|l| l.contains(",not-met,")).collect();
    for line in not_met.iter().take(8) {
        println!("    {line}");
    }
    if not_met.is_empty() {
        println!("    (nothing: the repaired scanner counts as meeting its controls)");
    }

    let endpoints = [1, 2, 3].map(|id| cluster.addr(id)).join(",");
    let ctl = bin_dir()?.join("bulwarkctl");
    let _keep = &agents;
    step("The cluster is yours to explore. In another shell:");
    println!("    export BULWARK_ENDPOINTS={endpoints}");
    println!("    export BULWARK_TLS_CA={}", cluster.admin.ca.display());
    println!("    export BULWARK_TLS_CERT={}", cluster.admin.cert.display());
    println!("    export BULWARK_TLS_KEY={}", cluster.admin.key.display());
    println!("    {} cluster status", ctl.display());
    println!("    {} record list policy", ctl.display());
    println!("    {} record watch policy --after {revision}", ctl.display());
    println!("    {} policy list", ctl.display());
    println!("    {} agents list", ctl.display());
    println!("    {} logins report --since 1h", ctl.display());
    println!("    {} console    # the web console, http://127.0.0.1:8080", ctl.display());
    println!("    {} audit --since 1h", ctl.display());
    println!("    {} bench put --clients 1,16 --duration 3s", ctl.display());
    if args.no_wait {
        step("Done (--no-wait); stopping the cluster and removing its files");
        return Ok(());
    }
    println!(
        "\nPress Ctrl-C to stop the cluster and remove its files (SIGTERM and SIGHUP do the same)."
    );
    // `main` drops this future on a signal, and with it everything above.
    std::future::pending().await
}

/// Runs the real `bulwarkctl` against the cluster and prints its output, indented.
async fn ctl(cluster: &Cluster, args: &[&str]) -> Result<()> {
    let endpoints = [1, 2, 3].map(|id| cluster.addr(id)).join(",");
    let out = bulwarkctl(&endpoints, &cluster.admin, args).await?;
    anyhow::ensure!(out.ok, "bulwarkctl {}: {}", args.join(" "), out.stderr);
    println!("    $ bulwarkctl {}", args.join(" "));
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        println!("    {line}");
    }
    Ok(())
}

/// Without root: one real agent on this host with `--dry-run` (it changes nothing and
/// prints the ruleset it would apply).
struct DryRunAgent {
    child: std::process::Child,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DryRunAgent {
    fn start(cluster: &Cluster, token: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("bulwark-demo-agent-").tempdir()?;
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("etc/hostname"), "ct-scanner-1\n")?;
        let agent = bin_dir()?.join("bulwark-agent");
        let common = |cmd: &mut std::process::Command| {
            cmd.arg("--state-dir").arg(&state).arg("--root").arg(&root);
        };
        let mut enroll = std::process::Command::new(&agent);
        common(&mut enroll);
        let urls = cluster.controller_urls().join(",");
        let ca = cluster.admin.ca.display().to_string();
        let out = enroll
            .args(["enroll", "--controller", &urls, "--ca", &ca, "--token", token])
            .output()?;
        anyhow::ensure!(out.status.success(), "enroll: {}", String::from_utf8_lossy(&out.stderr));
        let log = dir.path().join("agent.out");
        let mut run = std::process::Command::new(&agent);
        common(&mut run);
        let child = run
            .args(["run", "--dry-run"])
            .env("BULWARK_LOG", "warn")
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self { child, out: log, _dir: dir })
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for DryRunAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
