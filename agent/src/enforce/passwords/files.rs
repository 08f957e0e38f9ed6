//! A minimal-edit model of the line-oriented files the password enforcer manages: every
//! line is kept as written, settings are parsed beside it, and an edit rewrites only the
//! lines of the key it sets (the first occurrence takes the value, later ones are
//! commented out with [`DUPLICATE_MARKER`]) or appends the key at the end. Comments,
//! unrelated keys and lines that cannot be parsed stay exactly as they were.

use std::fmt;

/// Prefix of a line Bulwark commented out because the key is set earlier in the file.
pub const DUPLICATE_MARKER: &str = "# bulwark: duplicate commented out: ";
/// The comment above the keys Bulwark appends to a file (written once).
pub const APPENDED_HEADER: &str = "# Added by Bulwark (password policy):";
/// The first lines of a file Bulwark creates.
pub const CREATED_HEADER: &str = "# Created by Bulwark (password policy). Bulwark sets the keys it manages\n\
                                  # here once; other lines are kept as written.\n";

/// How a file spells a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `KEY value` (login.defs).
    KeyValue,
    /// `key = value`, or a bare `key` for a flag (pwquality.conf, faillock.conf).
    KeyEquals,
}

/// What a managed key should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    Value(String),
    /// A bare keyword that is on when present (`enforce_for_root`, `even_deny_root`).
    Flag,
}

impl Wanted {
    pub fn value(v: impl ToString) -> Self {
        Wanted::Value(v.to_string())
    }

    /// True when an occurrence with `value` (None: a bare key) satisfies this.
    pub fn satisfied_by(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Wanted::Flag, _) => true,
            (Wanted::Value(want), Some(have)) => same_value(want, have),
            (Wanted::Value(_), None) => false,
        }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wanted::Value(v) => f.write_str(v),
            Wanted::Flag => f.write_str("(set)"),
        }
    }
}

/// Numbers compare by value (`027` = `27`, `+1` = `1`), anything else exactly.
pub fn same_value(a: &str, b: &str) -> bool {
    match (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Blank or comment.
    Other,
    /// `prefix` is everything before the value (indentation, key, separator): an edit
    /// keeps it and replaces the value.
    Setting { key: String, value: Option<String>, prefix: String },
    /// Not understood: left alone, reported.
    Unparsed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    raw: String,
    kind: Kind,
}

/// One occurrence of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The host path of the file (for messages).
    pub path: String,
    /// 1-based.
    pub line: usize,
    /// None: a bare key.
    pub value: Option<String>,
}

impl Occurrence {
    /// `key=value` (or `key` for a bare key).
    pub fn show(&self, key: &str) -> String {
        match &self.value {
            Some(v) => format!("{key}={v}"),
            None => key.to_owned(),
        }
    }
}

/// A line that could not be parsed (left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub path: String,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}; left alone", self.path, self.line, self.reason)
    }
}

/// A parsed config file. `render` of an unedited file gives back the exact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    /// The host path (e.g. `/etc/login.defs`), for messages.
    pub path: String,
    syntax: Syntax,
    lines: Vec<Line>,
    trailing_newline: bool,
}

fn is_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_line(syntax: Syntax, raw: &str) -> Result<Kind, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Kind::Other);
    }
    let indent = &raw[..raw.len() - raw.trim_start().len()];
    match syntax {
        Syntax::KeyValue => {
            let key_end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
            let key = &trimmed[..key_end];
            if !is_key(key) {
                return Err(format!("{key:?} is not a setting name"));
            }
            let rest = &trimmed[key_end..];
            let value = rest.trim_start();
            if value.is_empty() {
                return Err(format!("{key} has no value"));
            }
            let sep = &rest[..rest.len() - value.len()];
            Ok(Kind::Setting {
                key: key.to_owned(),
                value: Some(value.to_owned()),
                prefix: format!("{indent}{key}{sep}"),
            })
        }
        Syntax::KeyEquals => match trimmed.split_once('=') {
            Some((key, value)) => {
                let key = key.trim();
                if !is_key(key) {
                    return Err(format!("{key:?} is not a setting name"));
                }
                let value = value.trim();
                // Everything up to the value as written (`minlen = `).
                let prefix_len = trimmed.len() - value.len();
                Ok(Kind::Setting {
                    key: key.to_owned(),
                    value: Some(value.to_owned()),
                    prefix: format!("{indent}{}", &trimmed[..prefix_len]),
                })
            }
            None if is_key(trimmed) => {
                Ok(Kind::Setting { key: trimmed.to_owned(), value: None, prefix: String::new() })
            }
            None => Err(format!("{trimmed:?} is neither `key = value` nor a flag")),
        },
    }
}

impl ConfigFile {
    /// Parses `text`; lines that cannot be parsed are kept and returned as warnings.
    pub fn parse(path: impl Into<String>, syntax: Syntax, text: &str) -> (Self, Vec<Warning>) {
        let path = path.into();
        let mut warnings = Vec::new();
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, raw)| {
                let kind = parse_line(syntax, raw).unwrap_or_else(|reason| {
                    warnings.push(Warning { path: path.clone(), line: i + 1, reason });
                    Kind::Unparsed
                });
                Line { raw: raw.to_owned(), kind }
            })
            .collect();
        let trailing_newline = text.is_empty() || text.ends_with('\n');
        (Self { path, syntax, lines, trailing_newline }, warnings)
    }

    /// A file Bulwark is about to create: only the header comment.
    pub fn created(path: impl Into<String>, syntax: Syntax) -> Self {
        Self::parse(path, syntax, CREATED_HEADER).0
    }

    pub fn render(&self) -> String {
        let mut out = self.lines.iter().map(|l| l.raw.as_str()).collect::<Vec<_>>().join("\n");
        if self.trailing_newline && !out.is_empty() {
            out.push('\n');
        }
        out
    }

    /// Every active occurrence of `key`, in file order.
    pub fn occurrences(&self, key: &str) -> Vec<Occurrence> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.kind {
                Kind::Setting { key: k, value, .. } if k == key => {
                    Some(Occurrence { path: self.path.clone(), line: i + 1, value: value.clone() })
                }
                _ => None,
            })
            .collect()
    }

    /// Sets `key` once: the first occurrence takes `wanted` (keeping its spelling up to
    /// the value), later ones are commented out with [`DUPLICATE_MARKER`]; with none, the
    /// key is appended at the end.
    pub fn set(&mut self, key: &str, wanted: &Wanted) {
        let syntax = self.syntax;
        let rendered = |prefix: &str| match (wanted, syntax) {
            (Wanted::Flag, _) => key.to_owned(),
            (Wanted::Value(v), _) if !prefix.is_empty() => format!("{prefix}{v}"),
            (Wanted::Value(v), Syntax::KeyValue) => format!("{key}\t{v}"),
            (Wanted::Value(v), Syntax::KeyEquals) => format!("{key} = {v}"),
        };
        let mut first = true;
        for line in &mut self.lines {
            let Kind::Setting { key: k, prefix, .. } = &line.kind else { continue };
            if k != key {
                continue;
            }
            if first {
                first = false;
                let raw = rendered(prefix);
                let kind = parse_line(self.syntax, &raw).unwrap_or(Kind::Unparsed);
                *line = Line { raw, kind };
            } else {
                let raw = format!("{DUPLICATE_MARKER}{}", line.raw.trim());
                *line = Line { raw, kind: Kind::Other };
            }
        }
        if first {
            let raw = rendered("");
            let kind = parse_line(self.syntax, &raw).unwrap_or(Kind::Unparsed);
            match self.commented_out(key) {
                // Beside its documentation (`# minlen = 8`, `#YESCRYPT_COST_FACTOR 5`).
                Some(i) => self.lines.insert(i + 1, Line { raw, kind }),
                None => {
                    if !self.lines.iter().any(|l| l.raw == APPENDED_HEADER) {
                        self.push(APPENDED_HEADER.to_owned());
                    }
                    self.lines.push(Line { raw, kind });
                }
            }
        }
        self.trailing_newline = true;
    }

    /// The index of the last comment that is a commented-out setting of `key`.
    fn commented_out(&self, key: &str) -> Option<usize> {
        self.lines.iter().rposition(|l| {
            l.kind == Kind::Other
                && l.raw.trim_start().strip_prefix('#').is_some_and(|r| {
                    r.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '=']))
                })
        })
    }

    fn push(&mut self, raw: String) {
        let kind = parse_line(self.syntax, &raw).unwrap_or(Kind::Unparsed);
        self.lines.push(Line { raw, kind });
    }
}

/// The occurrence that is in force when `files` are read in order and a later setting
/// overrides an earlier one (how login.defs, pwquality.conf with its drop-ins, and
/// faillock.conf are all read).
pub fn effective<'a>(
    files: impl IntoIterator<Item = &'a ConfigFile>,
    key: &str,
) -> Option<Occurrence> {
    files.into_iter().flat_map(|f| f.occurrences(key)).last()
}
