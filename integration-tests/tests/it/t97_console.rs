//! The web console in a real browser: a three-node cluster in the lab, a real
//! `bulwark-agent` (firewall, users) and lab agents reporting like agents, two real
//! `bulwarkctl console` processes (an operator's and a viewer's certificate) in a lab host,
//! and Debian's headless Chromium driven through chromedriver (WebDriver, `fantoccini`).
//!
//! Every page loads and is saved as a screenshot under `target/console-screenshots/`; a
//! drift (a flushed nft table in the agent's namespace) and a new user (a real `useradd`
//! on the agent's host root) appear on pages already open, without a reload; an operator
//! starts, pauses and aborts a rollout through the page, a viewer's abort is refused by the
//! controller and the refusal is shown; a non-loopback listener, a foreign Host header
//! and a POST without the console's header are refused.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bulwark_controller::client::Client;
use bulwark_controller::pki::Role;
use bulwark_controller::policy::read_paths;
use bulwark_controller::tls::TlsFiles;
use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::cluster::{bin_dir, free_port, workspace_bin};
use bulwark_integration_tests::ctl::bulwarkctl;
use bulwark_integration_tests::netlab::{Lab, LabHost};
use bulwark_integration_tests::{Cluster, eventually};
use bulwark_proto::v1 as pb;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STAGED: &str = "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: pacs-audit}
spec:
  selector: {role: pacs}
  priority: 500
  mode: audit
  passwords: {profile: nist-800-63b}
";

fn pack() -> Result<Vec<(String, String)>> {
    read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn token(admin: &Client, pairs: &[(&str, &str)]) -> Result<String> {
    Ok(admin.create_token(labels(pairs), Duration::from_secs(600), 1).await?.token)
}

fn need(tool: &str, package: &str) -> Result<()> {
    let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?;
    ensure!(found.status.success(), "{tool} is missing: install the package {package}");
    Ok(())
}

/// A process killed (and waited for) on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("BULWARK_LAB_LOGS").is_some() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
    let file = std::fs::File::create(log)?;
    let child = cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
    Ok(Proc { child, log: log.to_owned() })
}

/// `bulwarkctl console` in lab host `host` on 127.0.0.1:`port` there, with `tls`; returns
/// the process and where the test machine's browser reaches it (a forward on 127.0.0.1).
async fn console(
    lab: &Lab,
    cluster: &Cluster,
    host: &LabHost,
    tls: &TlsFiles,
    port: u16,
    dir: &Path,
) -> Result<(Proc, SocketAddr)> {
    let mut cmd = host.command(workspace_bin("bulwarkctl")?);
    cmd.env("BULWARK_ENDPOINTS", cluster.controller_urls().join(","))
        .env("BULWARK_TLS_CA", &tls.ca)
        .env("BULWARK_TLS_CERT", &tls.cert)
        .env("BULWARK_TLS_KEY", &tls.key)
        .env("BULWARK_LOG", "info")
        .args(["console", "--listen", &format!("127.0.0.1:{port}"), "--poll", "1s"])
        .args(["--sample-every", "2s"]);
    let proc = spawn(cmd, &dir.join(format!("console-{port}.log")))?;
    let addr = lab.forward(host, SocketAddr::from(([127, 0, 0, 1], port)))?;
    eventually("the console to answer", Duration::from_secs(20), || async {
        let (code, _) = raw(addr, "GET", "/", &[]).await?;
        ensure!(code == 200, "HTTP {code}");
        Ok(())
    })
    .await
    .with_context(|| proc.log())?;
    Ok((proc, addr))
}

/// One HTTP/1.0 request with `Host: <addr>` and `headers`: (status, body).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Result<(u16, String)> {
    raw_host(addr, &addr.to_string(), method, path, headers).await
}

async fn raw_host(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await??;
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status")?;
    Ok((code, text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned()))
}

/// chromedriver on a free port, with Chromium's flags for running as root on a machine
/// without a network beyond loopback.
async fn browser(dir: &Path) -> Result<(Proc, Browser)> {
    let port = free_port()?;
    let mut cmd = Command::new("chromedriver");
    cmd.arg(format!("--port={port}"));
    let driver = spawn(cmd, &dir.join("chromedriver.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    eventually("chromedriver to listen", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(())
    })
    .await?;
    let profile = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile)?;
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1366,768",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .with_context(|| format!("starting Chromium through chromedriver: {}", driver.log()))?;
    client.set_window_size(1366, 768).await?;
    Ok((driver, client))
}

/// The text of the first element matching `css` ("" when there is none).
async fn text(b: &Browser, css: &str) -> Result<String> {
    let v = b
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            vec![serde_json::json!(css)],
        )
        .await?;
    Ok(v.as_str().unwrap_or_default().to_owned())
}

async fn count(b: &Browser, css: &str) -> Result<u64> {
    let v = b
        .execute(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![serde_json::json!(css)],
        )
        .await?;
    v.as_u64().context("not a number")
}

/// Waits until the element matching `css` contains `want`.
async fn wait_text(b: &Browser, css: &str, want: &str, within: Duration) -> Result<String> {
    eventually(&format!("{css} to show {want:?}"), within, || async {
        let t = text(b, css).await?;
        ensure!(t.contains(want), "{css}: {t:?}");
        Ok(t)
    })
    .await
}

/// Opens `path`, checks its heading, saves a screenshot as `name.png`.
async fn page(
    b: &Browser,
    base: &str,
    path: &str,
    heading: &str,
    shots: &Path,
    name: &str,
) -> Result<()> {
    b.goto(&format!("{base}{path}")).await?;
    wait_text(b, "h1", heading, Duration::from_secs(10)).await?;
    // The live stream is connected (the header says so) before anything is judged live.
    wait_text(b, "#live-status", "Live", Duration::from_secs(10)).await?;
    shot(b, shots, name).await
}

async fn shot(b: &Browser, shots: &Path, name: &str) -> Result<()> {
    let png = b.screenshot().await?;
    ensure!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(shots.join(format!("{name}.png")), png)?;
    Ok(())
}

/// Marks the open page, so a reload (which would lose the mark) is noticed.
async fn mark(b: &Browser) -> Result<()> {
    b.execute("window.__bulwarkNoReload = 'still here'; return 1;", vec![]).await?;
    Ok(())
}

async fn not_reloaded(b: &Browser) -> Result<()> {
    let v = b.execute("return window.__bulwarkNoReload || 'reloaded';", vec![]).await?;
    ensure!(v == "still here", "the page was reloaded ({v})");
    Ok(())
}

async fn click(b: &Browser, css: &str) -> Result<()> {
    b.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

async fn fill(b: &Browser, css: &str, value: &str) -> Result<()> {
    let e = b.find(Locator::Css(css)).await?;
    e.clear().await?;
    e.send_keys(value).await?;
    Ok(())
}

fn event(n: u64, kind: &str, summary: &str, fields: &[(&str, &str)]) -> pb::AgentEvent {
    let now = bulwark_controller::fleet::now_ms();
    pb::AgentEvent {
        id: format!("{now:013}-{n:08}"),
        kind: kind.into(),
        enforcer: if kind == "login" || kind == "brute-force" { "logins" } else { "users" }.into(),
        at_ms: now,
        summary: summary.into(),
        fields: labels(fields).into_iter().collect(),
        ..Default::default()
    }
}

fn status(name: &str, state: pb::EnforcerState, reason: &str) -> pb::EnforcerStatus {
    pb::EnforcerStatus {
        enforcer: name.into(),
        revision: 1,
        state: state.into(),
        reason: reason.into(),
        checked_at_ms: bulwark_controller::fleet::now_ms(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() -> Result<()> {
    for (tool, package) in [
        ("chromium", "chromium"),
        ("chromedriver", "chromium-driver"),
        ("nft", "nftables"),
        ("useradd", "passwd"),
    ] {
        need(tool, package)?;
    }
    let shots = bin_dir()?.parent().context("no target dir")?.join("console-screenshots");
    std::fs::create_dir_all(&shots)?;
    let work = tempfile::Builder::new().prefix("bulwark-console-").tempdir()?;

    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 3).await?;
    let admin = cluster.client()?;
    admin.apply_policies(pack()?, false).await?;

    // A real agent on a CT: the pack's firewall (real nft in its namespace), users monitor.
    let ct_host = lab.host("ct1", Ipv4Addr::new(198, 18, 10, 5))?;
    let ct = AgentProc::start_on_host_with_accounts(
        &cluster,
        &ct_host,
        &token(&admin, &[("role", "modality"), ("site", "north")]).await?,
        &[],
    )
    .await?;
    // Lab agents: a PACS (compliant, the rollout's canary), a workstation that failed and
    // reports logins and alerts, and one that never connects (offline).
    let pacs = LabAgent::enroll_at(
        &cluster,
        &cluster.addr(1),
        &token(&admin, &[("role", "pacs"), ("site", "north")]).await?,
        "pacs-1",
        "198.18.20.5",
    )
    .await?;
    let ws = LabAgent::enroll_at(
        &cluster,
        &cluster.addr(1),
        &token(&admin, &[("role", "reading-workstation"), ("site", "south")]).await?,
        "ws-1<b>",
        "198.18.30.5",
    )
    .await?;
    let _ws2 = LabAgent::enroll_at(
        &cluster,
        &cluster.addr(1),
        &token(&admin, &[("role", "reading-workstation"), ("site", "south")]).await?,
        "ws-2",
        "198.18.30.6",
    )
    .await?;
    let pacs_client = pacs.client(&cluster)?;
    let _pacs_stream = pacs_client.stream_desired_state(0).await?;
    pacs_client
        .report(pb::AgentReport {
            desired_revision: 1,
            enforcers: vec![status("firewall", pb::EnforcerState::Compliant, "")],
            agent_version: "lab".into(),
            ..Default::default()
        })
        .await?;
    let ws_client = ws.client(&cluster)?;
    let _ws_stream = ws_client.stream_desired_state(0).await?;
    let login = |n, user, ok: bool, source| {
        event(
            n,
            "login",
            &format!(
                "{} password for {user} from {source}",
                if ok { "Accepted" } else { "Failed" }
            ),
            &[
                ("user", user),
                ("success", if ok { "true" } else { "false" }),
                ("source", source),
                ("service", "sshd"),
            ],
        )
    };
    ws_client
        .report(pb::AgentReport {
            desired_revision: 1,
            enforcers: vec![
                status("firewall", pb::EnforcerState::Failed, "nft: Error: Could not process rule"),
                status("users", pb::EnforcerState::Compliant, ""),
            ],
            events: vec![
                login(1, "rad", false, "198.18.0.9"),
                login(2, "rad", false, "198.18.0.9"),
                login(3, "rad", true, "198.18.0.10"),
                login(4, "<script>x</script>", false, "198.18.0.66"),
                event(
                    5,
                    "brute-force",
                    "10 failed logins for rad in 300 s",
                    &[("user", "rad"), ("source", "198.18.0.9")],
                ),
                event(
                    6,
                    "privileged-group-added",
                    "user rad added to group sudo",
                    &[("user", "rad"), ("group", "sudo")],
                ),
            ],
            agent_version: "lab".into(),
            ..Default::default()
        })
        .await?;
    eventually("the real agent's firewall compliant", Duration::from_secs(40), || async {
        let a = admin.show_agent(&ct.id, 0).await?.agent.context("no agent")?;
        let fw = a.enforcers.iter().find(|e| e.enforcer == "firewall");
        ensure!(
            a.online && fw.is_some_and(|f| f.state == pb::EnforcerState::Compliant as i32),
            "{a:?}"
        );
        Ok(())
    })
    .await?;

    // The consoles: an operator's and a viewer's, as real processes in an admin host.
    let operator = cluster.pki.admin_with_role("olga", Role::Operator)?;
    let viewer = cluster.pki.admin_with_role("vera", Role::Viewer)?;
    let adm = lab.host("adm1", Ipv4Addr::new(198, 18, 0, 100))?;
    let (_op_console, op_addr) =
        console(&lab, &cluster, &adm, &operator, 8080, work.path()).await?;
    let (_view_console, view_addr) =
        console(&lab, &cluster, &adm, &viewer, 8081, work.path()).await?;

    // Refusals before any browser: a listener off loopback, a foreign Host (DNS
    // rebinding), POSTs without the console's header or from another origin.
    let endpoints = cluster.addr(1);
    let off = bulwarkctl(&endpoints, &operator, &["console", "--listen", "0.0.0.0:8090"]).await?;
    ensure!(!off.ok && off.stderr.contains("only listens on a loopback address"), "{off:?}");
    let (code, _) = raw_host(op_addr, "bulwark.example:8080", "GET", "/", &[]).await?;
    ensure!(code == 403, "a foreign Host header got HTTP {code}");
    let (code, body) = raw(op_addr, "POST", "/rollout/pause", &[]).await?;
    ensure!(code == 403 && body.contains("X-Bulwark-Console"), "{code} {body}");
    let (code, _) = raw(
        op_addr,
        "POST",
        "/rollout/pause",
        &["X-Bulwark-Console: 1", "Origin: http://evil.example"],
    )
    .await?;
    ensure!(code == 403, "a foreign Origin got HTTP {code}");

    let (driver, b) = browser(work.path()).await?;
    let result = drive(&b, &lab, &cluster, &admin, &ct, &ct_host, op_addr, view_addr, &shots).await;
    let closed = b.close().await;
    drop(driver);
    result?;
    closed?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    b: &Browser,
    _lab: &Lab,
    _cluster: &Cluster,
    admin: &Client,
    ct: &AgentProc,
    _ct_host: &LabHost,
    op_addr: SocketAddr,
    view_addr: SocketAddr,
    shots: &Path,
) -> Result<()> {
    let op = format!("http://{op_addr}");
    let view = format!("http://{view_addr}");

    // Fleet overview: states counted, by site and role, the chart, hosts (escaped).
    page(b, &op, "/", "Fleet overview", shots, "01-fleet").await?;
    for state in ["compliant", "failed", "offline"] {
        let css = format!(".count[data-state={state}]");
        eventually(&format!("a host {state}"), Duration::from_secs(10), || async {
            let n: u64 = text(b, &css).await?.trim().parse().unwrap_or(0);
            ensure!(n >= 1, "{n} hosts {state}");
            Ok(())
        })
        .await?;
    }
    ensure!(count(b, "svg.chart polyline, svg.chart circle").await? >= 4, "no chart");
    let hosts = text(b, "#hosts").await?;
    ensure!(
        hosts.contains("ws-1<b>") && hosts.contains("pacs-1") && hosts.contains("ct1"),
        "{hosts}"
    );
    ensure!(count(b, "#hosts b").await? == 0, "a hostname was rendered as markup");
    let groups = text(b, "#fleet-groups").await?;
    ensure!(
        groups.contains("north") && groups.contains("south") && groups.contains("modality"),
        "{groups}"
    );

    // Host detail of the real agent, left open: a flushed table appears without reload.
    page(b, &op, &format!("/hosts/{}", ct.id), "Host ct1", shots, "02-host").await?;
    let enforcers = text(b, "[data-enforcer=firewall]").await?;
    ensure!(enforcers.contains("Compliant"), "{enforcers}");
    ensure!(count(b, "tr.ev-drift-repaired").await? == 0, "drift before the flush");
    mark(b).await?;
    ct.nft(&["flush", "table", "inet", "bulwark"])?;
    eventually("the drift on the open host page", Duration::from_secs(20), || async {
        ensure!(count(b, "tr.ev-drift-repaired").await? > 0, "no drift-repaired row yet");
        Ok(())
    })
    .await?;
    not_reloaded(b).await?;
    shot(b, shots, "03-host-after-drift").await?;

    // Alerts, left open: a real useradd on the agent's host root arrives live.
    page(b, &op, "/alerts", "Alerts", shots, "04-alerts").await?;
    let alerts = text(b, "#alerts").await?;
    ensure!(
        alerts.contains("privileged-group-added") && alerts.contains("brute-force"),
        "{alerts}"
    );
    mark(b).await?;
    std::fs::copy("/etc/login.defs", ct.root.join("etc/login.defs"))?;
    let out = Command::new("useradd")
        .args(["--prefix", &ct.root.display().to_string(), "mallory"])
        .output()?;
    ensure!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
    eventually("the new user on the open alerts page", Duration::from_secs(20), || async {
        let t = text(b, "#alerts").await?;
        ensure!(t.contains("user-added") && t.contains("mallory"), "not yet");
        Ok(())
    })
    .await?;
    not_reloaded(b).await?;
    shot(b, shots, "05-alerts-new-user").await?;

    // Login audit with filters (through the form, as a person would).
    page(b, &op, "/logins", "Login audit", shots, "06-logins").await?;
    fill(b, "#user", "rad").await?;
    b.find(Locator::Css("#result")).await?.select_by_value("failure").await?;
    click(b, ".filters button").await?;
    wait_text(b, "h1", "Login audit", Duration::from_secs(10)).await?;
    let url = b.current_url().await?;
    ensure!(
        url.query().is_some_and(|q| q.contains("user=rad") && q.contains("result=failure")),
        "{url}"
    );
    let logins = text(b, "#logins").await?;
    ensure!(logins.contains("rad") && !logins.contains("succeeded"), "{logins}");
    ensure!(logins.contains("brute force"), "{logins}");
    shot(b, shots, "07-logins-filtered").await?;
    b.goto(&format!("{op}/logins")).await?;
    ensure!(
        text(b, "#logins").await?.contains("<script>x</script>"),
        "the odd user name is shown as text"
    );
    ensure!(count(b, "#logins script").await? == 0, "a user name was rendered as markup");

    // Policies and one document's history: created, then changed (a diff).
    for cidrs in ["[198.18.99.0/24]", "[198.18.99.0/24, 198.18.98.0/24]"] {
        let doc = format!(
            "apiVersion: bulwark.io/v1\nkind: Segment\nmetadata: {{name: console-lab}}\nspec: {{cidrs: {cidrs}}}\n"
        );
        admin.apply_policies(vec![("console-lab.yaml".into(), doc)], false).await?;
    }
    page(b, &op, "/policies", "Policies", shots, "08-policies").await?;
    ensure!(text(b, "#documents").await?.contains("Policy/baseline"), "the pack is not listed");
    click(b, "a[href='/policies/Segment/console-lab']").await?;
    wait_text(b, "h1", "Policy history: Segment/console-lab", Duration::from_secs(10)).await?;
    ensure!(count(b, "article.revision").await? == 2, "{}", text(b, "#history").await?);
    ensure!(count(b, "pre.diff .add").await? > 0, "no added lines");
    ensure!(
        text(b, "pre.diff").await?.contains("added: + ")
            && text(b, "pre.diff").await?.contains("198.18.98.0/24"),
        "the added CIDR is not marked"
    );
    shot(b, shots, "09-policy-history").await?;

    // Cluster health: three members, one leader.
    page(b, &op, "/cluster", "Cluster health", shots, "10-cluster").await?;
    wait_text(b, "#leader", "Leader: node", Duration::from_secs(10)).await?;
    ensure!(count(b, "#cluster tbody tr").await? == 3, "{}", text(b, "#cluster").await?);
    ensure!(count(b, "#cluster .role-leader").await? == 1, "{}", text(b, "#cluster").await?);

    // A rollout through the operator's page: start, pause; the viewer is refused; abort.
    let staged = admin
        .apply_policies_with(vec![("pacs-audit.yaml".into(), STAGED.into())], false, true)
        .await?;
    ensure!(staged.revision > 0, "{staged:?}");
    page(b, &op, "/rollout", "Rollout", shots, "11-rollout-none").await?;
    wait_text(b, "#rollout-phase", "none", Duration::from_secs(5)).await?;
    mark(b).await?;
    fill(b, "#revision", &staged.revision.to_string()).await?;
    fill(b, "#canary", "role=pacs").await?;
    fill(b, "#wait", "10m").await?;
    click(b, "#start").await?;
    wait_text(b, "#action-result", "Done", Duration::from_secs(15)).await?;
    wait_text(b, "#rollout-phase", "running", Duration::from_secs(15)).await?;
    wait_text(b, "#rollout", "pacs-1", Duration::from_secs(15)).await?;
    click(b, "#pause").await?;
    wait_text(b, "#rollout-phase", "paused", Duration::from_secs(15)).await?;
    not_reloaded(b).await?;
    ensure!(admin.rollout("status").await?.phase == "paused", "the controller did not pause");
    shot(b, shots, "12-rollout-paused").await?;

    page(b, &view, "/rollout", "Rollout", shots, "13-rollout-viewer").await?;
    wait_text(b, "#rollout-phase", "paused", Duration::from_secs(10)).await?;
    click(b, "#abort").await?;
    let refusal =
        wait_text(b, "#action-result", "Refused by the controller", Duration::from_secs(15))
            .await?;
    ensure!(refusal.contains("viewer") && refusal.contains("operator"), "{refusal}");
    ensure!(
        text(b, "#action-result.error").await? == refusal,
        "the refusal is not shown as an error"
    );
    shot(b, shots, "14-rollout-viewer-refused").await?;
    ensure!(admin.rollout("status").await?.phase == "paused", "a viewer changed the rollout");
    // The page's own script refuses nothing by itself: a POST without its header is refused
    // by the console even from the console's own origin.
    let bare = b
        .execute_async(
            "const done = arguments[arguments.length - 1]; fetch('/rollout/abort', {method: 'POST'}).then(r => done(r.status));",
            vec![],
        )
        .await?;
    ensure!(bare == 403, "a bare POST got {bare}");

    page(b, &op, "/rollout", "Rollout", shots, "15-rollout-operator").await?;
    click(b, "#abort").await?;
    wait_text(b, "#rollout-phase", "aborted", Duration::from_secs(15)).await?;
    ensure!(admin.rollout("status").await?.phase == "aborted", "the controller did not abort");
    shot(b, shots, "16-rollout-aborted").await?;

    // The overview again, its chart now covering the whole run.
    page(b, &op, "/", "Fleet overview", shots, "17-fleet-later").await?;

    // Keyboard: the first Tab lands on the skip link, which is visible when focused.
    b.goto(&format!("{op}/")).await?;
    let tab = '\u{e004}';
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: tab })
        .then(KeyAction::Up { value: tab });
    b.perform_actions(keys).await?;
    let focused = b.execute("return document.activeElement.className;", vec![]).await?;
    if focused != "skip" {
        bail!("the first Tab focused {focused}, not the skip link");
    }
    Ok(())
}
