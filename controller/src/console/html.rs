//! HTML building blocks: escaping (every string that came from a host, an agent or the
//! controller goes through [`esc`]), the page layout and small formatting helpers.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::fleet::now_ms;

/// Escapes text for HTML element content and quoted attribute values: the compliance
/// report's escaping, one function for both.
pub use crate::report::html::escape as esc;

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn url_enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The console's sections, in navigation order: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Fleet"),
    ("/rollout", "Rollout"),
    ("/alerts", "Alerts"),
    ("/logins", "Logins"),
    ("/policies", "Policies"),
    ("/cluster", "Cluster"),
];

/// A whole page: skip link, header with navigation and the live-connection status, and
/// `body` inside `<main>` under an `<h1>` of `title`. `active` is the NAV path to mark.
pub fn layout(title: &str, active: &str, body: &str) -> String {
    let mut nav = String::new();
    for (path, label) in NAV {
        let current = if *path == active { r#" aria-current="page""# } else { "" };
        let _ = write!(nav, r#"<li><a href="{path}"{current}>{label}</a></li>"#);
    }
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Bulwark console</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
<span class="brand">Bulwark</span>
<nav aria-label="Console sections"><ul>{nav}</ul></nav>
<span id="live-status" class="live-status" role="status" aria-live="polite">Connecting…</span>
</header>
<main id="main" tabindex="-1">
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"##,
        title = esc(title),
    )
}

/// A banner for a failed controller call (the page still renders what it can).
pub fn error_banner(what: &str, err: &dyn std::fmt::Display) -> String {
    format!(
        r#"<p class="banner error" role="alert"><strong>{}</strong>: {}</p>"#,
        esc(what),
        esc(&err.to_string())
    )
}

/// Milliseconds since the epoch as `2026-11-29 10:15:02 UTC` (`-` for 0).
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replace('T', " "))
}

/// How long ago `ms` was, coarse: `now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = (now_ms() - ms).max(0) / 1000;
    match secs {
        0..=1 => "now".into(),
        2..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// A `<time>` element: absolute time as text, the relative one as its title.
pub fn time_el(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    format!(r#"<time title="{}">{}</time>"#, esc(&ago(ms)), esc(&time(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(url_enc("Policy/a b&c"), "Policy%2Fa%20b%26c");
    }

    #[test]
    fn layout_marks_the_current_section_and_escapes_the_title() {
        let page = layout("<x>", "/alerts", "<p>body</p>");
        assert!(page.contains(r#"<a href="/alerts" aria-current="page">Alerts</a>"#));
        assert!(page.contains("<h1>&lt;x&gt;</h1>"));
        assert!(!page.contains("<h1><x>"));
    }
}
