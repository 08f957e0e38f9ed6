//! Turning positioned YAML nodes into typed values while collecting every problem (with
//! file, line, column and field path) instead of stopping at the first.

use std::collections::BTreeSet;
use std::fmt;

use super::yaml::{Node, Pos, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub severity: Severity,
    /// The field path, e.g. `spec.firewall.rules[2].ports`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let warning = if self.severity == Severity::Warning { "warning: " } else { "" };
        if self.path.is_empty() {
            write!(f, "{}:{}:{}: {warning}{}", self.file, self.line, self.col, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {warning}{}: {}",
                self.file, self.line, self.col, self.path, self.message
            )
        }
    }
}

/// Collects diagnostics for one file, and where each field path of the current document
/// stands (for checks made after decoding).
pub struct Decoder {
    pub file: String,
    pub diags: Vec<Diagnostic>,
    pub positions: std::collections::HashMap<String, Pos>,
}

/// Joins a path and a field name.
pub fn field(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// Joins a path and an index.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

impl Decoder {
    pub fn new(file: &str) -> Self {
        Self { file: file.to_owned(), diags: Vec::new(), positions: Default::default() }
    }

    pub fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, pos, path, message.into());
    }

    pub fn warning(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, pos, path, message.into());
    }

    fn push(&mut self, severity: Severity, pos: Pos, path: &str, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            severity,
            path: path.to_owned(),
            message,
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, want: &str) {
        let got = node.type_name();
        self.error(node.pos, path, format!("expected {want}, found {got}"));
    }

    /// A mapping's fields, checked against `known` when [`Fields::finish`] is called.
    pub fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(pairs) => {
                let mut seen = BTreeSet::new();
                for (k, v) in pairs {
                    let key = self.key(k, path)?;
                    self.positions.insert(field(path, &key), v.pos);
                    if !seen.insert(key.clone()) {
                        self.error(k.pos, &field(path, &key), "duplicate field");
                    }
                }
                Some(Fields { pairs, pos: node.pos, path: path.to_owned(), used: BTreeSet::new() })
            }
            _ => {
                self.wrong_type(node, path, "a mapping");
                None
            }
        }
    }

    fn key(&mut self, k: &Node, path: &str) -> Option<String> {
        match &k.value {
            Value::Scalar(s, _) => Some(s.clone()),
            _ => {
                self.error(k.pos, path, "mapping keys must be plain strings");
                None
            }
        }
    }

    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar(s, _) if !node.is_null() => Some(s.clone()),
            _ => {
                self.wrong_type(node, path, "a string");
                None
            }
        }
    }

    /// A non-empty name: letters, digits, `-`, `_`, `.`, at most 63 characters.
    pub fn name(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.error(
                node.pos,
                path,
                format!("{s:?} is not a valid name (letters, digits, '-', '_', '.'; at most 63)"),
            );
            return None;
        }
        Some(s)
    }

    pub fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar(s, true) if s == "true" => Some(true),
            Value::Scalar(s, true) if s == "false" => Some(false),
            _ => {
                self.wrong_type(node, path, "true or false");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(&mut self, node: &Node, path: &str, min: i64, max: i64, what: &str) -> Option<i64> {
        let Value::Scalar(s, true) = &node.value else {
            self.wrong_type(node, path, "an integer");
            return None;
        };
        match s.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Some(v),
            Ok(v) => {
                self.error(node.pos, path, format!("{v} is not {what} ({min}-{max})"));
                None
            }
            Err(_) => {
                self.wrong_type(node, path, "an integer");
                None
            }
        }
    }

    /// One of `choices`.
    pub fn choice(&mut self, node: &Node, path: &str, choices: &[&str]) -> Option<String> {
        let s = self.string(node, path)?;
        if choices.contains(&s.as_str()) {
            Some(s)
        } else {
            self.error(node.pos, path, format!("{s:?} is not one of {}", choices.join(", ")));
            None
        }
    }

    /// A list, each item decoded by `item` (items that fail are left out).
    pub fn list<T>(
        &mut self,
        node: &Node,
        path: &str,
        mut item: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Option<Vec<T>> {
        match &node.value {
            Value::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    self.positions.insert(index(path, i), n.pos);
                }
                Some(
                    items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, n)| item(self, n, &index(path, i)))
                        .collect(),
                )
            }
            _ => {
                self.wrong_type(node, path, "a list");
                None
            }
        }
    }

    /// A mapping of string keys to string values.
    pub fn string_map(
        &mut self,
        node: &Node,
        path: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let fields = self.map(node, path)?;
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in fields.pairs {
            let Value::Scalar(key, _) = &k.value else { continue };
            if let Some(val) = self.string(v, &field(path, key)) {
                out.insert(key.clone(), val);
            }
        }
        Some(out)
    }
}

/// The fields of one mapping.
pub struct Fields<'n> {
    pub pairs: &'n [(Node, Node)],
    pub pos: Pos,
    pub path: String,
    used: BTreeSet<String>,
}

impl<'n> Fields<'n> {
    /// The value of `name`, if present.
    pub fn get(&mut self, name: &str) -> Option<&'n Node> {
        self.used.insert(name.to_owned());
        self.pairs
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar(s, _) if s == name))
            .map(|(_, v)| v)
    }

    /// The value of `name`; reports it missing otherwise.
    pub fn require(&mut self, d: &mut Decoder, name: &str) -> Option<&'n Node> {
        let v = self.get(name);
        if v.is_none() {
            d.error(self.pos, &field(&self.path, name), "required field is missing");
        }
        v
    }

    /// The path of field `name`.
    pub fn path(&self, name: &str) -> String {
        field(&self.path, name)
    }

    /// Reports every field that was not asked for, naming the ones that were.
    pub fn finish(self, d: &mut Decoder) {
        let known: Vec<&str> = self.used.iter().map(String::as_str).collect();
        for (k, _) in self.pairs {
            if let Value::Scalar(name, _) = &k.value
                && !self.used.contains(name)
            {
                d.error(
                    k.pos,
                    &field(&self.path, name),
                    format!("unknown field; expected one of: {}", known.join(", ")),
                );
            }
        }
    }
}
