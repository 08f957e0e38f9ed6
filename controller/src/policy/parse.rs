//! YAML documents → [`Document`]s, every problem collected with its position and path.

use super::decode::{Decoder, Fields};
use super::model::*;
use super::yaml::{Node, Value};

/// Decodes one YAML document.
pub fn document(d: &mut Decoder, node: &Node) -> Option<Document> {
    let mut top = d.map(node, "")?;
    let api = top.require(d, "apiVersion").and_then(|n| d.string(n, "apiVersion"));
    if let (Some(api), Some(n)) = (&api, top.get("apiVersion"))
        && api != API_VERSION
    {
        d.error(n.pos, "apiVersion", format!("{api:?} is not supported; use {API_VERSION}"));
    }
    let kind =
        top.require(d, "kind").and_then(|n| d.choice(n, "kind", &["Segment", "Service", "Policy"]));
    let name = top.require(d, "metadata").and_then(|n| metadata(d, n));
    let spec = top.require(d, "spec");
    top.finish(d);
    // Decode the spec even when the header has errors, to report its problems too.
    let (kind, spec) = (kind?, spec?);
    let n = name.clone().unwrap_or_default();
    let doc = match kind.as_str() {
        "Segment" => segment(d, spec, n).map(Document::Segment),
        "Service" => service(d, spec, n).map(Document::Service),
        _ => policy(d, spec, n).map(|p| Document::Policy(Box::new(p))),
    };
    name.and(api).and(doc)
}

fn metadata(d: &mut Decoder, node: &Node) -> Option<String> {
    let mut m = d.map(node, "metadata")?;
    let name = m.require(d, "name").and_then(|n| d.name(n, "metadata.name"));
    m.finish(d);
    name
}

fn selector(d: &mut Decoder, node: &Node, path: &str) -> Option<Selector> {
    let match_labels = d.string_map(node, path)?;
    Some(Selector { match_labels })
}

fn segment(d: &mut Decoder, node: &Node, name: String) -> Option<Segment> {
    let mut f = d.map(node, "spec")?;
    let cidrs = match f.get("cidrs") {
        Some(n) => d.list(n, "spec.cidrs", |d, n, p| {
            let s = d.string(n, p)?;
            let parsed = s
                .parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) if net.trunc() == net => Some(net),
                Ok(net) => {
                    d.error(
                        n.pos,
                        p,
                        format!("{s} has host bits set; did you mean {}?", net.trunc()),
                    );
                    None
                }
                Err(_) => {
                    d.error(n.pos, p, format!("{s:?} is not an IP address or CIDR"));
                    None
                }
            }
        })?,
        None => Vec::new(),
    };
    let sel = f.get("selector").and_then(|n| selector(d, n, "spec.selector"));
    if cidrs.is_empty() && sel.is_none() && f.get("cidrs").is_none() {
        d.error(f.pos, "spec", "a segment needs cidrs, a selector, or both");
    }
    f.finish(d);
    Some(Segment { name, cidrs, selector: sel })
}

fn port_range(d: &mut Decoder, node: &Node, path: &str) -> Option<PortRange> {
    // "104/tcp", "631/tcp+udp" is split by the caller; "6000-6010/tcp" is a range.
    let s = d.string(node, path)?;
    let Some((ports, proto)) = s.split_once('/') else {
        d.error(node.pos, path, format!("{s:?}: write PORT/tcp, PORT/udp or FIRST-LAST/tcp"));
        return None;
    };
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            d.error(node.pos, path, format!("{other:?} is not a protocol (tcp or udp)"));
            return None;
        }
    };
    let parse = |p: &str| p.trim().parse::<u32>().ok().filter(|v| (1..=65535).contains(v));
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(ports), parse(ports)),
    };
    match (first, last) {
        (Some(a), Some(b)) if a <= b => {
            Some(PortRange { protocol, first: a as u16, last: b as u16 })
        }
        (Some(_), Some(_)) => {
            d.error(node.pos, path, format!("{ports}: the range ends before it starts"));
            None
        }
        _ => {
            d.error(node.pos, path, format!("{ports} is not a port (1-65535)"));
            None
        }
    }
}

fn service(d: &mut Decoder, node: &Node, name: String) -> Option<Service> {
    let mut f = d.map(node, "spec")?;
    let ports = f.require(d, "ports").and_then(|n| {
        d.list(n, "spec.ports", |d, n, p| {
            // Expand "631/tcp+udp" into two ranges.
            let s = d.string(n, p)?;
            if let Some((ports, "tcp+udp")) = s.split_once('/') {
                let tcp = Node { value: Value::Scalar(format!("{ports}/tcp"), false), pos: n.pos };
                let udp = Node { value: Value::Scalar(format!("{ports}/udp"), false), pos: n.pos };
                return Some(vec![port_range(d, &tcp, p)?, port_range(d, &udp, p)?]);
            }
            port_range(d, n, p).map(|r| vec![r])
        })
    });
    f.finish(d);
    let ports: Vec<PortRange> = ports?.into_iter().flatten().collect();
    if ports.is_empty() {
        d.error(node.pos, "spec.ports", "a service needs at least one port");
    }
    Some(Service { name, ports })
}

fn action(d: &mut Decoder, n: &Node, p: &str) -> Option<Action> {
    d.choice(n, p, &["allow", "deny"])
        .map(|s| if s == "allow" { Action::Allow } else { Action::Deny })
}

fn names(d: &mut Decoder, n: &Node, p: &str) -> Option<Vec<String>> {
    d.list(n, p, |d, n, p| d.name(n, p))
}

fn opt_u32(
    d: &mut Decoder,
    f: &mut Fields,
    key: &str,
    min: i64,
    max: i64,
    what: &str,
) -> Option<u32> {
    let path = f.path(key);
    f.get(key).and_then(|n| d.int(n, &path, min, max, what)).map(|v| v as u32)
}

fn firewall(d: &mut Decoder, node: &Node, path: &str) -> Option<Firewall> {
    let mut f = d.map(node, path)?;
    let default_inbound = match f.get("defaultInbound") {
        Some(n) => action(d, n, &f.path("defaultInbound")).map(Some),
        None => Some(None),
    };
    let default_outbound = match f.get("defaultOutbound") {
        Some(n) => action(d, n, &f.path("defaultOutbound")).map(Some),
        None => Some(None),
    };
    let log_rate = match f.get("logRatePerMinute") {
        Some(_) => opt_u32(d, &mut f, "logRatePerMinute", 1, 6000, "a rate per minute"),
        None => Some(60),
    };
    let rules_path = f.path("rules");
    let n_rules = node_of(node, "rules").map_or(0, |n| match &n.value {
        Value::Seq(items) => items.len(),
        _ => 0,
    });
    let rules = match f.get("rules") {
        Some(n) => d.list(n, &rules_path, rule).filter(|r| r.len() == n_rules),
        None => Some(Vec::new()),
    };
    f.finish(d);
    Some(Firewall {
        default_inbound: default_inbound?,
        default_outbound: default_outbound?,
        rules: rules?,
        log_rate_per_minute: log_rate?,
    })
}

fn rule(d: &mut Decoder, node: &Node, path: &str) -> Option<FirewallRule> {
    let mut f = d.map(node, path)?;
    let act = f.require(d, "action").and_then(|n| action(d, n, &f.path("action")));
    let direction = f.require(d, "direction").and_then(|n| {
        d.choice(n, &f.path("direction"), &["inbound", "outbound"])
            .map(|s| if s == "inbound" { Direction::Inbound } else { Direction::Outbound })
    });
    let peers = match f.get("peers") {
        Some(n) => names(d, n, &f.path("peers")),
        None => Some(Vec::new()),
    };
    let services = match f.get("services") {
        Some(n) => names(d, n, &f.path("services")),
        None => Some(Vec::new()),
    };
    let interface =
        match f.get("interface") {
            Some(n) => d.choice(n, &f.path("interface"), &["any", "wired", "wireless"]).map(|s| {
                match s.as_str() {
                    "wired" => InterfaceKind::Wired,
                    "wireless" => InterfaceKind::Wireless,
                    _ => InterfaceKind::Any,
                }
            }),
            None => Some(InterfaceKind::Any),
        };
    let log = match f.get("log") {
        Some(n) => d.bool(n, &f.path("log")),
        None => Some(false),
    };
    let failsafe = match f.get("failsafe") {
        Some(n) => {
            let failsafe = d.bool(n, &f.path("failsafe"));
            if failsafe == Some(true)
                && (act != Some(Action::Allow) || direction != Some(Direction::Inbound))
            {
                d.error(
                    n.pos,
                    &f.path("failsafe"),
                    "failsafe is for admin access: only `action: allow` inbound rules can be failsafe",
                );
            }
            failsafe
        }
        None => Some(false),
    };
    f.finish(d);
    Some(FirewallRule {
        action: act?,
        direction: direction?,
        peers: peers?,
        services: services?,
        interface: interface?,
        log: log?,
        failsafe: failsafe?,
    })
}

fn wireless(d: &mut Decoder, node: &Node, path: &str) -> Option<Wireless> {
    let mut f = d.map(node, path)?;
    let mode =
        f.require(d, "mode").and_then(|n| d.choice(n, &f.path("mode"), &["off", "allowlist"]));
    let ssids_path = f.path("allowedSsids");
    let ssids = f.get("allowedSsids").and_then(|n| {
        d.list(n, &ssids_path, |d, n, p| {
            let mut s = d.map(n, p)?;
            let ssid = s.require(d, "ssid").and_then(|n| d.string(n, &s.path("ssid")));
            let security = s.require(d, "security").and_then(|n| {
                d.choice(
                    n,
                    &s.path("security"),
                    &["wpa2-psk", "wpa3-sae", "wpa2-enterprise", "wpa3-enterprise"],
                )
                .map(|v| match v.as_str() {
                    "wpa2-psk" => WifiSecurity::Wpa2Psk,
                    "wpa3-sae" => WifiSecurity::Wpa3Sae,
                    "wpa2-enterprise" => WifiSecurity::Wpa2Enterprise,
                    _ => WifiSecurity::Wpa3Enterprise,
                })
            });
            s.finish(d);
            Some(AllowedSsid { ssid: ssid?, security: security? })
        })
    });
    f.finish(d);
    match mode?.as_str() {
        "off" => {
            if let Some(n) = node_of(node, "allowedSsids") {
                d.error(
                    n.pos,
                    &ssids_path,
                    "contradicts mode: off (remove it, or use mode: allowlist)",
                );
            }
            Some(Wireless::Off)
        }
        _ => {
            let ssids = ssids.unwrap_or_default();
            if ssids.is_empty() {
                d.error(
                    node.pos,
                    &ssids_path,
                    "mode: allowlist needs at least one allowed SSID (or use mode: off)",
                );
            }
            Some(Wireless::Allowlist(ssids))
        }
    }
}

/// The value of `key` in mapping `node`, if any (positions for cross-field errors).
fn node_of<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| matches!(&k.value, Value::Scalar(s, _) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn passwords(d: &mut Decoder, node: &Node, path: &str) -> Option<Passwords> {
    let mut f = d.map(node, path)?;
    let profile =
        f.require(d, "profile").and_then(|n| d.choice(n, &f.path("profile"), PASSWORD_PROFILES));
    let p = Passwords {
        profile: profile.clone().unwrap_or_default(),
        min_length: opt_u32(d, &mut f, "minLength", 8, 128, "a password length"),
        min_classes: opt_u32(d, &mut f, "minClasses", 1, 4, "a number of character classes"),
        max_age_days: opt_u32(d, &mut f, "maxAgeDays", 1, 99_999, "a number of days"),
        min_age_days: opt_u32(d, &mut f, "minAgeDays", 0, 365, "a number of days"),
        warn_age_days: opt_u32(d, &mut f, "warnAgeDays", 0, 365, "a number of days"),
        lockout_attempts: opt_u32(d, &mut f, "lockoutAttempts", 1, 100, "a number of attempts"),
        unlock_time_seconds: opt_u32(
            d,
            &mut f,
            "unlockTimeSeconds",
            0,
            86_400,
            "a number of seconds",
        ),
    };
    if let (Some(min), Some(max)) = (p.min_age_days, p.max_age_days)
        && min > max
        && let Some(n) = node_of(node, "minAgeDays")
    {
        d.error(
            n.pos,
            &f.path("minAgeDays"),
            format!("{min} days is longer than maxAgeDays ({max})"),
        );
    }
    f.finish(d);
    profile.map(|_| p)
}

fn users(d: &mut Decoder, node: &Node, path: &str) -> Option<Users> {
    let mut f = d.map(node, path)?;
    let alert_new_users = match f.get("alertNewUsers") {
        Some(n) => d.bool(n, &f.path("alertNewUsers")),
        None => Some(true),
    };
    let privileged_groups = match f.get("privilegedGroups") {
        Some(n) => names(d, n, &f.path("privilegedGroups")),
        None => Some(vec!["sudo".into(), "adm".into(), "wheel".into()]),
    };
    let allowed_accounts = match f.get("allowedAccounts") {
        Some(n) => names(d, n, &f.path("allowedAccounts")),
        None => Some(Vec::new()),
    };
    let action = match f.get("action") {
        Some(n) => d
            .choice(n, &f.path("action"), &["alert", "lock"])
            .map(|s| if s == "lock" { UserAction::Lock } else { UserAction::Alert }),
        None => Some(UserAction::Alert),
    };
    f.finish(d);
    Some(Users {
        alert_new_users: alert_new_users?,
        privileged_groups: privileged_groups?,
        allowed_accounts: allowed_accounts?,
        action: action?,
    })
}

fn logins(d: &mut Decoder, node: &Node, path: &str) -> Option<Logins> {
    let mut f = d.map(node, path)?;
    let record = match f.get("record") {
        Some(n) => d.bool(n, &f.path("record")),
        None => Some(true),
    };
    let threshold = match f.get("bruteForceThreshold") {
        Some(_) => opt_u32(d, &mut f, "bruteForceThreshold", 2, 1000, "a number of failures"),
        None => Some(10),
    };
    let window = match f.get("bruteForceWindowSeconds") {
        Some(_) => opt_u32(d, &mut f, "bruteForceWindowSeconds", 10, 86_400, "a number of seconds"),
        None => Some(300),
    };
    f.finish(d);
    Some(Logins {
        record: record?,
        brute_force_threshold: threshold?,
        brute_force_window_seconds: window?,
    })
}

fn annotations(d: &mut Decoder, node: &Node, path: &str) -> Option<Annotations> {
    let mut f = d.map(node, path)?;
    let checklist = match f.get("checklist") {
        Some(n) => d.list(n, &f.path("checklist"), |d, n, p| d.string(n, p))?,
        None => Vec::new(),
    };
    let nist_path = f.path("nist80053");
    let nist_800_53 = match f.get("nist80053") {
        Some(n) => d.list(n, &nist_path, |d, n, p| {
            let c = d.string(n, p)?;
            let ok = c.split_once('-').is_some_and(|(fam, num)| {
                fam.len() == 2
                    && fam.chars().all(|ch| ch.is_ascii_uppercase())
                    && num.split('(').next().is_some_and(|x| x.parse::<u32>().is_ok())
            });
            if !ok {
                d.error(
                    n.pos,
                    p,
                    format!("{c:?} is not a NIST SP 800-53 control id (like AC-2 or SC-7(5))"),
                );
                return None;
            }
            Some(c)
        })?,
        None => Vec::new(),
    };
    f.finish(d);
    Some(Annotations { checklist, nist_800_53 })
}

fn policy(d: &mut Decoder, node: &Node, name: String) -> Option<Policy> {
    let mut f = d.map(node, "spec")?;
    let selector = match f.get("selector") {
        Some(n) => selector(d, n, "spec.selector"),
        None => Some(Selector::default()),
    };
    let priority = match f.get("priority") {
        Some(n) => d.int(n, "spec.priority", 0, 10_000, "a priority").map(|v| v as i32),
        None => Some(100),
    };
    let mode = match f.get("mode") {
        Some(n) => d
            .choice(n, "spec.mode", &["enforce", "audit"])
            .map(|m| if m == "audit" { Mode::Audit } else { Mode::Enforce }),
        None => Some(Mode::Enforce),
    };
    let firewall = f.get("firewall").map(|n| firewall(d, n, "spec.firewall"));
    let wireless = f.get("wireless").map(|n| wireless(d, n, "spec.wireless"));
    let passwords = f.get("passwords").map(|n| passwords(d, n, "spec.passwords"));
    let users = f.get("users").map(|n| users(d, n, "spec.users"));
    let logins = f.get("logins").map(|n| logins(d, n, "spec.logins"));
    let annotations = match f.get("annotations") {
        Some(n) => annotations(d, n, "spec.annotations"),
        None => Some(Annotations::default()),
    };
    f.finish(d);
    // A section that failed to decode fails the policy (its errors are already reported).
    fn section<T>(s: Option<Option<T>>) -> Option<Option<T>> {
        match s {
            None => Some(None),
            Some(Some(v)) => Some(Some(v)),
            Some(None) => None,
        }
    }
    Some(Policy {
        name,
        selector: selector?,
        priority: priority?,
        mode: mode?,
        firewall: section(firewall)?,
        wireless: section(wireless)?,
        passwords: section(passwords)?,
        users: section(users)?,
        logins: section(logins)?,
        annotations: annotations?,
    })
}
