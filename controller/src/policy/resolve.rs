//! Per-agent resolution: the complete desired state of one agent, from the policies that
//! select it, merged by documented, deterministic rules, with segments expanded to
//! addresses. Every controller node computes it from its own applied state.
//!
//! Merge rules (docs/policy-reference.md, "Resolution"):
//! - Policies whose selector matches the agent's labels apply, ordered by priority
//!   (highest first), then name.
//! - `wireless`, `passwords`, `users`, `logins`: the first policy in that order that has
//!   the section decides it, whole, with its mode.
//! - `firewall`: the defaults come from the first policy that has a firewall section; the
//!   rules of all policies are concatenated in policy order, each policy's rules in their
//!   written order. The first matching rule wins.
//! - A segment's addresses are its CIDRs plus the addresses reported by non-revoked agents
//!   whose labels match its selector, sorted and deduplicated.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::model::*;
use crate::security::AgentRecord;

/// What resolution reads.
pub struct Inputs<'a> {
    pub documents: &'a [Document],
    /// Enrolled agents, with whether they are revoked, and their record's mod revision.
    pub agents: &'a [(AgentRecord, bool, u64)],
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

/// Resolves `agent`'s desired state.
pub fn resolve(inputs: &Inputs, agent: &AgentRecord, agent_revision: u64) -> Resolved {
    let mut policies: Vec<&Policy> = inputs
        .documents
        .iter()
        .filter_map(|d| match d {
            Document::Policy(p) if p.selector.matches(&agent.labels) => Some(p.as_ref()),
            _ => None,
        })
        .collect();
    policies.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
    let segments: BTreeMap<&str, &Segment> = inputs
        .documents
        .iter()
        .filter_map(|d| match d {
            Document::Segment(s) => Some((s.name.as_str(), s)),
            _ => None,
        })
        .collect();
    let services: BTreeMap<&str, &Service> = inputs
        .documents
        .iter()
        .filter_map(|d| match d {
            Document::Service(s) => Some((s.name.as_str(), s)),
            _ => None,
        })
        .collect();
    let mut revision = inputs.documents_revision.max(agent_revision);
    let mut members = |segment: &Segment| -> Vec<IpNet> {
        let mut out: BTreeSet<IpNet> = segment.cidrs.iter().copied().collect();
        if let Some(sel) = &segment.selector {
            for (a, revoked, rev) in inputs.agents {
                if sel.matches(&a.labels) {
                    revision = revision.max(*rev);
                    if !revoked {
                        out.extend(
                            a.addresses
                                .iter()
                                .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
                                .map(IpNet::from),
                        );
                    }
                }
            }
        }
        out.into_iter().collect()
    };
    let firewall = policies.iter().find(|p| p.firewall.is_some()).and_then(|first| {
        let fw = first.firewall.as_ref()?;
        let mut rules = Vec::new();
        for p in &policies {
            for rule in p.firewall.iter().flat_map(|f| &f.rules) {
                let peers = if rule.peers.is_empty() {
                    None
                } else {
                    let mut addrs = BTreeSet::new();
                    for name in &rule.peers {
                        if let Some(s) = segments.get(name.as_str()) {
                            addrs.extend(members(s));
                        }
                    }
                    Some(addrs.into_iter().collect())
                };
                let mut ports: Vec<PortRange> = rule
                    .services
                    .iter()
                    .filter_map(|n| services.get(n.as_str()))
                    .flat_map(|s| s.ports.iter().copied())
                    .collect();
                ports.sort();
                ports.dedup();
                rules.push(ResolvedRule {
                    action: rule.action,
                    direction: rule.direction,
                    peers,
                    ports,
                    interface: rule.interface,
                    log: rule.log,
                    policy: p.name.clone(),
                });
            }
        }
        Some(ResolvedFirewall {
            default_inbound: fw.default_inbound,
            default_outbound: fw.default_outbound,
            rules,
            log_rate_per_minute: fw.log_rate_per_minute,
            mode: first.mode,
        })
    });
    Resolved {
        revision,
        agent_id: agent.id.clone(),
        policies: policies.iter().map(|p| p.name.clone()).collect(),
        firewall,
        wireless: decide(&policies, |p| p.wireless.as_ref()),
        passwords: decide(&policies, |p| p.passwords.as_ref()),
        users: decide(&policies, |p| p.users.as_ref()),
        logins: decide(&policies, |p| p.logins.as_ref()),
    }
}

#[cfg(test)]
mod tests;
