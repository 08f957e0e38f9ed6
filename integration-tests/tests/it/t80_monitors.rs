//! Monitors with real tools in the lab: accounts made by the real shadow-utils
//! (`useradd --prefix`, `usermod --prefix -aG sudo`) on an agent's host root raise
//! `user-added` and `privileged-group-added` at the controller (with the file change to
//! committed event latency measured); a real `sshd` in a lab host, logging into the agent
//! root's auth log, sees 5 failed and 1 accepted password logins by the real ssh client
//! from another lab host, which arrive as exactly 6 `login` events and one `brute-force`;
//! 1,000 login lines written while every controller is down arrive exactly once; and with
//! `action: lock` an unexpected account is locked and `bulwark-agent users unlock` opens it.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::Client;
use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::cluster::workspace_bin;
use bulwark_integration_tests::ctl::bulwarkctl_in;
use bulwark_integration_tests::netlab::{Lab, LabHost};
use bulwark_integration_tests::wait::next_event_for_user;
use bulwark_integration_tests::{Cluster, eventually};
use bulwark_proto::v1 as pb;

/// Users and logins only (no firewall: the lab's ssh must pass), threshold 5 in 300 s.
const POLICY: &str = "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: monitors}
spec:
  selector: {}
  priority: 10
  users:
    alertNewUsers: true
    privilegedGroups: [sudo, adm, wheel]
    action: alert
  logins:
    record: true
    bruteForceThreshold: 5
    bruteForceWindowSeconds: 300
";

async fn token(admin: &Client) -> Result<String> {
    let labels: HashMap<String, String> = [("role".to_owned(), "workstation".to_owned())].into();
    Ok(admin.create_token(labels, Duration::from_secs(600), 5).await?.token)
}

/// Every stored event of `kinds` from `agent`, paging with `next`.
async fn events(admin: &Client, agent: &str, kinds: &[&str]) -> Result<Vec<pb::AgentEvent>> {
    let mut req = pb::ListEventsRequest {
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        agent_id: agent.to_owned(),
        limit: 300,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let reply = admin.list_events(req.clone()).await?;
        out.extend(reply.events.into_iter().filter_map(|e| e.event));
        if reply.next.is_empty() {
            return Ok(out);
        }
        req.after = reply.next;
    }
}

/// The agent's monitor `name` is reported compliant at the controller.
async fn monitoring(admin: &Client, agent: &str, name: &str) -> Result<()> {
    eventually(&format!("the {name} monitor running"), Duration::from_secs(30), || async {
        let agents = admin.list_agents().await?.agents;
        let a = agents.iter().find(|a| a.id == agent).context("agent not listed")?;
        let m = a.enforcers.iter().find(|e| e.enforcer == name);
        ensure!(m.is_some_and(|m| m.state == pb::EnforcerState::Compliant as i32), "{name}: {m:?}");
        Ok(())
    })
    .await
}

fn sh(host: Option<&LabHost>, script: &str) -> Result<String> {
    let out = match host {
        Some(h) => h.command("sh").args(["-c", script]).output()?,
        None => std::process::Command::new("sh").args(["-c", script]).output()?,
    };
    ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn need(tool: &str, package: &str) -> Result<()> {
    ensure!(
        sh(None, &format!("command -v {tool}")).is_ok(),
        "{tool} is missing: install the package {package}"
    );
    Ok(())
}

/// A lab host root with the machine's account files, as `useradd --prefix` needs.
fn seed_accounts(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("var/log"))?;
    for f in ["passwd", "group", "shadow", "gshadow", "login.defs"] {
        std::fs::copy(Path::new("/etc").join(f), root.join("etc").join(f))
            .with_context(|| format!("copying /etc/{f}"))?;
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_useradd_and_real_sshd_logins_reach_the_controller() -> Result<()> {
    for (tool, package) in [
        ("sshd", "openssh-server"),
        ("ssh", "openssh-client"),
        ("sshpass", "sshpass"),
        ("useradd", "passwd"),
        ("openssl", "openssl"),
        ("unshare", "util-linux"),
    ] {
        need(tool, package)?;
    }
    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 1).await?;
    let admin = cluster.client()?;
    admin.apply_policies(vec![("monitors.yaml".into(), POLICY.into())], false).await?;
    let ws = lab.host("ws1", Ipv4Addr::new(198, 18, 50, 5))?;
    let intruder = lab.host("x1", Ipv4Addr::new(198, 18, 50, 9))?;
    let agent = AgentProc::start(
        &cluster,
        &ws,
        &token(&admin).await?,
        &[
            "--auth-log={root}/var/log/auth.log",
            "--btmp={root}/var/log/btmp",
            "--wtmp={root}/var/log/wtmp",
        ],
    )
    .await?;
    let root = agent.root.clone();
    let prefix = root.display().to_string();
    seed_accounts(&root)?;
    monitoring(&admin, &agent.id, "users").await?;
    monitoring(&admin, &agent.id, "logins").await?;

    // Accounts: each useradd timed from the moment it returned (the files are changed) to
    // its event arriving on a FollowEvents stream, which serves committed events only.
    let mut follow = admin
        .follow_events(pb::ListEventsRequest {
            kinds: vec!["user-added".into()],
            agent_id: agent.id.clone(),
            ..Default::default()
        })
        .await?;
    let mut latencies = Vec::new();
    for i in 0..50 {
        let name = format!("lab{i}");
        sh(None, &format!("useradd --prefix {prefix} {name}"))?;
        let changed = Instant::now();
        next_event_for_user(&mut follow, &name).await?;
        latencies.push(changed.elapsed());
    }
    latencies.sort();
    eprintln!(
        "BENCH users: /etc/passwd changed -> user-added committed at the controller: \
         p50 {:?}, p99 {:?}, max {:?} (n={})",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies[latencies.len() - 1],
        latencies.len()
    );
    // The target is 500 ms (BENCHMARKS.md); the test allows for a loaded CI machine.
    ensure!(pct(&latencies, 0.5) < Duration::from_secs(1), "far off the target: {latencies:?}");

    sh(None, &format!("useradd --prefix {prefix} -m -s /bin/sh rad"))?;
    sh(None, &format!("usermod --prefix {prefix} -p \"$(openssl passwd -6 s3cret-PW)\" rad"))?;
    sh(None, &format!("usermod --prefix {prefix} -aG sudo rad"))?;
    eventually("rad added, and to sudo", Duration::from_secs(10), || async {
        let ev = events(&admin, &agent.id, &["user-added", "privileged-group-added"]).await?;
        let rad = |kind: &str| {
            ev.iter()
                .any(|e| e.kind == kind && e.fields.get("user").map(String::as_str) == Some("rad"))
        };
        ensure!(rad("user-added") && rad("privileged-group-added"), "{ev:?}");
        let group = ev.iter().find(|e| e.kind == "privileged-group-added").context("none")?;
        ensure!(group.fields["group"] == "sudo" && group.enforcer == "users", "{group:?}");
        Ok(())
    })
    .await?;

    // A real sshd in ws1, with the lab root's accounts and /var/log bind-mounted in a
    // private mount namespace, logging into the agent root's auth log and writing its
    // btmp and wtmp records there (sshd appends to btmp only when it exists, root-owned,
    // not group- or world-accessible).
    let (btmp, wtmp) = (root.join("var/log/btmp"), root.join("var/log/wtmp"));
    for (f, mode) in [(&btmp, 0o600), (&wtmp, 0o664)] {
        std::fs::write(f, b"")?;
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    let ssh_dir = agent.dir().join("sshd");
    std::fs::create_dir_all(&ssh_dir)?;
    let d = ssh_dir.display();
    sh(None, &format!("ssh-keygen -q -t ed25519 -N '' -f {d}/host_key"))?;
    let log = root.join("var/log/auth.log");
    std::fs::write(
        ssh_dir.join("sshd_config"),
        format!(
            "ListenAddress {}\nPort 22\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nUsePAM no\n\
             PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n\
             PermitRootLogin no\nStrictModes no\nLogLevel INFO\nMaxStartups 50\n",
            ws.addr()
        ),
    )?;
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && \
         mount --bind {prefix}/etc/passwd /etc/passwd && \
         mount --bind {prefix}/etc/shadow /etc/shadow && \
         mount --bind {prefix}/etc/group /etc/group && \
         mount --bind {prefix}/var/log /var/log && \
         exec /usr/sbin/sshd -D -E {} -f {d}/sshd_config",
        log.display()
    );
    let _sshd = ws.spawn("unshare", &["-m", "--propagation", "private", "sh", "-c", &script])?;
    eventually("sshd listening", Duration::from_secs(10), || async {
        ensure!(
            std::fs::read_to_string(&log).unwrap_or_default().contains("Server listening"),
            "no 'Server listening' in {}",
            log.display()
        );
        Ok(())
    })
    .await?;
    // The successful login asks for a terminal (-tt), so sshd records a wtmp session.
    let ssh = |password: &str, tty: &str| {
        format!(
            "sshpass -p '{password}' ssh -F /dev/null -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=password \
             -o PubkeyAuthentication=no -o NumberOfPasswordPrompts=1 -o ConnectTimeout=5 \
             {tty} rad@{} true",
            ws.addr()
        )
    };
    for _ in 0..5 {
        ensure!(sh(Some(&intruder), &ssh("wrong", "")).is_err(), "a wrong password logged in");
    }
    sh(Some(&intruder), &ssh("s3cret-PW", "-tt")).context("the right password")?;

    let logins =
        eventually("6 logins and a brute-force alert", Duration::from_secs(20), || async {
            let ev = events(&admin, &agent.id, &["login", "brute-force"]).await?;
            let logins: Vec<_> = ev.iter().filter(|e| e.kind == "login").cloned().collect();
            ensure!(
                logins.len() >= 6 && ev.iter().any(|e| e.kind == "brute-force"),
                "{} logins so far; log:\n{}",
                logins.len(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            Ok(ev)
        })
        .await?;
    // sshd wrote a btmp record per failure and a wtmp session: the same attempts, which
    // must not come twice. Settle past the records' hold: nothing more may come.
    let records = |f: &Path| std::fs::metadata(f).map(|m| m.len() / 384).unwrap_or(0);
    ensure!(records(&btmp) == 5, "btmp holds {} records, want 5", records(&btmp));
    ensure!(records(&wtmp) >= 1, "no wtmp record of the session");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let all = events(&admin, &agent.id, &["login", "brute-force"]).await?;
    ensure!(all.len() == logins.len(), "more events after settling: {all:#?}");
    let logins: Vec<_> = all.iter().filter(|e| e.kind == "login").collect();
    let log_text = std::fs::read_to_string(&log)?;
    ensure!(
        logins.len() == 6,
        "{} login events, want 6: {logins:#?}\nlog:\n{log_text}",
        logins.len()
    );
    let flags: Vec<&str> = logins.iter().map(|e| e.fields["success"].as_str()).collect();
    ensure!(flags == ["false", "false", "false", "false", "false", "true"], "{flags:?}");
    for e in &logins {
        ensure!(
            e.fields["user"] == "rad"
                && e.fields["source"] == intruder.addr().to_string()
                && e.fields["service"] == "sshd"
                && e.fields["method"] == "password"
                && e.enforcer == "logins",
            "{e:?}"
        );
    }
    let brute: Vec<_> = all.iter().filter(|e| e.kind == "brute-force").collect();
    ensure!(brute.len() == 1, "{brute:#?}");
    ensure!(
        brute[0].fields["user"] == "rad"
            && brute[0].fields["source"] == intruder.addr().to_string()
            && brute[0].fields["count"] == "5"
            && brute[0].fields["window"] == "300",
        "{:?}",
        brute[0]
    );

    // The operator's report.
    let out = bulwarkctl_in(
        &ws,
        &cluster.controller_urls().join(","),
        &cluster.admin,
        &["logins", "report", "--since", "1h", "-o", "json"],
    )
    .await?;
    ensure!(out.ok, "{}", out.stderr);
    let row: serde_json::Value = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| r["user"] == "rad")
        .with_context(|| format!("no row for rad in {}", out.stdout))?;
    ensure!(
        row["attempts"] == 6
            && row["failures"] == 5
            && row["successes"] == 1
            && row["brute_force"] == 1,
        "{row}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_written_while_every_controller_is_down_arrive_exactly_once() -> Result<()> {
    let lab = Lab::new()?;
    let mut cluster = Cluster::start_in_lab(&lab, 3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(vec![("monitors.yaml".into(), POLICY.into())], false).await?;
    let ws = lab.host("ws2", Ipv4Addr::new(198, 18, 51, 5))?;
    let agent = AgentProc::start(
        &cluster,
        &ws,
        &token(&admin).await?,
        &["--auth-log={root}/var/log/auth.log"],
    )
    .await?;
    let log = agent.root.join("var/log/auth.log");
    std::fs::create_dir_all(agent.root.join("var/log"))?;
    std::fs::write(&log, "")?;
    monitoring(&admin, &agent.id, "logins").await?;

    for id in 1..=3 {
        cluster.kill(id)?;
    }
    let lines: String = (0..1000)
        .map(|i| {
            format!(
                "2026-01-01T10:00:00Z ws2 sshd[7]: Accepted publickey for u{} from 198.18.60.{} port {} ssh2: ED25519 SHA256:k\n",
                i % 40,
                i % 250 + 1,
                10_000 + i
            )
        })
        .collect();
    std::fs::write(&log, lines)?;
    // The agent spools them meanwhile (its status file counts the spool).
    eventually("1,000 events spooled by the agent", Duration::from_secs(30), || async {
        let spooled = agent.status()?["spooled_events"].as_u64().unwrap_or(0);
        ensure!(spooled >= 1000, "{spooled} spooled");
        Ok(())
    })
    .await?;
    for id in 1..=3 {
        cluster.restart(id)?;
    }
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let got = eventually("1,000 logins at the controller", Duration::from_secs(60), || async {
        let got = events(&admin, &agent.id, &["login"]).await?;
        ensure!(got.len() >= 1000, "{} so far", got.len());
        Ok(got)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = events(&admin, &agent.id, &["login"]).await?;
    let ids: BTreeSet<&str> = again.iter().map(|e| e.id.as_str()).collect();
    ensure!(again.len() == 1000 && ids.len() == 1000, "{} events, {} ids", again.len(), ids.len());
    ensure!(got.len() == again.len());
    ensure!(
        again.iter().all(|e| e.fields["success"] == "true" && e.fields["method"] == "publickey")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_account_is_locked_and_an_operator_unlocks_it() -> Result<()> {
    need("useradd", "passwd")?;
    need("openssl", "openssl")?;
    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 1).await?;
    let admin = cluster.client()?;
    let policy = POLICY
        .replace("action: alert", "action: lock\n    allowedAccounts: [svc]")
        .replace("name: monitors", "name: lockdown");
    admin.apply_policies(vec![("lockdown.yaml".into(), policy)], false).await?;
    let ws = lab.host("ws3", Ipv4Addr::new(198, 18, 52, 5))?;
    let agent = AgentProc::start(&cluster, &ws, &token(&admin).await?, &[]).await?;
    let prefix = agent.root.display().to_string();
    seed_accounts(&agent.root)?;
    monitoring(&admin, &agent.id, "users").await?;

    for name in ["evil", "svc"] {
        sh(None, &format!("useradd --prefix {prefix} -p \"$(openssl passwd -6 pw)\" {name}"))?;
    }
    let shadow_of = |name: &str| -> Result<String> {
        let shadow = std::fs::read_to_string(agent.root.join("etc/shadow"))?;
        let line = shadow.lines().find(|l| l.starts_with(&format!("{name}:")));
        Ok(line.context("no shadow line")?.split(':').nth(1).unwrap_or_default().to_owned())
    };
    eventually("evil locked", Duration::from_secs(10), || async {
        let ev = events(&admin, &agent.id, &["user-locked", "user-added"]).await?;
        let kinds: Vec<String> =
            ev.iter().map(|e| format!("{} {}", e.kind, e.fields["user"])).collect();
        ensure!(kinds == ["user-added evil", "user-locked evil"], "{kinds:?}");
        Ok(())
    })
    .await?;
    ensure!(shadow_of("evil")?.starts_with("!$6$"), "{}", shadow_of("evil")?);
    ensure!(shadow_of("svc")?.starts_with("$6$"), "an allowed account was locked");

    let cli = |args: &[&str]| -> Result<String> {
        let out = ws
            .command(workspace_bin("bulwark-agent")?)
            .args(["--state-dir", &agent.state_dir.display().to_string(), "--root", &prefix])
            .args(["users"])
            .args(args)
            .output()?;
        ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    ensure!(cli(&["locked"])?.contains("evil"), "evil not listed as locked");
    cli(&["unlock", "evil"])?;
    ensure!(shadow_of("evil")?.starts_with("$6$"), "{}", shadow_of("evil")?);
    // The monitor sees the change and leaves the released account alone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(shadow_of("evil")?.starts_with("$6$"), "locked again: {}", shadow_of("evil")?);
    ensure!(cli(&["locked"])?.contains("released"), "evil not listed as released");

    // From the operator's desk: a second unexpected account, locked, released through
    // the controller with the real bulwarkctl; the agent unlocks it and says so.
    sh(None, &format!("useradd --prefix {prefix} -p \"$(openssl passwd -6 pw)\" contractor"))?;
    eventually("contractor locked", Duration::from_secs(10), || async {
        ensure!(shadow_of("contractor")?.starts_with("!$6$"), "{}", shadow_of("contractor")?);
        Ok(())
    })
    .await?;
    let out = bulwarkctl_in(
        &ws,
        &cluster.controller_urls().join(","),
        &cluster.admin,
        &["agents", "unlock", &agent.id, "contractor"],
    )
    .await?;
    ensure!(out.ok && out.stdout.contains("released"), "{}{}", out.stdout, out.stderr);
    eventually("contractor unlocked by the agent", Duration::from_secs(10), || async {
        let ev = events(&admin, &agent.id, &["user-unlocked"]).await?;
        ensure!(
            ev.iter().any(|e| e.fields["user"] == "contractor" && e.fields["by"] == "controller"),
            "{ev:?}"
        );
        ensure!(shadow_of("contractor")?.starts_with("$6$"), "{}", shadow_of("contractor")?);
        Ok(())
    })
    .await?;
    ensure!(cli(&["locked"])?.contains("contractor"), "contractor not listed as released");
    // A name that is not an account name is refused, naming the problem.
    let bad = bulwarkctl_in(
        &ws,
        &cluster.controller_urls().join(","),
        &cluster.admin,
        &["agents", "unlock", &agent.id, "ops/../root"],
    )
    .await?;
    ensure!(!bad.ok && bad.stderr.contains("not an account name"), "{}", bad.stderr);
    Ok(())
}
