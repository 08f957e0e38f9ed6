//! The pages, rendered on the server: every value from the controller or a host is
//! escaped here ([`esc`]), so the browser's script only swaps whole regions in and out.
//! Regions marked `data-live="topic ..."` are refreshed when the console's event stream
//! reports a change of that topic.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bulwark_proto::v1 as pb;

use super::chart;
use super::data::{Counts, Fleet, HostState, Sample, classify};
use super::html::{error_banner, esc, layout, time_el, url_enc};
use crate::client::ClientError;
use crate::ctl::role_name;
use crate::fleet::now_ms;

fn badge(s: HostState) -> String {
    format!(r#"<span class="badge st-{}">{}</span>"#, s.key(), s.label())
}

pub fn enforcer_state(state: i32) -> (&'static str, &'static str) {
    match pb::EnforcerState::try_from(state) {
        Ok(pb::EnforcerState::Compliant) => ("compliant", "Compliant"),
        Ok(pb::EnforcerState::DriftedRepaired) => ("drifted", "Drifted and repaired"),
        Ok(pb::EnforcerState::Failed) => ("failed", "Failed"),
        Ok(pb::EnforcerState::AuditNoncompliant) => ("drifted", "Differs (audit only)"),
        Ok(pb::EnforcerState::NotManaged) => ("pending", "Not managed"),
        _ => ("pending", "Unknown"),
    }
}

fn host_name(a: &pb::Agent) -> &str {
    if a.hostname.is_empty() { &a.id } else { &a.hostname }
}

fn host_link(id: &str, name: &str) -> String {
    format!(r#"<a href="/hosts/{}">{}</a>"#, url_enc(id), esc(name))
}

fn label<'a>(a: &'a pb::Agent, key: &str) -> &'a str {
    a.labels.get(key).map_or("", String::as_str)
}

fn enforcers_summary(a: &pb::Agent) -> String {
    let item =
        |e: &pb::EnforcerStatus| format!("{}: {}", esc(&e.enforcer), enforcer_state(e.state).1);
    crate::ctl::fleet::summarize_enforcers(a, item, "; ")
}

/// A table of hosts per label value (site or role) and state.
fn by_label(agents: &[pb::Agent], key: &str, caption: &str) -> String {
    let mut rows: BTreeMap<String, Counts> = BTreeMap::new();
    for a in agents {
        let v = match label(a, key) {
            "" => "(none)".to_owned(),
            v => v.to_owned(),
        };
        rows.entry(v).or_default().add(classify(a));
    }
    let mut out = format!(
        r#"<table class="grid"><caption>{}</caption><thead><tr><th scope="col">{}</th>"#,
        esc(caption),
        esc(key)
    );
    for s in HostState::CHARTED {
        let _ = write!(out, r#"<th scope="col" class="num">{}</th>"#, s.label());
    }
    out.push_str(r#"<th scope="col" class="num">Total</th></tr></thead><tbody>"#);
    for (v, c) in &rows {
        let _ = write!(out, r#"<tr><th scope="row">{}</th>"#, esc(v));
        for s in HostState::CHARTED {
            let n = c.get(s);
            let class = if n > 0 && s != HostState::Compliant { " attention" } else { "" };
            let _ = write!(out, r#"<td class="num{class}">{n}</td>"#);
        }
        let _ = write!(out, r#"<td class="num">{}</td></tr>"#, c.total());
    }
    if rows.is_empty() {
        out.push_str(r#"<tr><td colspan="6">No hosts enrolled.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    out
}

/// `/`: counts per state, the chart, per-site and per-role tables, the host list.
pub fn fleet(
    fleet: Result<Fleet, ClientError>,
    history: &[Sample],
    only: Option<HostState>,
) -> String {
    let mut body = String::new();
    let fleet = match fleet {
        Ok(f) => f,
        Err(e) => {
            body.push_str(&error_banner("Listing the fleet failed", &e));
            Fleet::default()
        }
    };
    let counts = Counts::of(&fleet.agents);
    let _ = write!(
        body,
        r#"<section id="fleet-summary" data-live="fleet" aria-labelledby="summary-h"><h2 id="summary-h" class="visually-hidden">Hosts by state</h2><ul class="cards">"#
    );
    for s in HostState::ALL {
        let n = counts.get(s);
        if n == 0 && matches!(s, HostState::Pending | HostState::Revoked) {
            continue;
        }
        let _ = write!(
            body,
            r##"<li class="card st-{key}"><a href="/?state={key}#hosts"><span class="count" data-state="{key}">{n}</span> <span class="what">{label}</span></a></li>"##,
            key = s.key(),
            label = s.label()
        );
    }
    let _ = write!(
        body,
        r#"</ul><p class="meta">{} hosts at revision {}; updated {}.</p>"#,
        counts.total(),
        fleet.revision,
        time_el(fleet.at_ms)
    );
    body.push_str(r#"<figure class="chart-box"><figcaption>Hosts by state over time</figcaption>"#);
    body.push_str(&chart::svg(history));
    body.push_str("</figure></section>");

    let _ = write!(
        body,
        r#"<section id="fleet-groups" data-live="fleet" class="two-col" aria-label="Hosts by site and role"><div>{}</div><div>{}</div></section>"#,
        by_label(&fleet.agents, "site", "By site"),
        by_label(&fleet.agents, "role", "By role")
    );

    let mut agents: Vec<&pb::Agent> =
        fleet.agents.iter().filter(|a| only.is_none_or(|s| classify(a) == s)).collect();
    agents.sort_by(|a, b| classify(b).cmp(&classify(a)).then(host_name(a).cmp(host_name(b))));
    let heading = match only {
        Some(s) => {
            format!(r#"Hosts: {} <a class="small" href="/#hosts">(show all)</a>"#, s.label())
        }
        None => "Hosts".to_owned(),
    };
    let _ = write!(
        body,
        r#"<section id="hosts" data-live="fleet" aria-labelledby="hosts-h"><h2 id="hosts-h">{heading}</h2><table class="grid hosts"><thead><tr><th scope="col">Host</th><th scope="col">State</th><th scope="col">Site</th><th scope="col">Role</th><th scope="col">Address</th><th scope="col">Revision</th><th scope="col">Enforcers</th><th scope="col">Last seen</th></tr></thead><tbody>"#
    );
    for a in &agents {
        let revision = if a.applied_revision == a.desired_revision {
            a.applied_revision.to_string()
        } else {
            format!("{} of {}", a.applied_revision, a.desired_revision)
        };
        let _ = write!(
            body,
            r#"<tr data-host="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{revision}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&a.id),
            host_link(&a.id, host_name(a)),
            badge(classify(a)),
            esc(label(a, "site")),
            esc(label(a, "role")),
            esc(a.addresses.first().map_or("-", String::as_str)),
            enforcers_summary(a),
            time_el(a.last_seen_ms),
        );
    }
    if agents.is_empty() {
        body.push_str(r#"<tr><td colspan="8">No hosts here.</td></tr>"#);
    }
    body.push_str("</tbody></table></section>");
    layout("Fleet overview", "/", &body)
}

fn events_table(
    events: &[(String, String, pb::AgentEvent)],
    with_host: bool,
    caption: &str,
) -> String {
    let mut out = format!(
        r#"<table class="grid events"><caption>{}</caption><thead><tr><th scope="col">Time</th>"#,
        esc(caption)
    );
    if with_host {
        out.push_str(r#"<th scope="col">Host</th>"#);
    }
    out.push_str(r#"<th scope="col">Kind</th><th scope="col">Enforcer</th><th scope="col">What happened</th></tr></thead><tbody>"#);
    for (agent_id, hostname, e) in events {
        let _ = write!(out, r#"<tr class="ev-{}"><td>{}</td>"#, esc(&e.kind), time_el(e.at_ms));
        if with_host {
            let name = if hostname.is_empty() { agent_id } else { hostname };
            let _ = write!(out, "<td>{}</td>", host_link(agent_id, name));
        }
        let mut what = esc(&e.summary);
        if !e.before.is_empty() || !e.after.is_empty() {
            let _ = write!(
                what,
                r#"<br><span class="small">before: {}; after: {}</span>"#,
                esc(&e.before),
                esc(&e.after)
            );
        }
        let _ = write!(
            out,
            r#"<td><span class="kind">{}</span></td><td>{}</td><td>{what}</td></tr>"#,
            esc(&e.kind),
            esc(&e.enforcer),
        );
    }
    if events.is_empty() {
        let cols = if with_host { 5 } else { 4 };
        let _ = write!(out, r#"<tr><td colspan="{cols}">None.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    out
}

/// `/hosts/{id}`: facts, labels, per-enforcer state, recent events.
pub fn host(id: &str, shown: Result<pb::ShowAgentReply, ClientError>) -> String {
    let reply = match shown {
        Ok(r) => r,
        Err(e) => {
            let body = format!(
                r#"<section id="host" data-live="fleet events">{}<p><a href="/">Back to the fleet</a></p></section>"#,
                error_banner(&format!("Showing host {id} failed"), &e)
            );
            return layout(&format!("Host {id}"), "/", &body);
        }
    };
    let a = reply.agent.unwrap_or_default();
    let state = classify(&a);
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<section id="host" data-live="fleet events" aria-label="Host details"><p>{} <span class="meta">agent <code>{}</code></span></p><dl class="facts">"#,
        badge(state),
        esc(&a.id)
    );
    let mut labels: Vec<(&String, &String)> = a.labels.iter().collect();
    labels.sort();
    let labels: Vec<String> =
        labels.iter().map(|(k, v)| format!(r#"<code>{}={}</code>"#, esc(k), esc(v))).collect();
    let online = if a.revoked {
        format!("revoked: {}", esc(&a.revoked_reason))
    } else if a.online {
        format!("online, streaming from controller node {}", a.node)
    } else {
        "offline".to_owned()
    };
    let facts: [(&str, String); 9] = [
        ("Hostname", esc(host_name(&a))),
        ("Operating system", esc(if a.os.is_empty() { "-" } else { &a.os })),
        ("Addresses", esc(&a.addresses.join(", "))),
        ("Labels", if labels.is_empty() { "-".into() } else { labels.join(" ") }),
        ("Connection", online),
        ("Last seen", time_el(a.last_seen_ms)),
        ("Revision", format!("applied {} / desired {}", a.applied_revision, a.desired_revision)),
        ("Agent version", esc(if a.agent_version.is_empty() { "-" } else { &a.agent_version })),
        ("Certificate expires", time_el(a.cert_not_after * 1000)),
    ];
    for (k, v) in facts {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl>");
    body.push_str(r#"<h2>Enforcers</h2><table class="grid"><thead><tr><th scope="col">Enforcer</th><th scope="col">State</th><th scope="col">Revision</th><th scope="col">Reason</th><th scope="col">Checked</th><th scope="col">Details</th></tr></thead><tbody>"#);
    for e in &a.enforcers {
        let (key, text) = enforcer_state(e.state);
        let mut details: Vec<(&String, &String)> = e.details.iter().collect();
        details.sort();
        let details: Vec<String> =
            details.iter().map(|(k, v)| format!("{}: {}", esc(k), esc(v))).collect();
        let _ = write!(
            body,
            r#"<tr data-enforcer="{}"><th scope="row">{}</th><td><span class="badge st-{key}">{text}</span></td><td class="num">{}</td><td>{}</td><td>{}</td><td class="small">{}</td></tr>"#,
            esc(&e.enforcer),
            esc(&e.enforcer),
            e.revision,
            esc(&e.reason),
            time_el(e.checked_at_ms),
            details.join("<br>")
        );
    }
    if a.enforcers.is_empty() {
        body.push_str(r#"<tr><td colspan="6">Nothing reported yet.</td></tr>"#);
    }
    body.push_str("</tbody></table>");
    let mut events: Vec<(String, String, pb::AgentEvent)> =
        reply.events.into_iter().map(|e| (a.id.clone(), a.hostname.clone(), e)).collect();
    events.sort_by(|x, y| y.2.at_ms.cmp(&x.2.at_ms).then(y.2.id.cmp(&x.2.id)));
    body.push_str("<h2>Recent events</h2>");
    body.push_str(&events_table(&events, false, "Newest first"));
    body.push_str("</section>");
    layout(&format!("Host {}", host_name(&a)), "/", &body)
}

/// `/rollout`: the active rollout (or how the last ended), canaries, the fleet's progress,
/// and the operator's controls.
pub fn rollout(status: Result<pb::RolloutStatus, ClientError>, fleet: Option<Fleet>) -> String {
    let mut body = String::new();
    body.push_str(
        r#"<div class="rollout-grid"><section id="rollout" data-live="rollout fleet" aria-label="Rollout progress">"#,
    );
    let s = match status {
        Ok(s) => s,
        Err(e) => {
            body.push_str(&error_banner("Reading the rollout failed", &e));
            body.push_str("</section></div>");
            return layout("Rollout", "/rollout", &body);
        }
    };
    let fleet = fleet.unwrap_or_default();
    let names = fleet.names();
    let _ = write!(
        body,
        r#"<p class="phase">Phase: <strong class="badge phase-{p}" id="rollout-phase">{p}</strong></p><dl class="facts">"#,
        p = esc(&s.phase)
    );
    let mut facts: Vec<(&str, String)> = Vec::new();
    if s.phase != "none" {
        facts.push(("Target revision", s.target_revision.to_string()));
        facts.push((
            "Selection",
            if s.selection.is_empty() { "-".into() } else { esc(&s.selection) },
        ));
    }
    facts.push(("Released revision", s.released_revision.to_string()));
    facts.push(("Newest stored revision", s.stored_revision.to_string()));
    if s.deadline_ms > 0 {
        let left = ((s.deadline_ms - now_ms()).max(0) / 1000) as u64;
        facts.push((
            "Canaries must confirm",
            format!("within {} min {} s (wait {} s)", left / 60, left % 60, s.wait_seconds),
        ));
    }
    if !s.reason.is_empty() {
        facts.push(("Reason", esc(&s.reason)));
    }
    for (k, v) in facts {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl>");
    if s.phase != "none" {
        let confirmed = s.canaries.iter().filter(|c| c.state == "confirmed").count();
        let _ = write!(
            body,
            r#"<h2>Canaries</h2><p><label for="canary-meter">{confirmed} of {} canaries confirmed</label> <meter id="canary-meter" min="0" max="{}" value="{confirmed}">{confirmed} of {}</meter></p><table class="grid"><thead><tr><th scope="col">Host</th><th scope="col">Applied revision</th><th scope="col">State</th></tr></thead><tbody>"#,
            s.canaries.len(),
            s.canaries.len().max(1),
            s.canaries.len()
        );
        for c in &s.canaries {
            let name = names.get(&c.agent_id).cloned().unwrap_or_else(|| c.agent_id.clone());
            let class = if c.state == "confirmed" {
                "compliant"
            } else if c.state.starts_with("failed") {
                "failed"
            } else {
                "pending"
            };
            let _ = write!(
                body,
                r#"<tr><td>{}</td><td class="num">{}</td><td><span class="badge st-{class}">{}</span></td></tr>"#,
                host_link(&c.agent_id, &name),
                c.applied_revision,
                esc(if c.state.is_empty() { "-" } else { &c.state })
            );
        }
        if s.canaries.is_empty() {
            body.push_str(r#"<tr><td colspan="3">No canaries.</td></tr>"#);
        }
        body.push_str("</tbody></table>");
    }
    // The fleet: who holds the target, who the released revision.
    let live: Vec<&pb::Agent> = fleet.agents.iter().filter(|a| !a.revoked).collect();
    let target = if s.phase == "none" { s.released_revision } else { s.target_revision };
    let at_target = live.iter().filter(|a| a.applied_revision >= target && target > 0).count();
    let _ = write!(
        body,
        r#"<h2>Fleet</h2><p><label for="fleet-meter">{at_target} of {} hosts have applied revision {target} or newer</label> <meter id="fleet-meter" min="0" max="{}" value="{at_target}">{at_target} of {}</meter></p>"#,
        live.len(),
        live.len().max(1),
        live.len()
    );
    body.push_str("</section>");

    // Controls: outside the live region so a refresh never resets what is being typed.
    let suggested = if s.stored_revision > s.released_revision {
        s.stored_revision.to_string()
    } else {
        String::new()
    };
    let _ = write!(
        body,
        r#"<section aria-labelledby="controls-h" class="controls"><h2 id="controls-h">Control the rollout</h2>
<p class="small">Operators and admins only: the controller checks your certificate's role and refuses the rest.</p>
<div id="action-result" class="result" role="status" aria-live="assertive"></div>
<div class="buttons">
<form method="post" action="/rollout/pause" data-post><button type="submit" id="pause">Pause</button></form>
<form method="post" action="/rollout/resume" data-post><button type="submit" id="resume">Resume</button></form>
<form method="post" action="/rollout/abort" data-post><button type="submit" id="abort" class="danger">Abort</button></form>
</div>
<form method="post" action="/rollout/start" data-post class="start">
<fieldset><legend>Start a rollout of a staged revision</legend>
<p><label for="revision">Staged revision</label> <input id="revision" name="revision" inputmode="numeric" pattern="[0-9]+" required value="{suggested}"></p>
<p><label for="canary">Canaries: label selector</label> <input id="canary" name="canary" placeholder="role=ct,site=north"></p>
<p><label for="percent">or percentage of hosts</label> <input id="percent" name="percent" inputmode="numeric" pattern="[0-9]*" placeholder="5"></p>
<p><label for="wait">Canaries must confirm within</label> <input id="wait" name="wait" value="10m"></p>
<p><button type="submit" id="start">Start rollout</button></p>
</fieldset></form></section></div>"#
    );
    layout("Rollout", "/rollout", &body)
}

/// The kinds the alerts page shows.
pub const ALERT_KINDS: &[&str] = &[
    "user-added",
    "user-removed",
    "uid-changed",
    "uid0-duplicate",
    "privileged-group-added",
    "privileged-group-removed",
    "password-emptied",
    "system-account-shell",
    "sudoers-changed",
    "brute-force",
    "commit-confirmed-rollback",
    "apply-failed",
    "events-dropped",
];

/// `/alerts`: security-relevant events, newest first.
pub fn alerts(events: Result<Vec<pb::StoredEvent>, ClientError>, since: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<form method="get" action="/alerts" class="filters"><p><label for="since">Since</label> <input id="since" name="since" value="{}"> <button type="submit">Show</button></p></form>"#,
        esc(since)
    );
    body.push_str(r#"<section id="alerts" data-live="events" aria-label="Alerts">"#);
    match events {
        Ok(events) => {
            let rows: Vec<(String, String, pb::AgentEvent)> = events
                .into_iter()
                .rev()
                .take(300)
                .map(|e| (e.agent_id, e.hostname, e.event.unwrap_or_default()))
                .collect();
            let _ = write!(
                body,
                r#"<p class="meta">{} alerts (newest first, at most 300).</p>"#,
                rows.len()
            );
            body.push_str(&events_table(
                &rows,
                true,
                "New users, privileged-group changes, brute force, rollbacks, failures",
            ));
        }
        Err(e) => body.push_str(&error_banner("Listing alerts failed", &e)),
    }
    body.push_str("</section>");
    layout("Alerts", "/alerts", &body)
}

/// The login audit's filters (all optional but `since`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct LoginFilter {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub user: String,
    /// "", "success" or "failure".
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub since: String,
}

impl LoginFilter {
    pub fn matches(&self, e: &pb::StoredEvent) -> bool {
        let Some(ev) = &e.event else { return false };
        let field = |k: &str| ev.fields.get(k).map_or("", String::as_str);
        if !self.user.is_empty() && field("user") != self.user {
            return false;
        }
        match self.result.as_str() {
            "success" => ev.kind == "login" && field("success") == "true",
            "failure" => ev.kind == "brute-force" || field("success") != "true",
            _ => true,
        }
    }
}

/// `/logins`: the login audit with filters.
pub fn logins(events: Result<Vec<pb::StoredEvent>, ClientError>, f: &LoginFilter) -> String {
    let mut body = String::new();
    let sel = |v: &str| if f.result == v { " selected" } else { "" };
    let _ = write!(
        body,
        r#"<form method="get" action="/logins" class="filters"><fieldset><legend>Filter</legend>
<label for="host">Host</label> <input id="host" name="host" value="{}" placeholder="hostname or agt-...">
<label for="user">User</label> <input id="user" name="user" value="{}">
<label for="result">Result</label> <select id="result" name="result"><option value=""{}>any</option><option value="success"{}>succeeded</option><option value="failure"{}>failed</option></select>
<label for="since">Since</label> <input id="since" name="since" value="{}" size="6">
<button type="submit">Apply</button></fieldset></form>"#,
        esc(&f.host),
        esc(&f.user),
        sel(""),
        sel("success"),
        sel("failure"),
        esc(&f.since)
    );
    body.push_str(r#"<section id="logins" data-live="events" aria-label="Login attempts">"#);
    match events {
        Ok(events) => {
            let events: Vec<pb::StoredEvent> =
                events.into_iter().filter(|e| f.matches(e)).collect();
            // The same sums as `bulwarkctl logins report` and the compliance report.
            let host_events: Vec<crate::report::HostEvent> =
                events.iter().cloned().map(crate::ctl::report::host_event).collect();
            let rows = crate::report::logins::summarize(&host_events);
            body.push_str(r#"<h2>Per host and user</h2><table class="grid"><thead><tr><th scope="col">Host</th><th scope="col">User</th><th scope="col" class="num">Attempts</th><th scope="col" class="num">Failed</th><th scope="col" class="num">Succeeded</th><th scope="col" class="num">Brute force</th><th scope="col">Sources</th></tr></thead><tbody>"#);
            for r in &rows {
                let sources: Vec<&str> = r.sources.iter().map(String::as_str).collect();
                let _ = write!(
                    body,
                    r#"<tr><td>{}</td><td>{}</td><td class="num">{}</td><td class="num{}">{}</td><td class="num">{}</td><td class="num{}">{}</td><td>{}</td></tr>"#,
                    esc(&r.host),
                    esc(&r.user),
                    r.attempts,
                    if r.failures > 0 { " attention" } else { "" },
                    r.failures,
                    r.successes,
                    if r.brute_force > 0 { " attention" } else { "" },
                    r.brute_force,
                    esc(&sources.join(", "))
                );
            }
            if rows.is_empty() {
                body.push_str(r#"<tr><td colspan="7">No login attempts match.</td></tr>"#);
            }
            body.push_str(r#"</tbody></table><h2>Attempts</h2><table class="grid"><caption>Newest first, at most 300</caption><thead><tr><th scope="col">Time</th><th scope="col">Host</th><th scope="col">User</th><th scope="col">Result</th><th scope="col">Service</th><th scope="col">Source</th><th scope="col">Detail</th></tr></thead><tbody>"#);
            let mut shown = 0;
            for e in events.iter().rev().take(300) {
                let Some(ev) = &e.event else { continue };
                shown += 1;
                let field = |k: &str| ev.fields.get(k).map_or("", String::as_str);
                let (class, result) = match (ev.kind.as_str(), field("success")) {
                    ("brute-force", _) => ("failed", "brute force"),
                    (_, "true") => ("compliant", "succeeded"),
                    _ => ("failed", "failed"),
                };
                let host = if e.hostname.is_empty() { &e.agent_id } else { &e.hostname };
                let detail = if field("reason").is_empty() { &ev.summary } else { field("reason") };
                let _ = write!(
                    body,
                    r#"<tr><td>{}</td><td>{}</td><td>{}</td><td><span class="badge st-{class}">{result}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    time_el(ev.at_ms),
                    host_link(&e.agent_id, host),
                    esc(field("user")),
                    esc(field("service")),
                    esc(field("source")),
                    esc(detail)
                );
            }
            if shown == 0 {
                body.push_str(r#"<tr><td colspan="7">None.</td></tr>"#);
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_banner("Listing logins failed", &e)),
    }
    body.push_str("</section>");
    layout("Login audit", "/logins", &body)
}

/// `/policies`: the stored documents.
pub fn policies(docs: Result<pb::ListDocumentsReply, ClientError>) -> String {
    let mut body = String::new();
    body.push_str(r#"<section id="documents" data-live="rollout" aria-label="Stored documents">"#);
    match docs {
        Ok(reply) => {
            let _ = write!(
                body,
                r#"<p class="meta">{} documents at revision {}. Open one for its history with the changes between revisions.</p><table class="grid"><thead><tr><th scope="col">Document</th><th scope="col" class="num">Last changed at revision</th></tr></thead><tbody>"#,
                reply.documents.len(),
                reply.revision
            );
            for d in &reply.documents {
                let _ = write!(
                    body,
                    r#"<tr><td><a href="/policies/{}">{}</a></td><td class="num">{}</td></tr>"#,
                    esc(&d.key.split('/').map(url_enc).collect::<Vec<_>>().join("/")),
                    esc(&d.key),
                    d.mod_revision
                );
            }
            if reply.documents.is_empty() {
                body.push_str(r#"<tr><td colspan="2">No documents stored.</td></tr>"#);
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_banner("Listing policy documents failed", &e)),
    }
    body.push_str("</section>");
    layout("Policies", "/policies", &body)
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned())
}

/// A line diff of two texts, as `<pre>` lines marked added (+) or removed (-), with three
/// lines of context around each change.
pub fn diff(old: &str, new: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let mut out = String::from(r#"<pre class="diff">"#);
    for (i, group) in d.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push_str(r#"<span class="hunk">…</span>"#);
        }
        for op in group {
            for change in d.iter_changes(op) {
                let (class, sign, label) = match change.tag() {
                    similar::ChangeTag::Delete => ("del", '-', "removed: "),
                    similar::ChangeTag::Insert => ("add", '+', "added: "),
                    similar::ChangeTag::Equal => ("ctx", ' ', ""),
                };
                let line = change.value().trim_end_matches('\n');
                let sr = if label.is_empty() {
                    String::new()
                } else {
                    format!(r#"<span class="visually-hidden">{label}</span>"#)
                };
                // The spans are blocks: no newline between them.
                let _ = write!(out, r#"<span class="{class}">{sr}{sign} {}</span>"#, esc(line));
            }
        }
    }
    out.push_str("</pre>");
    out
}

/// `/policies/{key}`: every retained revision of one document, newest first, each with
/// its change from the one before.
pub fn policy_history(key: &str, entries: Result<Vec<pb::HistoryEntry>, ClientError>) -> String {
    let mut body = String::new();
    body.push_str(r#"<p><a href="/policies">All documents</a></p><section id="history" data-live="rollout" aria-label="History">"#);
    match entries {
        Ok(entries) => {
            let texts: Vec<String> = entries
                .iter()
                .map(|e| if e.op == "delete" { String::new() } else { pretty(&e.json) })
                .collect();
            for (i, e) in entries.iter().enumerate().rev() {
                let prev = if i == 0 { "" } else { texts[i - 1].as_str() };
                let what = match (e.op.as_str(), i) {
                    ("delete", _) => "deleted",
                    (_, 0) => "created (or oldest retained)",
                    _ => "changed",
                };
                // The oldest retained revision is shown whole; later ones as changes.
                let shown = if i == 0 && e.op != "delete" {
                    format!(r#"<pre class="doc">{}</pre>"#, esc(&texts[i]))
                } else {
                    diff(prev, &texts[i])
                };
                let _ = write!(
                    body,
                    r#"<article class="revision"><h2>Revision {}: {what}</h2>{shown}</article>"#,
                    e.revision,
                );
            }
            if entries.is_empty() {
                body.push_str("<p>No retained history for this document.</p>");
            }
        }
        Err(e) => body.push_str(&error_banner(&format!("Reading the history of {key} failed"), &e)),
    }
    body.push_str("</section>");
    layout(&format!("Policy history: {key}"), "/policies", &body)
}

type Members = (pb::NodeStatus, Vec<(pb::Member, Result<pb::NodeStatus, ClientError>)>);

/// `/cluster`: every member with role, term, log and applied index, reachability.
pub fn cluster(status: Result<Members, ClientError>) -> String {
    let mut body = String::new();
    body.push_str(r#"<section id="cluster" data-live="cluster" aria-label="Cluster health">"#);
    match status {
        Ok((first, members)) => {
            let leader = members.iter().find_map(|(m, s)| {
                s.as_ref()
                    .ok()
                    .filter(|s| s.role == pb::Role::Leader as i32)
                    .map(|s| (m.id, s.term))
            });
            let reachable = members.iter().filter(|(_, s)| s.is_ok()).count();
            let voters = members.iter().filter(|(m, _)| m.voter).count();
            let summary = match leader {
                Some((id, term)) => format!("Leader: node {id}, term {term}."),
                None => "No leader known: writes are refused until one is elected.".into(),
            };
            let _ = write!(
                body,
                r#"<p class="meta">Cluster <strong>{}</strong>: {} of {} members reachable ({voters} voters). <span id="leader">{}</span></p>"#,
                esc(&first.cluster_name),
                reachable,
                members.len(),
                summary
            );
            body.push_str(r#"<table class="grid"><thead><tr><th scope="col">Node</th><th scope="col">Address</th><th scope="col">Membership</th><th scope="col">Role</th><th scope="col" class="num">Term</th><th scope="col" class="num">Last log index</th><th scope="col" class="num">Applied index</th><th scope="col" class="num">Revision</th><th scope="col" class="num">Snapshot index</th><th scope="col">Reachable</th></tr></thead><tbody>"#);
            for (m, s) in &members {
                let membership = if m.voter { "voter" } else { "learner" };
                match s {
                    Ok(s) => {
                        let role = role_name(s.role);
                        let _ = write!(
                            body,
                            r#"<tr><th scope="row">{}</th><td>{}</td><td>{membership}</td><td><span class="badge role-{role}">{role}</span></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>yes</td></tr>"#,
                            m.id,
                            esc(&m.addr),
                            s.term,
                            s.last_log_index,
                            s.applied_index,
                            s.revision,
                            s.snapshot_index
                        );
                    }
                    Err(e) => {
                        let _ = write!(
                            body,
                            r#"<tr><th scope="row">{}</th><td>{}</td><td>{membership}</td><td><span class="badge st-failed">unreachable</span></td><td class="num">-</td><td class="num">-</td><td class="num">-</td><td class="num">-</td><td class="num">-</td><td>no: {}</td></tr>"#,
                            m.id,
                            esc(&m.addr),
                            esc(&e.message)
                        );
                    }
                }
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => body.push_str(&error_banner("Reading the cluster status failed", &e)),
    }
    body.push_str("</section>");
    layout("Cluster health", "/cluster", &body)
}

/// A plain page for a request the console refuses or does not know.
pub fn message(title: &str, text: &str) -> String {
    layout(title, "", &format!("<p>{}</p>", esc(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_strings_are_escaped_everywhere() {
        let evil = r#"<script>alert(1)</script>"#;
        let agent = pb::Agent {
            id: "agt-1".into(),
            hostname: evil.into(),
            labels: [("site".to_owned(), evil.to_owned())].into(),
            addresses: vec![evil.into()],
            online: true,
            ..Default::default()
        };
        let fleet_page =
            fleet(Ok(Fleet { agents: vec![agent.clone()], revision: 3, at_ms: 1 }), &[], None);
        let ev = pb::AgentEvent { kind: evil.into(), summary: evil.into(), ..Default::default() };
        let host_page =
            host("agt-1", Ok(pb::ShowAgentReply { agent: Some(agent), events: vec![ev] }));
        for page in [fleet_page, host_page] {
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        }
    }

    #[test]
    fn diffs_mark_added_and_removed_lines() {
        let d = diff("a\nb\nc\n", "a\nB\nc\n");
        assert!(
            d.contains(
                r#"<span class="del"><span class="visually-hidden">removed: </span>- b</span>"#
            ),
            "{d}"
        );
        assert!(
            d.contains(
                r#"<span class="add"><span class="visually-hidden">added: </span>+ B</span>"#
            ),
            "{d}"
        );
        assert!(d.contains(r#"<span class="ctx">  a</span>"#), "{d}");
    }

    #[test]
    fn login_filters() {
        let ev = |user: &str, ok: bool| pb::StoredEvent {
            event: Some(pb::AgentEvent {
                kind: "login".into(),
                fields: [
                    ("user".to_owned(), user.to_owned()),
                    ("success".to_owned(), ok.to_string()),
                ]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = LoginFilter { user: "rad".into(), result: "failure".into(), ..Default::default() };
        assert!(f.matches(&ev("rad", false)));
        assert!(!f.matches(&ev("rad", true)));
        assert!(!f.matches(&ev("bob", false)));
    }
}
