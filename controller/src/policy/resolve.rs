//! Per-agent resolution: the complete desired state of one agent, from the policies that
//! select it, merged by documented, deterministic rules, with segments expanded to
//! addresses. Every controller node computes it from its own applied state.
//!
//! Merge rules (docs/policy-reference.md, "Resolution"):
//! - Policies whose selector matches the agent's labels apply, ordered by priority
//!   (highest first), then name.
//! - `wireless`, `passwords`, `users`, `logins`: the first policy in that order that has
//!   the section decides it, whole, with its mode.
//! - `firewall`: each default (inbound, outbound) comes from the first policy that sets it
//!   (else deny inbound, allow outbound); the mode from the first policy with a firewall
//!   section; the rules of all policies are concatenated in policy order, each policy's
//!   rules in their written order. The first matching rule wins.
//! - A segment's addresses are its CIDRs plus the addresses reported by non-revoked agents
//!   whose labels match its selector, sorted and deduplicated.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::model::*;
use crate::security::AgentRecord;

/// What resolution reads.
pub struct Inputs<'a> {
    pub documents: &'a [Document],
    /// Enrolled agents, why they are revoked (if they are), and their records' revision.
    pub agents: &'a [crate::security::AgentEntry],
    /// The revision of the last change to any policy document.
    pub documents_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRule {
    pub action: Action,
    pub direction: Direction,
    /// `None`: any peer.
    pub peers: Option<Vec<IpNet>>,
    /// Empty: any port.
    pub ports: Vec<PortRange>,
    pub interface: InterfaceKind,
    pub log: bool,
    pub failsafe: bool,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFirewall {
    pub default_inbound: Action,
    pub default_outbound: Action,
    pub rules: Vec<ResolvedRule>,
    pub log_rate_per_minute: u32,
    pub mode: Mode,
}

/// A section decided by one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided<T> {
    pub value: T,
    pub mode: Mode,
    pub policy: String,
}

/// An agent's complete desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub revision: u64,
    pub agent_id: String,
    pub policies: Vec<String>,
    pub firewall: Option<ResolvedFirewall>,
    pub wireless: Option<Decided<Wireless>>,
    pub passwords: Option<Decided<Passwords>>,
    pub users: Option<Decided<Users>>,
    /// Accounts an operator released on this agent (`bulwarkctl agents unlock`).
    pub released_accounts: Vec<String>,
    pub logins: Option<Decided<Logins>>,
}

fn decide<T: Clone>(
    policies: &[&Policy],
    pick: impl Fn(&Policy) -> Option<&T>,
) -> Option<Decided<T>> {
    policies.iter().find_map(|p| {
        pick(p).map(|v| Decided { value: v.clone(), mode: p.mode, policy: p.name.clone() })
    })
}

/// Each segment's addresses and the newest revision among its member agents' records:
/// computed once per pass over the fleet, shared by every agent resolved in it.
pub struct SegmentIndex {
    members: BTreeMap<String, (Vec<IpNet>, u64)>,
}

impl SegmentIndex {
    pub fn new(inputs: &Inputs) -> Self {
        let mut members = BTreeMap::new();
        for doc in inputs.documents {
            let Document::Segment(segment) = doc else { continue };
            let mut out: BTreeSet<IpNet> = segment.cidrs.iter().copied().collect();
            let mut revision = 0;
            if let Some(sel) = &segment.selector {
                for (a, revoked, rev) in inputs.agents {
                    if sel.matches(&a.labels) {
                        revision = revision.max(*rev);
                        if revoked.is_none() {
                            let addrs = a
                                .addresses
                                .iter()
                                .filter_map(|s| s.parse::<std::net::IpAddr>().ok());
                            out.extend(addrs.map(IpNet::from));
                        }
                    }
                }
            }
            members.insert(segment.name.clone(), (out.into_iter().collect(), revision));
        }
        Self { members }
    }
}

/// Resolves `agent`'s desired state.
pub fn resolve(inputs: &Inputs, agent: &AgentRecord, agent_revision: u64) -> Resolved {
    resolve_with(inputs, &SegmentIndex::new(inputs), agent, agent_revision)
}

/// Resolves `agent`'s desired state with a prepared segment index.
pub fn resolve_with(
    inputs: &Inputs,
    index: &SegmentIndex,
    agent: &AgentRecord,
    agent_revision: u64,
) -> Resolved {
    let members = |name: &str| index.members.get(name);
    resolve_from(inputs.documents, None, inputs.documents_revision, &members, agent, agent_revision)
}

/// One segment's addresses and the newest revision among its member agents' records.
pub type Members = (Vec<IpNet>, u64);

/// Resolves `agent`'s desired state from `documents`. The revision is the newest of
/// `base`, the agent's record, and — of what this agent's state is made of — the selected
/// policies, the services and segments their rules refer to (with `revisions`, one per
/// document) and the agents in those segments.
pub fn resolve_from<'m>(
    documents: &[Document],
    revisions: Option<&[u64]>,
    base: u64,
    members: &dyn Fn(&str) -> Option<&'m Members>,
    agent: &AgentRecord,
    agent_revision: u64,
) -> Resolved {
    let rev_of = |i: usize| revisions.and_then(|r| r.get(i).copied()).unwrap_or(0);
    let mut selected: Vec<(&Policy, u64)> = documents
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Document::Policy(p) if p.selector.matches(&agent.labels) => {
                Some((p.as_ref(), rev_of(i)))
            }
            _ => None,
        })
        .collect();
    selected
        .sort_by(|(a, _), (b, _)| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    let revision = std::cell::Cell::new(base.max(agent_revision));
    let newer = |rev: u64| revision.set(revision.get().max(rev));
    for (_, rev) in &selected {
        newer(*rev);
    }
    let policies: Vec<&Policy> = selected.iter().map(|(p, _)| *p).collect();
    let services: BTreeMap<&str, (&Service, u64)> = documents
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Document::Service(s) => Some((s.name.as_str(), (s, rev_of(i)))),
            _ => None,
        })
        .collect();
    let segment_revs: BTreeMap<&str, u64> = match revisions {
        None => BTreeMap::new(),
        Some(_) => documents
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Document::Segment(s) => Some((s.name.as_str(), rev_of(i))),
                _ => None,
            })
            .collect(),
    };
    let members = |name: &str| -> &[IpNet] {
        newer(segment_revs.get(name).copied().unwrap_or(0));
        match members(name) {
            Some((addrs, rev)) => {
                newer(*rev);
                addrs
            }
            None => &[],
        }
    };
    let service_ports = |name: &str| -> Vec<PortRange> {
        match services.get(name) {
            Some((s, rev)) => {
                newer(*rev);
                s.ports.clone()
            }
            None => Vec::new(),
        }
    };
    let firewall = policies.iter().find(|p| p.firewall.is_some()).and_then(|first| {
        let fw = first.firewall.as_ref()?;
        let mut rules = Vec::new();
        for p in &policies {
            for rule in p.firewall.iter().flat_map(|f| &f.rules) {
                let peers = if rule.peers.is_empty() {
                    None
                } else {
                    if let [only] = rule.peers.as_slice() {
                        Some(members(only).to_vec())
                    } else {
                        let mut addrs = BTreeSet::new();
                        for name in &rule.peers {
                            addrs.extend(members(name).iter().copied());
                        }
                        Some(addrs.into_iter().collect())
                    }
                };
                let mut ports: Vec<PortRange> =
                    rule.services.iter().flat_map(|n| service_ports(n)).collect();
                ports.sort();
                ports.dedup();
                rules.push(ResolvedRule {
                    action: rule.action,
                    direction: rule.direction,
                    peers,
                    ports,
                    interface: rule.interface,
                    log: rule.log,
                    failsafe: rule.failsafe,
                    policy: p.name.clone(),
                });
            }
        }
        let with_firewall = || policies.iter().filter_map(|p| p.firewall.as_ref());
        Some(ResolvedFirewall {
            default_inbound: with_firewall()
                .find_map(|f| f.default_inbound)
                .unwrap_or(Action::Deny),
            default_outbound: with_firewall()
                .find_map(|f| f.default_outbound)
                .unwrap_or(Action::Allow),
            rules,
            log_rate_per_minute: fw.log_rate_per_minute,
            mode: first.mode,
        })
    });
    Resolved {
        revision: revision.get(),
        agent_id: agent.id.clone(),
        policies: policies.iter().map(|p| p.name.clone()).collect(),
        firewall,
        wireless: decide(&policies, |p| p.wireless.as_ref()),
        passwords: decide(&policies, |p| p.passwords.as_ref()),
        users: decide(&policies, |p| p.users.as_ref()),
        released_accounts: agent.released_accounts.iter().cloned().collect(),
        logins: decide(&policies, |p| p.logins.as_ref()),
    }
}

#[cfg(test)]
mod tests;

/// How one agent's desired state changes between two resolutions.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Impact {
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub sections_changed: Vec<String>,
    pub policies_changed: Vec<String>,
}

impl Impact {
    pub fn is_empty(&self) -> bool {
        self.rules_added.is_empty()
            && self.rules_removed.is_empty()
            && self.sections_changed.is_empty()
            && self.policies_changed.is_empty()
    }
}

/// A rule in words, for diffs.
pub fn describe(rule: &ResolvedRule) -> String {
    let verb = if rule.action == Action::Allow { "allow" } else { "deny" };
    let (dir, prep) = match rule.direction {
        Direction::Inbound => ("inbound", "from"),
        Direction::Outbound => ("outbound", "to"),
    };
    let peers = match &rule.peers {
        None => "anywhere".to_owned(),
        Some(p) if p.is_empty() => "nobody (empty segments)".to_owned(),
        Some(p) => p.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
    };
    let ports = if rule.ports.is_empty() {
        "any port".to_owned()
    } else {
        let list: Vec<String> = rule
            .ports
            .iter()
            .map(|p| {
                let proto = if p.protocol == Protocol::Tcp { "tcp" } else { "udp" };
                if p.first == p.last {
                    format!("{proto}/{}", p.first)
                } else {
                    format!("{proto}/{}-{}", p.first, p.last)
                }
            })
            .collect();
        list.join(",")
    };
    let iface = match rule.interface {
        InterfaceKind::Any => "",
        InterfaceKind::Wired => " on wired",
        InterfaceKind::Wireless => " on wireless",
    };
    let log = if rule.log { ", logged" } else { "" };
    let failsafe = if rule.failsafe { ", failsafe" } else { "" };
    format!("{verb} {dir} {prep} {peers} on {ports}{iface}{log}{failsafe} (policy {})", rule.policy)
}

/// What changes from `before` to `after` for one agent.
pub fn impact(before: &Resolved, after: &Resolved) -> Impact {
    let rules = |r: &Resolved| -> Vec<String> {
        r.firewall.iter().flat_map(|f| &f.rules).map(describe).collect()
    };
    let (b, a) = (rules(before), rules(after));
    let mut out = Impact {
        rules_added: a.iter().filter(|r| !b.contains(r)).cloned().collect(),
        rules_removed: b.iter().filter(|r| !a.contains(r)).cloned().collect(),
        ..Impact::default()
    };
    let defaults =
        |r: &Resolved| r.firewall.as_ref().map(|f| (f.default_inbound, f.default_outbound, f.mode));
    if defaults(before) != defaults(after) {
        out.sections_changed.push("firewall-defaults".into());
    }
    if before.wireless != after.wireless {
        out.sections_changed.push("wireless".into());
    }
    if before.passwords != after.passwords {
        out.sections_changed.push("passwords".into());
    }
    if before.users != after.users {
        out.sections_changed.push("users".into());
    }
    if before.logins != after.logins {
        out.sections_changed.push("logins".into());
    }
    for p in &after.policies {
        if !before.policies.contains(p) {
            out.policies_changed.push(format!("+{p}"));
        }
    }
    for p in &before.policies {
        if !after.policies.contains(p) {
            out.policies_changed.push(format!("-{p}"));
        }
    }
    out
}
