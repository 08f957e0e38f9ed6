//! What the host has: `nft -j list table inet bulwark`, parsed into a normalized form that a
//! [`Plan`] compares against ([`compare`]).
//!
//! The listing is read as plain JSON (not the nftables crate's typed schema) so that anything
//! someone put into the table, even what the crate cannot type, is still seen and reported
//! as drift instead of failing the observation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::FirewallError;
use super::plan::{CHAIN_PRIORITY, Plan, SetDelta, TABLE, Verdict};

/// The table as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Absent,
    Present(ObservedTable),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTable {
    /// In listing order.
    pub chains: Vec<ObservedChain>,
    pub sets: BTreeMap<String, ObservedSet>,
    /// Objects of other kinds (maps, named counters, ...), as `"map foo"`.
    pub others: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedChain {
    pub name: String,
    /// `type hook prio policy`, e.g. `filter input 0 drop`; empty for a regular chain.
    pub header: String,
    pub rules: Vec<ObservedRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRule {
    pub handle: u64,
    pub comment: Option<String>,
    /// The rule's statements with counter values zeroed.
    pub expr: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedSet {
    /// `ipv4_addr`, `ifname`, ... (concatenations as their JSON text).
    pub set_type: String,
    pub flags: Vec<String>,
    /// Canonical element text: `198.18.0.5`, `10.0.0.0/8`, `wlan0`, ranges as `a-b`.
    pub elements: BTreeSet<String>,
}

impl Observed {
    /// Parses the output of `nft -j list table inet bulwark`.
    pub fn parse(json: &[u8]) -> Result<Observed, FirewallError> {
        let bad = |what: String| FirewallError::Parse(what);
        let doc: Value = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        let objects = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no \"nftables\" array".into()))?;
        let mut table = ObservedTable::default();
        let mut found_table = false;
        let mut rules: Vec<(String, ObservedRule)> = Vec::new();
        for obj in objects {
            let Some((kind, body)) = obj.as_object().and_then(|o| o.iter().next()) else {
                continue;
            };
            let str_of = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
            if matches!(kind.as_str(), "metainfo") {
                continue;
            }
            if str_of("family") != "inet" {
                continue;
            }
            let in_table = if kind == "table" { str_of("name") } else { str_of("table") };
            if in_table != TABLE {
                continue;
            }
            match kind.as_str() {
                "table" => found_table = true,
                "chain" => {
                    let header = match body.get("hook") {
                        Some(_) => format!(
                            "{} {} {} {}",
                            str_of("type"),
                            str_of("hook"),
                            body.get("prio").map(Value::to_string).unwrap_or_default(),
                            str_of("policy"),
                        ),
                        None => String::new(),
                    };
                    table.chains.push(ObservedChain {
                        name: str_of("name").to_owned(),
                        header,
                        rules: Vec::new(),
                    });
                }
                "rule" => {
                    let mut expr = body.get("expr").cloned().unwrap_or(Value::Null);
                    normalize(&mut expr);
                    rules.push((
                        str_of("chain").to_owned(),
                        ObservedRule {
                            handle: body.get("handle").and_then(Value::as_u64).unwrap_or(0),
                            comment: body.get("comment").and_then(Value::as_str).map(str::to_owned),
                            expr,
                        },
                    ));
                }
                "set" => {
                    let set_type = match body.get("type") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    };
                    let mut flags: Vec<String> = match body.get("flags") {
                        Some(Value::Array(a)) => {
                            a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                        }
                        Some(Value::String(s)) => vec![s.clone()],
                        _ => Vec::new(),
                    };
                    flags.sort();
                    let elements = match body.get("elem") {
                        Some(Value::Array(a)) => a.iter().map(element_text).collect(),
                        Some(one) => [element_text(one)].into_iter().collect(),
                        None => BTreeSet::new(),
                    };
                    table.sets.insert(
                        str_of("name").to_owned(),
                        ObservedSet { set_type, flags, elements },
                    );
                }
                other => table.others.push(format!("{other} {}", str_of("name"))),
            }
        }
        if !found_table {
            return Ok(Observed::Absent);
        }
        for (chain, rule) in rules {
            if let Some(c) = table.chains.iter_mut().find(|c| c.name == chain) {
                c.rules.push(rule);
            }
        }
        Ok(Observed::Present(table))
    }

    pub fn rule_count(&self) -> usize {
        match self {
            Observed::Absent => 0,
            Observed::Present(t) => t.chains.iter().map(|c| c.rules.len()).sum(),
        }
    }
}

/// Zeroes counter values so a rule compares equal however much traffic it has seen.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "counter" {
                    *val = Value::Null;
                } else {
                    normalize(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The canonical text of one set element as nft lists it.
fn element_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr").map(element_text).unwrap_or_default();
                let len = p.get("len").map(Value::to_string).unwrap_or_default();
                format!("{addr}/{len}")
            } else if let Some(Value::Array(r)) = o.get("range") {
                let parts: Vec<String> = r.iter().map(element_text).collect();
                parts.join("-")
            } else if let Some(e) = o.get("elem") {
                e.get("val").map(element_text).unwrap_or_else(|| e.to_string())
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// How the host's table stands against a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    InSync,
    /// Same chains, rules and sets; only set members differ (a membership-only update).
    SetsDiffer(Vec<SetDiff>),
    /// Anything else: the first difference found, as one short line each.
    Differs {
        before: String,
        after: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDiff {
    pub name: String,
    pub observed: usize,
    pub expected: usize,
    /// Planned elements the host lacks.
    pub missing: Vec<String>,
    /// Elements the host has that the plan does not.
    pub unexpected: Vec<String>,
}

impl SetDiff {
    pub fn delta(&self) -> SetDelta {
        SetDelta {
            name: self.name.clone(),
            add: self.missing.clone(),
            remove: self.unexpected.clone(),
        }
    }
}

impl Comparison {
    /// One line for people, e.g. `chain input has 3 rules, expected 12`.
    pub fn summary(&self) -> String {
        match self {
            Comparison::InSync => "in sync".to_owned(),
            Comparison::SetsDiffer(diffs) => diffs
                .iter()
                .map(|d| {
                    format!(
                        "set {} has {} elements, expected {} (+{} -{})",
                        d.name,
                        d.observed,
                        d.expected,
                        d.missing.len(),
                        d.unexpected.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Comparison::Differs { before, after } => format!("{before}, expected: {after}"),
        }
    }
}

/// Compares `observed` with `plan` on the normalized form (statement JSON as nft lists it,
/// counters zeroed; set elements as canonical text).
pub fn compare(plan: &Plan, observed: &Observed) -> Comparison {
    let differs = |before: String, after: String| Comparison::Differs { before, after };
    let table = match observed {
        Observed::Absent => {
            return differs(
                format!("table inet {TABLE} missing"),
                format!(
                    "table inet {TABLE} with {} rules in {} chains, {} sets",
                    plan.rule_count(),
                    plan.chains.len(),
                    plan.sets.len()
                ),
            );
        }
        Observed::Present(t) => t,
    };
    if let Some(other) = table.others.first() {
        return differs(format!("unexpected {other}"), format!("no {other}"));
    }
    for chain in &plan.chains {
        let Some(obs) = table.chains.iter().find(|c| c.name == chain.name) else {
            return differs(
                format!("chain {} missing", chain.name),
                format!("chain {}", chain.name),
            );
        };
        let policy = match chain.policy {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        };
        let header = format!("filter {} {CHAIN_PRIORITY} {policy}", chain.name);
        if obs.header != header {
            return differs(
                format!("chain {} is `{}`", chain.name, obs.header),
                format!("chain {} is `{header}`", chain.name),
            );
        }
        if obs.rules.len() != chain.rules.len() {
            return differs(
                format!("chain {} has {} rules", chain.name, obs.rules.len()),
                format!("chain {} has {} rules", chain.name, chain.rules.len()),
            );
        }
        for (k, (want, have)) in plan.rules_of(chain).iter().zip(&obs.rules).enumerate() {
            let mut expr = serde_json::to_value(&want.expr).unwrap_or(Value::Null);
            normalize(&mut expr);
            let comment = want.comment.as_deref();
            if expr != have.expr || comment != have.comment.as_deref() {
                let mut seen = have.expr.to_string();
                super::plan::truncate(&mut seen, 160);
                return differs(
                    format!("chain {} rule {k} is {seen}", chain.name),
                    format!(
                        "chain {} rule {k} is `{}`",
                        chain.name,
                        chain.rules[k].display(plan.log_rate_per_minute)
                    ),
                );
            }
        }
    }
    if let Some(extra) = table.chains.iter().find(|c| plan.chain(&c.name).is_none()) {
        return differs(
            format!("unexpected chain {}", extra.name),
            format!("no chain {}", extra.name),
        );
    }
    let mut diffs = Vec::new();
    for set in &plan.sets {
        let Some(obs) = table.sets.get(&set.name) else {
            return differs(format!("set {} missing", set.name), format!("set {}", set.name));
        };
        let flags: Vec<String> =
            if set.kind.interval() { vec!["interval".to_owned()] } else { Vec::new() };
        if obs.set_type != set.kind.nft_type() || obs.flags != flags {
            return differs(
                format!("set {} is {} {:?}", set.name, obs.set_type, obs.flags),
                format!("set {} is {} {:?}", set.name, set.kind.nft_type(), flags),
            );
        }
        // Both sides are sorted; one merge pass finds the differences.
        let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
        let mut have = obs.elements.iter().peekable();
        for want in &set.elements {
            while let Some(h) = have.next_if(|h| h.as_str() < want.as_str()) {
                unexpected.push(h.clone());
            }
            if have.next_if(|h| *h == want).is_none() {
                missing.push(want.clone());
            }
        }
        unexpected.extend(have.cloned());
        if !missing.is_empty() || !unexpected.is_empty() {
            diffs.push(SetDiff {
                name: set.name.clone(),
                observed: obs.elements.len(),
                expected: set.elements.len(),
                missing,
                unexpected,
            });
        }
    }
    if let Some(extra) = table.sets.keys().find(|name| plan.set(name).is_none()) {
        return differs(format!("unexpected set {extra}"), format!("no set {extra}"));
    }
    if diffs.is_empty() { Comparison::InSync } else { Comparison::SetsDiffer(diffs) }
}
