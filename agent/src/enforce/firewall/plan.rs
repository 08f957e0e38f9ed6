//! The pure half of the enforcer: [`plan`] turns a [`FirewallState`] into the table the host
//! should have ([`Plan`]), and a [`Plan`] renders the nftables JSON batches that install it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bulwark_proto::v1::{FirewallRule, FirewallState};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem,
};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, Nftables, Rule, Set, SetFlag, SetType,
    SetTypeValue, Table,
};
use nftables::stmt::{Log, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::FirewallError;

/// The one table Bulwark owns: `inet bulwark`. Nothing else is ever listed or changed.
pub const TABLE: &str = "bulwark";
/// The family of [`TABLE`]: `inet` covers IPv4 and IPv6 with one ruleset.
pub const FAMILY: NfFamily = NfFamily::INet;
/// Priority of both base chains: `filter` (0), the slot iptables' filter table uses; after
/// conntrack (-200), mangle (-150) and dstnat (-100). A packet passes a hook only if every
/// base chain on it accepts, so other tables (firewalld at filter + 10, Docker's iptables-nft
/// tables at 0) keep working side by side; their verdicts and ours are both needed.
pub const CHAIN_PRIORITY: i32 = 0;
/// The named set of the host's wireless interfaces (type `ifname`), matched by rules whose
/// `interface` is `wired` (not in the set) or `wireless` (in the set). Always present.
pub const WIRELESS_SET: &str = "wireless_ifaces";
/// Log rate used when the state leaves `log_rate_per_minute` at 0.
pub const DEFAULT_LOG_RATE_PER_MINUTE: u32 = 10;
/// Burst of every log limit (nft's own default, written out so it round-trips).
pub const LOG_BURST: u32 = 5;
/// ICMPv6 neighbour discovery: without these IPv6 stops resolving neighbours and routers
/// (RFC 4861), so they are accepted in both chains whatever the policy says.
pub const ND_TYPES: [&str; 4] =
    ["nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"];
/// nft's limit on comments.
const MAX_COMMENT: usize = 128;

/// What the host facts add to a [`FirewallState`] for planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallContext {
    /// The controllers the agent talks to: outbound TCP to each is always accepted.
    pub controllers: Vec<SocketAddr>,
    /// The host's wireless interfaces (see [`super::wireless_interfaces`]).
    pub wireless_ifaces: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Single IPv4 addresses: a hash set (`type ipv4_addr`), O(1) to add one.
    Ipv4Hosts,
    /// IPv4 CIDRs: an interval set (`flags interval`).
    Ipv4Nets,
    Ipv6Hosts,
    Ipv6Nets,
    /// Interface names (`type ifname`).
    Ifnames,
}

impl SetKind {
    fn suffix(self) -> &'static str {
        match self {
            SetKind::Ipv4Hosts => "h4",
            SetKind::Ipv4Nets => "n4",
            SetKind::Ipv6Hosts => "h6",
            SetKind::Ipv6Nets => "n6",
            SetKind::Ifnames => "if",
        }
    }

    pub fn nft_type(self) -> &'static str {
        match self {
            SetKind::Ipv4Hosts | SetKind::Ipv4Nets => "ipv4_addr",
            SetKind::Ipv6Hosts | SetKind::Ipv6Nets => "ipv6_addr",
            SetKind::Ifnames => "ifname",
        }
    }

    fn set_type(self) -> SetType {
        match self {
            SetKind::Ipv4Hosts | SetKind::Ipv4Nets => SetType::Ipv4Addr,
            SetKind::Ipv6Hosts | SetKind::Ipv6Nets => SetType::Ipv6Addr,
            SetKind::Ifnames => SetType::Ifname,
        }
    }

    pub fn interval(self) -> bool {
        matches!(self, SetKind::Ipv4Nets | SetKind::Ipv6Nets)
    }

    fn ip_protocol(self) -> &'static str {
        match self {
            SetKind::Ipv4Hosts | SetKind::Ipv4Nets => "ip",
            _ => "ip6",
        }
    }
}

/// A named set and its elements, in canonical text form (`198.18.0.5`, `10.0.0.0/8`,
/// `wlan0`), sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSet {
    pub name: String,
    pub kind: SetKind,
    pub elements: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn addr_field(self) -> &'static str {
        match self {
            Direction::Inbound => "saddr",
            Direction::Outbound => "daddr",
        }
    }
    fn ifname_key(self) -> MetaKey {
        match self {
            Direction::Inbound => MetaKey::Iifname,
            Direction::Outbound => MetaKey::Oifname,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One match of an nft rule, in the form nft lists it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `iif "lo"` / `oif "lo"`.
    Loopback(Direction),
    /// `ct state established,related`.
    EstablishedRelated,
    /// `icmpv6 type { nd-... }`.
    NeighbourDiscovery,
    /// `ip saddr @r3_h4` (direction and set kind pick the field).
    PeerSet { dir: Direction, set: String, kind: SetKind },
    /// `ip daddr 198.18.0.1`.
    PeerAddr { dir: Direction, addr: IpAddr },
    /// `tcp dport { 22, 80-90 }`, ranges sorted and merged.
    Ports { protocol: Protocol, ranges: Vec<(u16, u16)> },
    /// `iifname != @wireless_ifaces` (wired) / `iifname @wireless_ifaces` (wireless).
    Wireless { dir: Direction, wireless: bool },
}

/// One nft rule: matches, a counter, then either a rate-limited log (no verdict, so the
/// next rule with the same matches decides) or a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    pub conds: Vec<Cond>,
    /// `limit rate N/minute burst 5 packets counter log prefix "..."`, no verdict.
    pub log_prefix: Option<String>,
    pub verdict: Option<Verdict>,
    pub comment: String,
}

/// A base chain of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedChain {
    pub name: &'static str,
    pub hook: NfHook,
    /// The policy's default for the direction, so a flushed chain fails closed.
    pub policy: Verdict,
    pub rules: Vec<NftRule>,
}

/// The whole `inet bulwark` table the host should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub chains: Vec<PlannedChain>,
    pub sets: Vec<PlannedSet>,
    pub log_rate_per_minute: u32,
}

/// Plans the table for `state` on a host described by `ctx`. Pure and deterministic.
///
/// Chain layout (both chains: `type filter`, priority [`CHAIN_PRIORITY`], policy = default):
/// 1. failsafe: loopback, `ct state established,related`, ICMPv6 neighbour discovery; in
///    output also TCP to each controller; in input the policy's `failsafe: true` rules
///    (inbound allow only), in their order;
/// 2. the other rules of the direction, in order (first match wins);
/// 3. the default: `counter accept`, or a rate-limited log then `counter drop`.
///
/// A rule with `any_peer: false` and no addresses matches nothing and gets no nft rule.
/// Invalid input (an unknown action, a bad CIDR, port 0...) is an error rather than a
/// skipped rule, since skipping a deny would open the host.
pub fn plan(state: &FirewallState, ctx: &FirewallContext) -> Result<Plan, FirewallError> {
    let default_in = parse_default("default_inbound", &state.default_inbound)?;
    let default_out = parse_default("default_outbound", &state.default_outbound)?;
    let log_rate_per_minute = match state.log_rate_per_minute {
        0 => DEFAULT_LOG_RATE_PER_MINUTE,
        n => n,
    };

    let mut input = failsafe_base(Direction::Inbound);
    let mut output = failsafe_base(Direction::Outbound);
    let mut controllers: Vec<SocketAddr> = Vec::new();
    for c in &ctx.controllers {
        if !controllers.contains(c) {
            controllers.push(*c);
        }
    }
    for c in &controllers {
        output.push(NftRule {
            conds: vec![
                Cond::PeerAddr { dir: Direction::Outbound, addr: c.ip() },
                Cond::Ports { protocol: Protocol::Tcp, ranges: vec![(c.port(), c.port())] },
            ],
            log_prefix: None,
            verdict: Some(Verdict::Accept),
            comment: format!("failsafe controller {c}"),
        });
    }

    let mut sets = Vec::new();
    let parsed: Vec<ParsedRule> = state
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| ParsedRule::parse(i, r))
        .collect::<Result<_, _>>()?;
    let mut normal_in = Vec::new();
    for rule in &parsed {
        let expanded = rule.expand(&mut sets);
        match (rule.direction, rule.failsafe) {
            (Direction::Inbound, true) => input.extend(expanded),
            (Direction::Inbound, false) => normal_in.extend(expanded),
            (Direction::Outbound, _) => output.extend(expanded),
        }
    }
    input.extend(normal_in);
    input.extend(default_rules(Direction::Inbound, default_in));
    output.extend(default_rules(Direction::Outbound, default_out));

    let mut ifaces: Vec<String> = ctx.wireless_ifaces.clone();
    ifaces.sort();
    ifaces.dedup();
    sets.push(PlannedSet {
        name: WIRELESS_SET.to_owned(),
        kind: SetKind::Ifnames,
        elements: ifaces,
    });

    Ok(Plan {
        chains: vec![
            PlannedChain { name: "input", hook: NfHook::Input, policy: default_in, rules: input },
            PlannedChain {
                name: "output",
                hook: NfHook::Output,
                policy: default_out,
                rules: output,
            },
        ],
        sets,
        log_rate_per_minute,
    })
}

fn parse_default(field: &'static str, value: &str) -> Result<Verdict, FirewallError> {
    match value {
        "allow" => Ok(Verdict::Accept),
        "deny" => Ok(Verdict::Drop),
        other => Err(FirewallError::InvalidState {
            field: field.to_owned(),
            reason: format!("{other:?} is not allow or deny"),
        }),
    }
}

fn failsafe_base(dir: Direction) -> Vec<NftRule> {
    let accept = |cond: Cond, what: &str| NftRule {
        conds: vec![cond],
        log_prefix: None,
        verdict: Some(Verdict::Accept),
        comment: format!("failsafe {what}"),
    };
    vec![
        accept(Cond::Loopback(dir), "loopback"),
        accept(Cond::EstablishedRelated, "established,related"),
        accept(Cond::NeighbourDiscovery, "ipv6 neighbour discovery"),
    ]
}

fn default_rules(dir: Direction, verdict: Verdict) -> Vec<NftRule> {
    let chain = chain_name(dir);
    let comment = "default".to_owned();
    let mut rules = Vec::new();
    if verdict == Verdict::Drop {
        rules.push(NftRule {
            conds: vec![],
            log_prefix: Some(format!("bulwark drop {chain} default ")),
            verdict: None,
            comment: comment.clone(),
        });
    }
    rules.push(NftRule { conds: vec![], log_prefix: None, verdict: Some(verdict), comment });
    rules
}

fn chain_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Inbound => "input",
        Direction::Outbound => "output",
    }
}

/// A policy rule, validated.
struct ParsedRule {
    index: usize,
    policy: String,
    verdict: Verdict,
    direction: Direction,
    /// `None`: any peer. `Some`: the peer addresses by set kind (maybe none at all).
    peers: Option<BTreeMap<SetKind, Vec<String>>>,
    ports: BTreeMap<Protocol, Vec<(u16, u16)>>,
    /// `None`: any interface; `Some(true)`: wireless; `Some(false)`: wired.
    wireless: Option<bool>,
    log: bool,
    failsafe: bool,
}

impl ParsedRule {
    fn parse(index: usize, r: &FirewallRule) -> Result<Self, FirewallError> {
        let invalid = |field: &str, reason: String| FirewallError::InvalidRule {
            index,
            policy: r.policy.clone(),
            field: field.to_owned(),
            reason,
        };
        let verdict = match r.action.as_str() {
            "allow" => Verdict::Accept,
            "deny" => Verdict::Drop,
            other => return Err(invalid("action", format!("{other:?} is not allow or deny"))),
        };
        let direction = match r.direction.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            other => {
                return Err(invalid("direction", format!("{other:?} is not inbound or outbound")));
            }
        };
        let wireless = match r.interface.as_str() {
            "" | "any" => None,
            "wired" => Some(false),
            "wireless" => Some(true),
            other => {
                return Err(invalid(
                    "interface",
                    format!("{other:?} is not any, wired or wireless"),
                ));
            }
        };
        if r.failsafe && (verdict != Verdict::Accept || direction != Direction::Inbound) {
            return Err(invalid("failsafe", "only inbound allow rules can be failsafe".into()));
        }

        let mut ports: BTreeMap<Protocol, Vec<(u16, u16)>> = BTreeMap::new();
        for (k, p) in r.ports.iter().enumerate() {
            let field = format!("ports[{k}]");
            let protocol = match p.protocol.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    return Err(invalid(&field, format!("protocol {other:?} is not tcp or udp")));
                }
            };
            let port = |v: u32| u16::try_from(v).ok().filter(|v| *v != 0);
            match (port(p.first), port(p.last)) {
                (Some(first), Some(last)) if first <= last => {
                    ports.entry(protocol).or_default().push((first, last))
                }
                _ => {
                    return Err(invalid(
                        &field,
                        format!(
                            "{}-{} is not a port range (1-65535, first <= last)",
                            p.first, p.last
                        ),
                    ));
                }
            }
        }
        for ranges in ports.values_mut() {
            *ranges = merge_ranges(std::mem::take(ranges));
        }

        let peers = if r.any_peer {
            None
        } else {
            let mut h4 = Vec::new();
            let mut n4 = Vec::new();
            let mut h6 = Vec::new();
            let mut n6 = Vec::new();
            for (k, a) in r.addresses.iter().enumerate() {
                let net = parse_net(a.trim()).ok_or_else(|| {
                    invalid(&format!("addresses[{k}]"), format!("{a:?} is not an address or CIDR"))
                })?;
                match net {
                    IpNet::V4(n) if n.prefix_len() == 32 => h4.push(n.addr()),
                    IpNet::V4(n) => n4.push(n.trunc()),
                    IpNet::V6(n) if n.prefix_len() == 128 => h6.push(n.addr()),
                    IpNet::V6(n) => n6.push(n.trunc()),
                }
            }
            h4.sort();
            h4.dedup();
            h6.sort();
            h6.dedup();
            // Interval sets refuse overlapping elements: keep the minimal covering prefixes.
            let n4 = Ipv4Net::aggregate(&n4);
            let n6 = Ipv6Net::aggregate(&n6);
            let mut by_kind = BTreeMap::new();
            // Canonical order is text order, the order observed elements compare in.
            let text = |mut v: Vec<String>| {
                v.sort();
                v
            };
            by_kind.insert(SetKind::Ipv4Hosts, text(h4.iter().map(|a| a.to_string()).collect()));
            by_kind.insert(SetKind::Ipv4Nets, text(n4.iter().map(|n| n.to_string()).collect()));
            by_kind.insert(SetKind::Ipv6Hosts, text(h6.iter().map(|a| a.to_string()).collect()));
            by_kind.insert(SetKind::Ipv6Nets, text(n6.iter().map(|n| n.to_string()).collect()));
            by_kind.retain(|_, v: &mut Vec<String>| !v.is_empty());
            Some(by_kind)
        };

        Ok(ParsedRule {
            index,
            policy: r.policy.clone(),
            verdict,
            direction,
            peers,
            ports,
            wireless,
            log: r.log,
            failsafe: r.failsafe,
        })
    }

    /// The nft rules of this policy rule (one per peer set kind x protocol; two when
    /// logged), registering its sets in `sets`.
    fn expand(&self, sets: &mut Vec<PlannedSet>) -> Vec<NftRule> {
        let dir = self.direction;
        let peer_conds: Vec<Option<Cond>> = match &self.peers {
            None => vec![None],
            Some(by_kind) => by_kind
                .iter()
                .map(|(kind, elements)| {
                    let name = format!("r{}_{}", self.index, kind.suffix());
                    sets.push(PlannedSet {
                        name: name.clone(),
                        kind: *kind,
                        elements: elements.clone(),
                    });
                    Some(Cond::PeerSet { dir, set: name, kind: *kind })
                })
                .collect(),
        };
        let port_conds: Vec<Option<Cond>> = if self.ports.is_empty() {
            vec![None]
        } else {
            self.ports
                .iter()
                .map(|(p, r)| Some(Cond::Ports { protocol: *p, ranges: r.clone() }))
                .collect()
        };
        let iface = self.wireless.map(|wireless| Cond::Wireless { dir, wireless });
        let mut comment = format!("r{} {}", self.index, self.policy);
        truncate(&mut comment, MAX_COMMENT);
        let verb = match self.verdict {
            Verdict::Accept => "allow",
            Verdict::Drop => "drop",
        };

        let mut out = Vec::new();
        for peer in &peer_conds {
            for port in &port_conds {
                let conds: Vec<Cond> =
                    [peer.clone(), port.clone(), iface.clone()].into_iter().flatten().collect();
                if self.log {
                    out.push(NftRule {
                        conds: conds.clone(),
                        log_prefix: Some(format!(
                            "bulwark {verb} {} r{} ",
                            chain_name(dir),
                            self.index
                        )),
                        verdict: None,
                        comment: comment.clone(),
                    });
                }
                out.push(NftRule {
                    conds,
                    log_prefix: None,
                    verdict: Some(self.verdict),
                    comment: comment.clone(),
                });
            }
        }
        out
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// Sorts ranges and merges overlapping or adjacent ones (nft refuses overlaps in a set).
fn merge_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

pub(super) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

// ---------------------------------------------------------------------------------------
// Rendering through the nftables crate's JSON schema types.

fn table() -> Table<'static> {
    Table { family: FAMILY, name: Cow::Borrowed(TABLE), handle: None }
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: Cow::Borrowed(protocol),
        field: Cow::Borrowed(field),
    })))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn port_expr(first: u16, last: u16) -> Expression<'static> {
    if first == last {
        Expression::Number(u32::from(first))
    } else {
        Expression::Range(Box::new(Range {
            range: [Expression::Number(u32::from(first)), Expression::Number(u32::from(last))],
        }))
    }
}

/// A canonical element text (`198.18.0.5`, `10.0.0.0/8`, `wlan0`) as an nft expression.
fn element_expr(kind: SetKind, element: &str) -> Expression<'static> {
    let prefix = element.split_once('/').and_then(|(a, l)| Some((a, l.parse::<u32>().ok()?)));
    match prefix {
        Some((addr, len)) if kind.interval() => {
            Expression::Named(NamedExpression::Prefix(Prefix {
                addr: Box::new(Expression::String(Cow::Owned(addr.to_owned()))),
                len,
            }))
        }
        _ => Expression::String(Cow::Owned(element.to_owned())),
    }
}

impl Cond {
    fn statement(&self) -> Statement<'static> {
        match self {
            Cond::Loopback(dir) => {
                let key = match dir {
                    Direction::Inbound => MetaKey::Iif,
                    Direction::Outbound => MetaKey::Oif,
                };
                matches(meta(key), Operator::EQ, Expression::String(Cow::Borrowed("lo")))
            }
            Cond::EstablishedRelated => matches(
                Expression::Named(NamedExpression::CT(CT {
                    key: Cow::Borrowed("state"),
                    family: None,
                    dir: None,
                })),
                Operator::IN,
                Expression::List(vec![
                    Expression::String(Cow::Borrowed("established")),
                    Expression::String(Cow::Borrowed("related")),
                ]),
            ),
            Cond::NeighbourDiscovery => matches(
                payload("icmpv6", "type"),
                Operator::EQ,
                Expression::Named(NamedExpression::Set(
                    ND_TYPES
                        .iter()
                        .map(|t| SetItem::Element(Expression::String(Cow::Borrowed(t))))
                        .collect(),
                )),
            ),
            Cond::PeerSet { dir, set, kind } => matches(
                payload(kind.ip_protocol(), dir.addr_field()),
                Operator::EQ,
                Expression::String(Cow::Owned(format!("@{set}"))),
            ),
            Cond::PeerAddr { dir, addr } => {
                let proto = if addr.is_ipv4() { "ip" } else { "ip6" };
                matches(
                    payload(proto, dir.addr_field()),
                    Operator::EQ,
                    Expression::String(Cow::Owned(addr.to_string())),
                )
            }
            Cond::Ports { protocol, ranges } => {
                let right = match ranges.as_slice() {
                    [(first, last)] => port_expr(*first, *last),
                    _ => Expression::Named(NamedExpression::Set(
                        ranges.iter().map(|(f, l)| SetItem::Element(port_expr(*f, *l))).collect(),
                    )),
                };
                matches(payload(protocol.name(), "dport"), Operator::EQ, right)
            }
            Cond::Wireless { dir, wireless } => matches(
                meta(dir.ifname_key()),
                if *wireless { Operator::EQ } else { Operator::NEQ },
                Expression::String(Cow::Owned(format!("@{WIRELESS_SET}"))),
            ),
        }
    }
}

impl NftRule {
    /// The rule's statements, in the order nft lists them back.
    pub fn statements(&self, log_rate_per_minute: u32) -> Vec<Statement<'static>> {
        let mut out: Vec<Statement<'static>> = self.conds.iter().map(Cond::statement).collect();
        if self.log_prefix.is_some() {
            out.push(Statement::Limit(nftables::stmt::Limit {
                rate: log_rate_per_minute,
                rate_unit: None,
                per: Some(Cow::Borrowed("minute")),
                burst: Some(LOG_BURST),
                burst_unit: None,
                inv: None,
            }));
        }
        out.push(Statement::Counter(nftables::stmt::Counter::Anonymous(None)));
        if let Some(prefix) = &self.log_prefix {
            let mut log = Log::new(None);
            log.prefix = Some(Cow::Owned(prefix.clone()));
            out.push(Statement::Log(Some(log)));
        }
        match self.verdict {
            Some(Verdict::Accept) => out.push(Statement::Accept(None)),
            Some(Verdict::Drop) => out.push(Statement::Drop(None)),
            None => {}
        }
        out
    }
}

impl PlannedSet {
    pub fn schema(&self, with_elements: bool) -> Set<'static> {
        let elem = (with_elements && !self.elements.is_empty()).then(|| {
            Cow::Owned(self.elements.iter().map(|e| element_expr(self.kind, e)).collect::<Vec<_>>())
        });
        Set {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(self.name.clone()),
            handle: None,
            set_type: SetTypeValue::Single(self.kind.set_type()),
            policy: None,
            flags: self.kind.interval().then(|| [SetFlag::Interval].into_iter().collect()),
            elem,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }
    }

    fn element(&self, elements: &[String]) -> Element<'static> {
        Element {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(self.name.clone()),
            elem: Cow::Owned(elements.iter().map(|e| element_expr(self.kind, e)).collect()),
        }
    }
}

/// Elements to take out of and put into one set (a membership-only change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDelta {
    pub name: String,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl Plan {
    pub fn chain(&self, name: &str) -> Option<&PlannedChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&PlannedSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }

    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// The nft rule objects of a chain, as they are added.
    pub fn rules_of(&self, chain: &PlannedChain) -> Vec<Rule<'static>> {
        chain
            .rules
            .iter()
            .map(|r| Rule {
                family: FAMILY,
                table: Cow::Borrowed(TABLE),
                chain: Cow::Borrowed(chain.name),
                expr: Cow::Owned(r.statements(self.log_rate_per_minute)),
                handle: None,
                index: None,
                comment: (!r.comment.is_empty()).then(|| Cow::Owned(r.comment.clone())),
            })
            .collect()
    }

    pub fn chain_schema(chain: &PlannedChain) -> Chain<'static> {
        Chain {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(chain.name),
            newname: None,
            handle: None,
            _type: Some(NfChainType::Filter),
            hook: Some(chain.hook),
            prio: Some(CHAIN_PRIORITY),
            dev: None,
            policy: Some(match chain.policy {
                Verdict::Accept => NfChainPolicy::Accept,
                Verdict::Drop => NfChainPolicy::Drop,
            }),
        }
    }

    /// The full replacement as one transaction: `add table` (so the delete never fails),
    /// `delete table`, then the table, its sets with elements, chains and rules.
    pub fn full_batch(&self) -> Nftables<'static> {
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(table()));
        batch.delete(NfListObject::Table(table()));
        batch.add(NfListObject::Table(table()));
        for set in &self.sets {
            batch.add(NfListObject::Set(Box::new(set.schema(true))));
        }
        for chain in &self.chains {
            batch.add(NfListObject::Chain(Self::chain_schema(chain)));
        }
        for chain in &self.chains {
            for rule in self.rules_of(chain) {
                batch.add(NfListObject::Rule(rule));
            }
        }
        batch.to_nftables()
    }

    /// Replaces the elements of the named sets (`flush set` + `add element`), one transaction.
    pub fn sets_batch(&self, names: &[&str]) -> Nftables<'static> {
        let mut batch = Batch::new();
        for set in self.sets.iter().filter(|s| names.contains(&s.name.as_str())) {
            batch.add_cmd(NfCmd::Flush(FlushObject::Set(Box::new(set.schema(false)))));
            if !set.elements.is_empty() {
                batch.add(NfListObject::Element(set.element(&set.elements)));
            }
        }
        batch.to_nftables()
    }

    /// Applies membership deltas (`delete element` + `add element`), one transaction. Cheaper
    /// than [`Plan::sets_batch`] for big sets; fails if an element to remove is not there.
    pub fn delta_batch(&self, deltas: &[SetDelta]) -> Nftables<'static> {
        let mut batch = Batch::new();
        for d in deltas {
            let Some(set) = self.set(&d.name) else { continue };
            if !d.remove.is_empty() {
                batch.delete(NfListObject::Element(set.element(&d.remove)));
            }
            if !d.add.is_empty() {
                batch.add(NfListObject::Element(set.element(&d.add)));
            }
        }
        batch.to_nftables()
    }
}

// ---------------------------------------------------------------------------------------
// Human form, close to `nft list table inet bulwark` (for snapshots, logs and summaries).

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = |kind: &SetKind| kind.ip_protocol();
        match self {
            Cond::Loopback(Direction::Inbound) => write!(f, "iif \"lo\""),
            Cond::Loopback(Direction::Outbound) => write!(f, "oif \"lo\""),
            Cond::EstablishedRelated => write!(f, "ct state established,related"),
            Cond::NeighbourDiscovery => write!(f, "icmpv6 type {{ {} }}", ND_TYPES.join(", ")),
            Cond::PeerSet { dir, set, kind } => {
                write!(f, "{} {} @{set}", ip(kind), dir.addr_field())
            }
            Cond::PeerAddr { dir, addr } => {
                write!(
                    f,
                    "{} {} {addr}",
                    if addr.is_ipv4() { "ip" } else { "ip6" },
                    dir.addr_field()
                )
            }
            Cond::Ports { protocol, ranges } => {
                let items: Vec<String> = ranges
                    .iter()
                    .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
                    .collect();
                match items.as_slice() {
                    [one] => write!(f, "{} dport {one}", protocol.name()),
                    _ => write!(f, "{} dport {{ {} }}", protocol.name(), items.join(", ")),
                }
            }
            Cond::Wireless { dir, wireless } => {
                let key = match dir {
                    Direction::Inbound => "iifname",
                    Direction::Outbound => "oifname",
                };
                let op = if *wireless { "" } else { "!= " };
                write!(f, "{key} {op}@{WIRELESS_SET}")
            }
        }
    }
}

impl NftRule {
    pub fn display(&self, log_rate_per_minute: u32) -> String {
        let mut parts: Vec<String> = self.conds.iter().map(|c| c.to_string()).collect();
        if self.log_prefix.is_some() {
            parts
                .push(format!("limit rate {log_rate_per_minute}/minute burst {LOG_BURST} packets"));
        }
        parts.push("counter".into());
        if let Some(p) = &self.log_prefix {
            parts.push(format!("log prefix {p:?}"));
        }
        match self.verdict {
            Some(Verdict::Accept) => parts.push("accept".into()),
            Some(Verdict::Drop) => parts.push("drop".into()),
            None => {}
        }
        if !self.comment.is_empty() {
            parts.push(format!("comment {:?}", self.comment));
        }
        parts.join(" ")
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {TABLE} {{")?;
        for set in &self.sets {
            let flags = if set.kind.interval() { " flags interval;" } else { "" };
            write!(f, "  set {} {{ type {};{flags}", set.name, set.kind.nft_type())?;
            const SHOWN: usize = 6;
            if !set.elements.is_empty() {
                let shown: Vec<&str> =
                    set.elements.iter().take(SHOWN).map(String::as_str).collect();
                let more = set.elements.len().saturating_sub(SHOWN);
                let tail = if more > 0 { format!(", ... {more} more") } else { String::new() };
                write!(f, " elements = {{ {}{tail} }}", shown.join(", "))?;
            }
            writeln!(f, " }}")?;
        }
        for chain in &self.chains {
            let policy = match chain.policy {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
            };
            writeln!(f, "  chain {} {{", chain.name)?;
            writeln!(
                f,
                "    type filter hook {} priority {CHAIN_PRIORITY}; policy {policy};",
                chain.name
            )?;
            for rule in &chain.rules {
                writeln!(f, "    {}", rule.display(self.log_rate_per_minute))?;
            }
            writeln!(f, "  }}")?;
        }
        write!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_sort() {
        assert_eq!(
            merge_ranges(vec![(90, 95), (80, 90), (22, 22), (23, 23)]),
            vec![(22, 23), (80, 95)]
        );
        assert_eq!(merge_ranges(vec![(65535, 65535), (1, 1)]), vec![(1, 1), (65535, 65535)]);
    }

    #[test]
    fn comments_truncate_on_char_boundaries() {
        let mut s = "é".repeat(100);
        truncate(&mut s, 127);
        assert_eq!(s.len(), 126);
    }
}
