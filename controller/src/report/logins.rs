//! The login audit summed up per host and user — attempts, failures, successes, the
//! sources they came from and brute-force alerts — from the `login` and `brute-force`
//! events agents report. `bulwarkctl logins report` prints it; the compliance report
//! carries it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::HostEvent;

/// One (host, user) line of the login audit.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRow {
    /// The hostname (the agent id when the agent never told its hostname).
    pub host: String,
    /// The account tried; `?` when the log line named none.
    pub user: String,
    pub attempts: u64,
    pub failures: u64,
    pub successes: u64,
    /// Source addresses (or terminals) the attempts came from.
    pub sources: BTreeSet<String>,
    /// Brute-force alerts raised for this user on this host.
    pub brute_force: u64,
}

/// Per host and user, in (host, user) order, from `login` and `brute-force` events (other
/// kinds are ignored).
pub fn summarize<'a>(events: impl IntoIterator<Item = &'a HostEvent>) -> Vec<LoginRow> {
    let mut rows: BTreeMap<(String, String), LoginRow> = BTreeMap::new();
    for e in events {
        let kind = e.event.kind.as_str();
        if kind != "login" && kind != "brute-force" {
            continue;
        }
        let field = |k: &str| e.event.fields.get(k).cloned().unwrap_or_default();
        let user = match field("user") {
            u if u.is_empty() => "?".to_owned(),
            u => u,
        };
        let host = e.host().to_owned();
        let row = rows.entry((host.clone(), user.clone())).or_insert_with(|| LoginRow {
            host,
            user,
            ..LoginRow::default()
        });
        if kind == "brute-force" {
            row.brute_force += 1;
            continue;
        }
        row.attempts += 1;
        if field("success") == "true" {
            row.successes += 1;
        } else {
            row.failures += 1;
        }
        let source = field("source");
        if !source.is_empty() {
            row.sources.insert(source);
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::AgentEvent;

    fn event(host: &str, kind: &str, fields: &[(&str, &str)]) -> HostEvent {
        HostEvent {
            agent_id: format!("agt-{host}"),
            hostname: host.into(),
            event: AgentEvent {
                id: "1".into(),
                kind: kind.into(),
                enforcer: "logins".into(),
                at_ms: 1,
                revision: 1,
                summary: String::new(),
                before: String::new(),
                after: String::new(),
                fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            },
        }
    }

    fn login(host: &str, user: &str, success: bool, source: &str) -> HostEvent {
        let success = success.to_string();
        event(host, "login", &[("user", user), ("success", &success), ("source", source)])
    }

    #[test]
    fn sums_per_host_and_user() {
        let events = vec![
            login("ws1", "rad", false, "198.18.0.9"),
            login("ws1", "rad", true, "198.18.0.10"),
            login("ws1", "", false, "198.18.0.7"),
            login("ct1", "rad", true, "198.18.0.9"),
            event("ws1", "brute-force", &[("user", "rad"), ("source", "198.18.0.9")]),
            event("ws1", "user-added", &[("user", "evil")]),
        ];
        let rows = summarize(&events);
        let keys: Vec<(&str, &str)> =
            rows.iter().map(|r| (r.host.as_str(), r.user.as_str())).collect();
        assert_eq!(keys, [("ct1", "rad"), ("ws1", "?"), ("ws1", "rad")]);
        let ws1 = &rows[2];
        assert_eq!((ws1.attempts, ws1.failures, ws1.successes, ws1.brute_force), (2, 1, 1, 1));
        assert_eq!(ws1.sources.len(), 2);
        assert_eq!(rows[1].failures, 1);
    }
}
