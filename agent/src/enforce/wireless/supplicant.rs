//! wpa_supplicant.conf: its `network={...}` blocks, what each one is, and removing some of
//! them with a minimal edit (every other line, comments included, stays byte for byte).

use super::security::{Network, Security};

/// One `network={...}` block: lines `start..end` of the file (0-based, `end` exclusive,
/// the closing `}` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: usize,
    pub end: usize,
    /// The block's lines as they are in the file, each ending in `\n`.
    pub text: String,
    pub network: Network,
}

/// The file's network blocks, or why it cannot be read safely (an unterminated block: the
/// file is then left alone).
pub fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let opening = lines[i].trim().replace(' ', "");
        if opening != "network={" {
            i += 1;
            continue;
        }
        let start = i;
        let mut fields = Vec::new();
        let mut end = None;
        for (j, line) in lines.iter().enumerate().skip(start + 1) {
            let t = line.trim();
            if t == "}" {
                end = Some(j + 1);
                break;
            }
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = t.split_once('=') {
                fields.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let Some(end) = end else {
            return Err(format!("network block at line {} has no closing }}", start + 1));
        };
        let mut block_text: String = lines[start..end].concat();
        if !block_text.ends_with('\n') {
            block_text.push('\n');
        }
        out.push(Block { start, end, text: block_text, network: network(&fields) });
        i = end;
    }
    Ok(out)
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `ssid="text"`, `ssid=P"printf-escaped"` or `ssid=68657861` (hex bytes).
fn ssid(raw: &str) -> String {
    if let Some(q) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return q.to_owned();
    }
    if let Some(q) = raw.strip_prefix("P\"").and_then(|r| r.strip_suffix('"')) {
        return q.replace("\\\"", "\"").replace("\\\\", "\\");
    }
    let bytes: Option<Vec<u8>> = (0..raw.len() / 2)
        .map(|i| raw.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    match bytes {
        Some(b) if b.len() * 2 == raw.len() && !b.is_empty() => {
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => raw.to_owned(),
    }
}

fn network(fields: &[(String, String)]) -> Network {
    let ssid = field(fields, "ssid").map(ssid);
    let has_wep = (0..4).any(|i| field(fields, &format!("wep_key{i}")).is_some());
    let pmf_required = field(fields, "ieee80211w") == Some("2");
    // wpa_supplicant's default when key_mgmt is absent.
    let key_mgmt = field(fields, "key_mgmt").unwrap_or("WPA-PSK WPA-EAP");
    // The network accepts any listed method, so it is as strong as the weakest of them.
    let mut weakest: Option<Security> = None;
    let mut unknown = Vec::new();
    for token in key_mgmt.split_whitespace() {
        match Security::from_supplicant_key_mgmt(token, has_wep, pmf_required) {
            Some(s) => weakest = Some(weakest.map_or(s, |w| w.min(s))),
            None => unknown.push(token.to_owned()),
        }
    }
    if !unknown.is_empty() || weakest.is_none() {
        return Network {
            ssid,
            security: Security::Open,
            note: Some(format!("unknown key_mgmt {key_mgmt:?} judged open")),
        };
    }
    Network { ssid, security: weakest.unwrap_or(Security::Open), note: None }
}

/// `text` without the blocks starting at `starts` (line numbers from [`blocks`]).
pub fn remove(text: &str, remove: &[&Block]) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .filter(|(i, _)| !remove.iter().any(|b| (b.start..b.end).contains(i)))
        .map(|(_, l)| l)
        .collect()
}

/// `text` with `block` appended (a restore), separated by a blank line.
pub fn append(text: &str, block: &str) -> String {
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(block);
    out
}
