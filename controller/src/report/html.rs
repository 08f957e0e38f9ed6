//! The report as one self-contained HTML file: inline CSS, no scripts or external assets,
//! semantic tables (caption, column and row headers), status shown as text as well as
//! colour (dark text on light tints), and a print stylesheet. Every string that came from
//! a host, a policy or an admin is escaped.

use std::fmt::Write as _;

use super::{ComplianceReport, GroupTotals, Status, Totals};

/// `s` with `& < > " '` escaped, safe in element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
  background: #fff; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #1a1a1a; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .9em; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0 1rem; font-size: .92rem; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #8a8a8a; padding: .3rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #e8e8e8; }
tbody th { font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.s { font-weight: 600; white-space: nowrap; }
.nw { white-space: nowrap; }
.met { background: #dff0d8; }
.repaired { background: #e6eefb; }
.not-met { background: #f9d6d5; }
.unknown { background: #fbeed0; }
p.none { font-style: italic; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  h2 { break-after: avoid; }
  tr, dl.meta { break-inside: avoid; }
  thead { display: table-header-group; }
  .met, .repaired, .not-met, .unknown, thead th { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"#;

fn status_cell(s: Option<Status>) -> String {
    match s {
        Some(s) => format!("<td class=\"s {0}\">{0}</td>", s.name()),
        None => "<td>not judged</td>".into(),
    }
}

fn n(v: u64) -> String {
    format!("<td class=\"n\">{v}</td>")
}

fn totals_cells(t: &Totals) -> String {
    [t.hosts, t.met, t.repaired, t.not_met, t.unknown].into_iter().map(n).collect()
}

const TOTALS_HEAD: &str = "<th scope=\"col\">Hosts</th><th scope=\"col\">Met</th>\
<th scope=\"col\">Repaired</th><th scope=\"col\">Not met</th><th scope=\"col\">Unknown</th>";

fn group_table(out: &mut String, caption: &str, what: &str, groups: &[GroupTotals]) {
    if groups.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table><caption>{}</caption><thead><tr><th scope=\"col\">{}</th>{TOTALS_HEAD}</tr></thead><tbody>",
        escape(caption),
        escape(what)
    );
    for g in groups {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th>{}</tr>",
            escape(&g.name),
            totals_cells(&g.totals)
        );
    }
    out.push_str("</tbody></table>\n");
}

/// One row per control, one column per group: "meeting of hosts", and how many are not
/// met or unknown.
fn matrix(
    out: &mut String,
    caption: &str,
    what: &str,
    groups: &[&str],
    r: &ComplianceReport,
    of: impl Fn(&super::ControlSummary) -> &Vec<GroupTotals>,
) {
    if groups.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table><caption>{} (hosts meeting the control of hosts it applies to)</caption><thead><tr>\
<th scope=\"col\">Control</th>",
        escape(caption)
    );
    for g in groups {
        let _ = write!(out, "<th scope=\"col\">{} {}</th>", escape(what), escape(g));
    }
    out.push_str("</tr></thead><tbody>");
    for c in &r.controls {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}: {}</th>",
            c.framework.title(),
            escape(&c.control)
        );
        for g in groups {
            match of(c).iter().find(|t| t.name == *g) {
                None => out.push_str("<td>n/a</td>"),
                Some(t) => {
                    let t = &t.totals;
                    let mut cell = format!("{} of {}", t.met + t.repaired, t.hosts);
                    if t.not_met > 0 {
                        let _ = write!(cell, ", {} not met", t.not_met);
                    }
                    if t.unknown > 0 {
                        let _ = write!(cell, ", {} unknown", t.unknown);
                    }
                    let class = if t.not_met > 0 {
                        "not-met"
                    } else if t.unknown > 0 {
                        "unknown"
                    } else {
                        "met"
                    };
                    let _ = write!(out, "<td class=\"{class}\">{cell}</td>");
                }
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn meta(out: &mut String, term: &str, value: &str) {
    let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", escape(term));
}

fn or_unknown(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "unknown".to_owned(), escape)
}

/// The whole report as an HTML document.
pub fn render(r: &ComplianceReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let scope = r.site.as_deref().map_or_else(|| "all sites".to_owned(), |s| format!("site {s}"));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Compliance report: {} ({}), {}</title><style>{STYLE}</style></head><body>\n<header>\
<h1>Compliance report</h1><p>Bulwark cluster <strong>{}</strong>, {}, {} to {}.</p></header>\n<main>\n",
        escape(&r.cluster.name),
        escape(&scope),
        escape(&r.generated_at),
        escape(&r.cluster.name),
        escape(&scope),
        escape(&r.period.since),
        escape(&r.period.until),
    );

    // Provenance.
    out.push_str("<section aria-labelledby=\"about\"><h2 id=\"about\">About this report</h2><dl class=\"meta\">");
    meta(&mut out, "Generated", &escape(&r.generated_at));
    meta(&mut out, "Cluster", &escape(&r.cluster.name));
    meta(&mut out, "Cluster CA SHA-256", &format!("<code>{}</code>", escape(&r.cluster.ca_sha256)));
    meta(&mut out, "Answered by node", &escape(&r.cluster.answered_by));
    meta(
        &mut out,
        "Period",
        &format!("{} to {}", escape(&r.period.since), escape(&r.period.until)),
    );
    meta(&mut out, "Hosts", &escape(&scope));
    let p = &r.policy;
    meta(&mut out, "Policy revision in force", &p.revision.to_string());
    meta(&mut out, "Applied at", &or_unknown(&p.applied_at));
    meta(&mut out, "Applied by", &or_unknown(&p.applied_by));
    meta(&mut out, "Applied with", &or_unknown(&p.applied_with));
    if p.stored_revision != p.revision {
        meta(
            &mut out,
            "Stored revision",
            &format!("{} (rollout {})", p.stored_revision, escape(&p.rollout_phase)),
        );
    }
    meta(&mut out, "Policies", &escape(&p.policies.join(", ")));
    meta(&mut out, "Report format", &format!("schema {}", r.schema));
    out.push_str("</dl>");
    if !r.notes.is_empty() {
        out.push_str("<h3>Notes</h3><ul>");
        for note in &r.notes {
            let _ = write!(out, "<li>{}</li>", escape(note));
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>\n");

    // Summary.
    out.push_str(
        "<section aria-labelledby=\"summary\"><h2 id=\"summary\">Summary</h2>\
<p>A host's status is the worst over the controls that apply to it: <strong>not-met</strong> \
(an enforcer failed, or differs from the policy in audit mode), <strong>unknown</strong> (offline, \
never reported, or no state for an enforcer), <strong>repaired</strong> (compliant after drift was \
repaired) or <strong>met</strong>.</p>",
    );
    let _ = write!(
        out,
        "<table><caption>All hosts</caption><thead><tr>{TOTALS_HEAD}</tr></thead><tbody><tr>{}</tr></tbody></table>",
        totals_cells(&r.totals)
    );
    group_table(&mut out, "Hosts per site", "Site", &r.sites);
    group_table(&mut out, "Hosts per class (role)", "Class", &r.classes);
    out.push_str("</section>\n");

    // Controls.
    out.push_str("<section aria-labelledby=\"controls\"><h2 id=\"controls\">Controls</h2>");
    if r.controls.is_empty() {
        out.push_str("<p class=\"none\">No policy names a control.</p>");
    } else {
        let _ = write!(
            out,
            "<table><caption>Checklist items and NIST SP 800-53 controls</caption><thead><tr>\
<th scope=\"col\">Framework</th><th scope=\"col\">Control</th><th scope=\"col\">Policies</th>\
<th scope=\"col\">Evidence</th>{TOTALS_HEAD}</tr></thead><tbody>"
        );
        for c in &r.controls {
            let _ = write!(
                out,
                "<tr><td class=\"nw\">{}</td><th scope=\"row\">{}</th><td>{}</td><td>{}</td>{}</tr>",
                c.framework.title(),
                escape(&c.control),
                escape(&c.policies.join(", ")),
                escape(&c.enforcers.join(", ")),
                totals_cells(&c.totals)
            );
        }
        out.push_str("</tbody></table>\n");
        let sites: Vec<&str> = r.sites.iter().map(|g| g.name.as_str()).collect();
        let classes: Vec<&str> = r.classes.iter().map(|g| g.name.as_str()).collect();
        matrix(&mut out, "Controls per site", "Site", &sites, r, |c| &c.by_site);
        matrix(&mut out, "Controls per class (role)", "Class", &classes, r, |c| &c.by_class);
    }
    out.push_str("</section>\n");

    // Findings and every result.
    out.push_str("<section aria-labelledby=\"findings\"><h2 id=\"findings\">Findings</h2>");
    let findings: Vec<_> = r.results.iter().filter(|x| x.status != Status::Met).collect();
    let results_head = "<thead><tr><th scope=\"col\">Host</th><th scope=\"col\">Site</th>\
<th scope=\"col\">Class</th><th scope=\"col\">Framework</th><th scope=\"col\">Control</th>\
<th scope=\"col\">Status</th><th scope=\"col\">Reason</th></tr></thead>";
    let result_rows = |out: &mut String, rows: &[&super::ControlResult]| {
        for x in rows {
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td class=\"nw\">{}</td><td>{}</td>{}<td>{}</td></tr>",
                escape(&x.hostname),
                escape(&x.site),
                escape(&x.class),
                x.framework.title(),
                escape(&x.control),
                status_cell(Some(x.status)),
                escape(&x.reason)
            );
        }
    };
    if findings.is_empty() {
        out.push_str("<p class=\"none\">Every host meets every control that applies to it.</p>");
    } else {
        let _ = write!(
            out,
            "<table><caption>Hosts not plainly meeting a control</caption>{results_head}<tbody>"
        );
        result_rows(&mut out, &findings);
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
    if !r.results.is_empty() {
        let _ = write!(
            out,
            "<section aria-labelledby=\"results\"><h2 id=\"results\">Every host and control</h2>\
<table><caption>Each control that applies to each host</caption>{results_head}<tbody>"
        );
        let all: Vec<_> = r.results.iter().collect();
        result_rows(&mut out, &all);
        out.push_str("</tbody></table></section>\n");
    }

    // Hosts.
    out.push_str("<section aria-labelledby=\"hosts\"><h2 id=\"hosts\">Hosts</h2>");
    if r.hosts.is_empty() {
        out.push_str("<p class=\"none\">No enrolled hosts.</p>");
    } else {
        out.push_str(
            "<table><caption>Enrolled hosts and their enforcers</caption><thead><tr>\
<th scope=\"col\">Host</th><th scope=\"col\">Agent</th><th scope=\"col\">Site</th>\
<th scope=\"col\">Class</th><th scope=\"col\">Online</th><th scope=\"col\">Last seen</th>\
<th scope=\"col\">Status</th><th scope=\"col\">Policies</th><th scope=\"col\">Enforcers</th>\
</tr></thead><tbody>",
        );
        for h in &r.hosts {
            let enforcers: Vec<String> = h
                .enforcers
                .iter()
                .map(|e| {
                    let why =
                        if e.reason.is_empty() { String::new() } else { format!(": {}", e.reason) };
                    escape(&format!("{} {} (r{}){why}", e.enforcer, e.state, e.revision))
                })
                .collect();
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{}</th><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td>{}<td>{}</td><td>{}</td></tr>",
                escape(&h.hostname),
                escape(&h.id),
                escape(&h.site),
                escape(&h.class),
                if h.online { "yes" } else { "no" },
                escape(&h.last_seen),
                status_cell(h.status),
                escape(&h.policies.join(", ")),
                if enforcers.is_empty() {
                    "none reported".to_owned()
                } else {
                    enforcers.join("<br>")
                }
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");

    // Policy changes.
    out.push_str(
        "<section aria-labelledby=\"changes\"><h2 id=\"changes\">Policy changes in the period</h2>",
    );
    if p.changes.is_empty() {
        out.push_str("<p class=\"none\">None.</p>");
    } else {
        out.push_str(
            "<table><caption>Policy changes and rollouts (admin audit log)</caption><thead><tr>\
<th scope=\"col\">When</th><th scope=\"col\">Who</th><th scope=\"col\">Call</th>\
<th scope=\"col\">What</th></tr></thead><tbody>",
        );
        for c in &p.changes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&c.at),
                escape(&c.who),
                escape(&c.method),
                escape(&c.target)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");

    // Logins.
    let l = &r.logins;
    let _ = write!(
        out,
        "<section aria-labelledby=\"logins\"><h2 id=\"logins\">Login audit</h2>\
<table><caption>Login attempts in the period</caption><thead><tr><th scope=\"col\">Attempts</th>\
<th scope=\"col\">Failed</th><th scope=\"col\">Succeeded</th><th scope=\"col\">Brute-force alerts</th>\
</tr></thead><tbody><tr>{}{}{}{}</tr></tbody></table>",
        n(l.totals.attempts),
        n(l.totals.failures),
        n(l.totals.successes),
        n(l.totals.brute_force)
    );
    if !l.rows.is_empty() {
        out.push_str(
            "<table><caption>Per host and user</caption><thead><tr><th scope=\"col\">Host</th>\
<th scope=\"col\">User</th><th scope=\"col\">Attempts</th><th scope=\"col\">Failed</th>\
<th scope=\"col\">Succeeded</th><th scope=\"col\">Brute force</th><th scope=\"col\">Sources</th>\
</tr></thead><tbody>",
        );
        for row in &l.rows {
            let sources: Vec<&str> = row.sources.iter().map(String::as_str).collect();
            let _ = write!(
                out,
                "<tr><th scope=\"row\">{}</th><td>{}</td>{}{}{}{}<td>{}</td></tr>",
                escape(&row.host),
                escape(&row.user),
                n(row.attempts),
                n(row.failures),
                n(row.successes),
                n(row.brute_force),
                escape(&sources.join(", "))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    alerts_table(&mut out, "Brute-force alerts", &l.brute_force_alerts);
    out.push_str("</section>\n");

    // Accounts.
    out.push_str(
        "<section aria-labelledby=\"accounts\"><h2 id=\"accounts\">User-account alerts</h2>",
    );
    if r.accounts.counts.is_empty() {
        out.push_str("<p class=\"none\">No user-account changes were reported in the period.</p>");
    } else {
        out.push_str(
            "<table><caption>Alerts by kind</caption><thead><tr><th scope=\"col\">Kind</th>\
<th scope=\"col\">Count</th></tr></thead><tbody>",
        );
        for (kind, count) in &r.accounts.counts {
            let _ = write!(out, "<tr><th scope=\"row\">{}</th>{}</tr>", escape(kind), n(*count));
        }
        out.push_str("</tbody></table>\n");
        alerts_table(&mut out, "User-account alerts", &r.accounts.alerts);
    }
    out.push_str("</section>\n</main>\n<footer><p>Produced by bulwarkctl report compliance.</p></footer>\n</body></html>\n");
    out
}

fn alerts_table(out: &mut String, caption: &str, alerts: &[super::Alert]) {
    if alerts.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table><caption>{}</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Host</th>\
<th scope=\"col\">Kind</th><th scope=\"col\">User</th><th scope=\"col\">Summary</th></tr></thead><tbody>",
        escape(caption)
    );
    for a in alerts {
        let _ = write!(
            out,
            "<tr><td>{}</td><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.at),
            escape(&a.host),
            escape(&a.kind),
            escape(&a.user),
            escape(&a.summary)
        );
    }
    out.push_str("</tbody></table>\n");
}
