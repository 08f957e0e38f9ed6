//! NetworkManager keyfiles (GKeyFile ini format): which Wi-Fi network a profile is and how
//! it is secured, and minimal edits of one key (for `NetworkManager.state`).

use super::security::{Network, Security};

/// `(section, key, value)` in file order; comments and blank lines skipped, values
/// unescaped (`\s`, `\t`, `\n`, `\r`, `\\`).
pub fn entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.trim_end().strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), unescape(v.trim_end())));
        }
    }
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn get<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Option<&'a str> {
    // The last occurrence wins, as in GKeyFile.
    entries.iter().rev().find(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str())
}

/// An SSID as NetworkManager writes it: text, or the legacy list of byte values
/// (`ssid=72;79;83;80;`).
fn ssid(raw: &str) -> String {
    let parts: Vec<&str> = raw.split(';').filter(|p| !p.is_empty()).collect();
    let bytes: Option<Vec<u8>> = parts.iter().map(|p| p.trim().parse::<u8>().ok()).collect();
    match bytes {
        Some(b) if raw.contains(';') && !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => raw.to_owned(),
    }
}

/// The Wi-Fi network a keyfile describes; `None` for other connection types (ethernet,
/// VPN, ...).
pub fn wifi_network(text: &str) -> Option<Network> {
    let e = entries(text);
    let kind = get(&e, "connection", "type")?;
    if kind != "wifi" && kind != "802-11-wireless" {
        return None;
    }
    let ssid = get(&e, "wifi", "ssid").or_else(|| get(&e, "802-11-wireless", "ssid")).map(ssid);
    let sec_section = if e.iter().any(|(s, _, _)| s == "wifi-security") {
        Some("wifi-security")
    } else if e.iter().any(|(s, _, _)| s == "802-11-wireless-security") {
        Some("802-11-wireless-security")
    } else {
        None
    };
    let Some(sec) = sec_section else {
        return Some(Network { ssid, security: Security::Open, note: None });
    };
    let key_mgmt = get(&e, sec, "key-mgmt").unwrap_or("none").to_ascii_lowercase();
    let has_wep = (0..4)
        .any(|i| get(&e, sec, &format!("wep-key{i}")).is_some_and(|v| !v.is_empty()))
        || get(&e, sec, "wep-key-type").is_some();
    // NM_SETTING_WIRELESS_SECURITY_PMF_REQUIRED = 3.
    let pmf_required = get(&e, sec, "pmf") == Some("3");
    match Security::from_nm_key_mgmt(&key_mgmt, has_wep, pmf_required) {
        Some(security) => Some(Network { ssid, security, note: None }),
        None => Some(Network {
            ssid,
            security: Security::Open,
            note: Some(format!("unknown key-mgmt {key_mgmt:?} judged open")),
        }),
    }
}

/// `text` with `key=value` in `[section]`: the first existing line of that key is
/// rewritten in place, the section is created at the end when missing, and every other
/// line stays as it was. Returns `text` unchanged when the key already has that value.
pub fn set_key(text: &str, section: &str, key: &str, value: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut current = String::new();
    // After the section's header or its last key line.
    let mut insert_at = None;
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            if current == section {
                insert_at = Some(i + 1);
            }
            continue;
        }
        if current != section || t.is_empty() || t.starts_with('#') {
            continue;
        }
        insert_at = Some(i + 1);
        if let Some((k, v)) = t.split_once('=')
            && k.trim() == key
        {
            if v.trim() == value {
                return text.to_owned();
            }
            lines[i] = format!("{key}={value}");
            return join(&lines);
        }
    }
    match insert_at {
        Some(at) => lines.insert(at, format!("{key}={value}")),
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(format!("[{section}]"));
            lines.push(format!("{key}={value}"));
        }
    }
    join(&lines)
}

fn join(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}
