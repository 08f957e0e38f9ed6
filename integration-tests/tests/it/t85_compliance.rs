//! `bulwarkctl report compliance` against a real three-node cluster in the lab with the
//! radiology pack applied: a real `bulwark-agent` (a print server whose flushed nftables
//! table is repaired) and lab agents reporting through the real `Report` call — a CT whose
//! wireless enforcer failed, a reading workstation whose passwords differ in audit mode
//! (with logins, a brute-force alert and account alerts), a PACS gone offline and a RIS that
//! never reported. The report, in JSON, CSV and HTML, names each failing host with its
//! reason, the policy revision with who applied it, and the cluster.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bulwark_controller::client::Client;
use bulwark_controller::policy::read_paths;
use bulwark_controller::report::{ComplianceReport, Status};
use bulwark_integration_tests::agentproc::AgentProc;
use bulwark_integration_tests::agents::LabAgent;
use bulwark_integration_tests::ctl::bulwarkctl_in;
use bulwark_integration_tests::netlab::Lab;
use bulwark_integration_tests::{Cluster, eventually};
use bulwark_proto::v1 as pb;

async fn token(admin: &Client, role: &str, site: &str) -> Result<String> {
    let labels: HashMap<String, String> =
        [("role".to_owned(), role.to_owned()), ("site".to_owned(), site.to_owned())].into();
    Ok(admin.create_token(labels, Duration::from_secs(600), 1).await?.token)
}

fn status(
    enforcer: &str,
    revision: u64,
    state: pb::EnforcerState,
    reason: &str,
) -> pb::EnforcerStatus {
    pb::EnforcerStatus {
        enforcer: enforcer.into(),
        revision,
        state: state.into(),
        reason: reason.into(),
        checked_at_ms: bulwark_controller::fleet::now_ms(),
        ..Default::default()
    }
}

fn event(seq: u32, kind: &str, enforcer: &str, fields: &[(&str, &str)]) -> pb::AgentEvent {
    let now = bulwark_controller::fleet::now_ms();
    pb::AgentEvent {
        id: format!("{now:013}-{seq:08}"),
        kind: kind.into(),
        enforcer: enforcer.into(),
        at_ms: now,
        revision: 1,
        summary: format!(
            "{kind} ({})",
            fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        ),
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Default::default()
    }
}

/// The revision the controller resolves for `agent`.
async fn desired(admin: &Client, agent: &str) -> Result<u64> {
    let a = admin.show_agent(agent, 0).await?.agent.context("agent not listed")?;
    ensure!(a.desired_revision > 0, "no desired revision for {agent} yet");
    Ok(a.desired_revision)
}

fn result<'a>(r: &'a ComplianceReport, host: &str, control: &str) -> Result<(Status, &'a str)> {
    let x = r
        .results
        .iter()
        .find(|x| x.hostname == host && x.control == control)
        .with_context(|| format!("no result for {host} / {control}"))?;
    Ok((x.status, x.reason.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compliance_report_names_failing_hosts_and_why() -> Result<()> {
    let lab = Lab::new()?;
    let cluster = Cluster::start_in_lab(&lab, 3).await?;
    let admin = cluster.client()?;
    let pack = read_paths(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies")])
        .map_err(anyhow::Error::msg)?;
    let applied = admin.apply_policies(pack, false).await?.revision;
    ensure!(applied > 0, "the pack was not stored");

    // A real agent: a print server (baseline + print-servers: firewall, users, logins).
    let ps_host = lab.host("ps1", Ipv4Addr::new(198, 18, 70, 5))?;
    let ps = AgentProc::start_on_host_with_accounts(
        &cluster,
        &ps_host,
        &token(&admin, "print-server", "north").await?,
        &["--auth-log={root}/var/log/auth.log"],
    )
    .await?;
    std::fs::create_dir_all(ps.root.join("var/log"))?;
    std::fs::write(ps.root.join("var/log/auth.log"), "")?;
    eventually("the print server compliant", Duration::from_secs(40), || async {
        let a = admin.show_agent(&ps.id, 0).await?.agent.context("not listed")?;
        let state =
            |name: &str| a.enforcers.iter().find(|e| e.enforcer == name).map_or(0, |e| e.state);
        ensure!(
            a.online
                && a.applied_revision == a.desired_revision
                && ["firewall", "users", "logins"]
                    .iter()
                    .all(|n| state(n) == pb::EnforcerState::Compliant as i32),
            "{a:?}"
        );
        Ok(())
    })
    .await?;
    // Drift on the real host: the table is flushed, and repaired by the agent.
    ps.nft(&["flush", "table", "inet", "bulwark"])?;
    eventually("the flush repaired and reported", Duration::from_secs(20), || async {
        let shown = admin.show_agent(&ps.id, 20).await?;
        ensure!(shown.events.iter().any(|e| e.kind == "drift-repaired"), "{:?}", shown.events);
        Ok(())
    })
    .await?;

    // Lab agents through the real Report call.
    let enroll = |name: &'static str, role: &'static str, site: &'static str, ip: &'static str| {
        let (cluster, admin) = (&cluster, &admin);
        async move {
            let token = token(admin, role, site).await?;
            LabAgent::enroll_at(cluster, &cluster.addr(1), &token, name, ip).await
        }
    };
    let ct = enroll("ct1", "modality", "north", "198.18.10.5").await?;
    let ws = enroll("ws1", "reading-workstation", "south", "198.18.30.5").await?;
    let pacs = enroll("pacs1", "pacs", "south", "198.18.20.5").await?;
    let _ris = enroll("ris1", "ris", "north", "198.18.25.5").await?;
    use pb::EnforcerState::{AuditNoncompliant, Compliant, Failed};

    let ct_client = ct.client_at(&cluster, 1)?;
    let _ct_stream = ct_client.stream_desired_state(0).await?;
    let r = desired(&admin, &ct.id).await?;
    ct_client
        .report(pb::AgentReport {
            desired_revision: r,
            enforcers: vec![
                status("firewall", r, Compliant, ""),
                status("wireless", r, Failed, "rfkill: cannot block phy0"),
                status("passwords", r, Compliant, ""),
                status("users", r, Compliant, ""),
                status("logins", r, Compliant, ""),
            ],
            agent_version: "lab".into(),
            ..Default::default()
        })
        .await?;

    let ws_client = ws.client_at(&cluster, 2)?;
    let _ws_stream = ws_client.stream_desired_state(0).await?;
    let r = desired(&admin, &ws.id).await?;
    let login = |seq, ok: &str| {
        event(
            seq,
            "login",
            "logins",
            &[("user", "rad"), ("success", ok), ("source", "198.18.99.9")],
        )
    };
    ws_client
        .report(pb::AgentReport {
            desired_revision: r,
            enforcers: vec![
                status("firewall", r, Compliant, ""),
                status("wireless", r, Compliant, ""),
                status("passwords", r, AuditNoncompliant, "PASS_MIN_LEN 8, policy 12"),
                status("users", r, Compliant, ""),
                status("logins", r, Compliant, ""),
            ],
            events: vec![
                login(1, "false"),
                login(2, "false"),
                login(3, "false"),
                login(4, "true"),
                event(5, "brute-force", "logins", &[("user", "rad"), ("source", "198.18.99.9")]),
                event(6, "user-added", "users", &[("user", "<evil>")]),
                event(
                    7,
                    "privileged-group-added",
                    "users",
                    &[("user", "<evil>"), ("group", "sudo")],
                ),
                event(8, "uid0-duplicate", "users", &[("user", "toor")]),
            ],
            agent_version: "lab".into(),
            ..Default::default()
        })
        .await?;

    // The PACS reports compliant, but holds no stream: offline. The RIS never reports.
    let r = desired(&admin, &pacs.id).await?;
    pacs.client_at(&cluster, 3)?
        .report(pb::AgentReport {
            desired_revision: r,
            enforcers: vec![
                status("firewall", r, Compliant, ""),
                status("passwords", r, Compliant, ""),
            ],
            ..Default::default()
        })
        .await?;
    eventually("ct1 and ws1 online", Duration::from_secs(10), || async {
        let agents = admin.list_agents().await?.agents;
        let online = |id: &str| agents.iter().any(|a| a.id == id && a.online);
        ensure!(online(&ct.id) && online(&ws.id), "{agents:?}");
        Ok(())
    })
    .await?;

    // The real bulwarkctl, from a lab host, as an operator would run it.
    let urls = cluster.controller_urls().join(",");
    let ctl = |args: Vec<String>| {
        let (ps_host, urls, tls) = (&ps_host, &urls, &cluster.admin);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = bulwarkctl_in(ps_host, urls, tls, &args).await?;
            ensure!(out.ok, "bulwarkctl {args:?} failed: {}", out.stderr);
            anyhow::Ok(out)
        }
    };
    let args = |extra: &[&str]| {
        ["report", "compliance"].iter().chain(extra).map(|s| (*s).to_owned()).collect::<Vec<_>>()
    };

    // JSON, on standard output: it deserializes into the model.
    let out = ctl(args(&["--since", "1h", "-o", "json"])).await?;
    let report: ComplianceReport = serde_json::from_str(&out.stdout)
        .with_context(|| format!("not a ComplianceReport:\n{}", out.stdout))?;
    ensure!(report.schema == 1);
    ensure!(report.cluster.name == cluster.options.cluster_name, "{:?}", report.cluster);
    ensure!(report.cluster.ca_sha256 == cluster.pki.ca.fingerprint()?, "{:?}", report.cluster);
    ensure!(report.policy.revision == applied, "{:?}", report.policy);
    ensure!(
        report.policy.applied_by.as_deref().is_some_and(|w| w.contains("lab"))
            && report
                .policy
                .applied_with
                .as_deref()
                .is_some_and(|w| w.contains(&format!("stored as revision {applied}"))),
        "{:?}",
        report.policy
    );
    ensure!(report.hosts.len() == 5, "{:?}", report.hosts);

    let (s, why) = result(&report, "ct1", "wireless access controls")?;
    ensure!(
        s == Status::NotMet && why == "wireless failed: rfkill: cannot block phy0",
        "{s:?} {why}"
    );
    ensure!(result(&report, "ct1", "AC-18")?.0 == Status::NotMet);
    ensure!(
        result(&report, "ct1", "SC-7")?.0 == Status::Met,
        "{:?}",
        result(&report, "ct1", "SC-7")
    );
    let (s, why) = result(&report, "ws1", "strong password policies")?;
    ensure!(s == Status::NotMet && why.contains("(audit mode): PASS_MIN_LEN 8"), "{s:?} {why}");
    let (s, why) = result(&report, "pacs1", "SC-7")?;
    ensure!(s == Status::Unknown && why.starts_with("offline"), "{s:?} {why}");
    ensure!(result(&report, "ris1", "IA-5")? == (Status::Unknown, "never reported"));
    let (s, why) = result(&report, "ps1", "remote printing disabled (PrintNightmare)")?;
    ensure!(s == Status::Repaired && why.contains("drift-repaired"), "{s:?} {why}");
    ensure!(result(&report, "ps1", "AU-12")?.0 == Status::Met);

    let t = &report.logins.totals;
    ensure!((t.attempts, t.failures, t.successes, t.brute_force) == (4, 3, 1, 1), "{t:?}");
    ensure!(report.accounts.counts.get("user-added") == Some(&1), "{:?}", report.accounts);
    ensure!(report.accounts.counts.get("uid0-duplicate") == Some(&1), "{:?}", report.accounts);
    let north = report.sites.iter().find(|g| g.name == "north").context("no north")?;
    ensure!(north.totals.hosts == 3 && north.totals.not_met == 1, "{north:?}");

    // --site: only that site's hosts.
    let out = ctl(args(&["--site", "south", "-o", "json"])).await?;
    let south: ComplianceReport = serde_json::from_str(&out.stdout)?;
    let names: Vec<&str> = south.hosts.iter().map(|h| h.hostname.as_str()).collect();
    ensure!(names == ["pacs1", "ws1"], "{names:?}");

    // CSV to a file (the format from its extension): one row per host and control.
    let dir = tempfile::tempdir()?;
    let csv_path = dir.path().join("report.csv");
    ctl(args(&["--since", "1h", "--out", &csv_path.display().to_string()])).await?;
    let mut reader = csv::Reader::from_path(&csv_path)?;
    let header: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    ensure!(
        header
            == ["host_id", "hostname", "site", "class", "framework", "control", "status", "reason"],
        "{header:?}"
    );
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    ensure!(
        rows.len() == report.results.len(),
        "{} rows, {} results",
        rows.len(),
        report.results.len()
    );
    ensure!(
        rows.iter().any(|r| &r[1] == "ct1"
            && &r[5] == "wireless access controls"
            && &r[6] == "not-met"
            && r[7].contains("rfkill")),
        "no failing ct1 row"
    );

    // HTML to a file: the tables, the failing host and its reason, escaped alerts.
    let html_path = dir.path().join("report.html");
    ctl(args(&["--since", "1h", "-o", "html", "--out", &html_path.display().to_string()])).await?;
    let html = std::fs::read_to_string(&html_path)?;
    for needle in [
        "<!DOCTYPE html>",
        "<caption>Checklist items and NIST SP 800-53 controls</caption>",
        "<caption>Hosts not plainly meeting a control</caption>",
        "wireless failed: rfkill: cannot block phy0",
        "&lt;evil&gt;",
        &report.cluster.ca_sha256,
    ] {
        ensure!(html.contains(needle), "the HTML lacks {needle:?}");
    }
    ensure!(!html.contains("<evil>"), "an unescaped user name in the HTML");
    Ok(())
}
