//! The per-node resolver: one task per controller node follows the applied revision and
//! keeps what resolution reads — the documents each agent resolves against (the released
//! ones, and during a rollout the canaries' target revision), the agents, and per document
//! set an index of which agents each policy selects and each segment's members. On every
//! change it works out which agents' desired state may differ and wakes exactly their
//! streams; a stream then resolves its one agent ([`Resolver::resolve`]).
//!
//! An agent's revision is the newest of: its record, the released (or canary) documents
//! that make up its state (selected policies, the segments and services their rules name),
//! the agents of those segments, and the revision of the last change that removed a policy
//! from agents (or switched this agent between document sets). Every node computes it from
//! its applied state alone, so it is the same on every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ipnet::IpNet;
use tokio::sync::watch;

use super::Document;
use super::resolve::{Members, Resolved, resolve_from};
use super::rollout;
use super::store as policy_store;
use crate::node::{Node, NodeError};
use crate::raft::state_machine::Reader;
use crate::security::{self, AgentEntry};

/// Agents whose desired state may have changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Affected {
    pub all: bool,
    pub ids: BTreeSet<String>,
}

impl Affected {
    fn everyone() -> Self {
        Self { all: true, ids: BTreeSet::new() }
    }

    fn extend(&mut self, other: Affected) {
        self.all |= other.all;
        self.ids.extend(other.ids);
    }

    /// How many agents this is among `total`.
    pub fn count(&self, total: usize) -> usize {
        if self.all { total } else { self.ids.len() }
    }
}

/// A document set and its indexes.
#[derive(Debug, Clone, Default)]
pub struct View {
    docs: Vec<Document>,
    revs: Vec<u64>,
    base: u64,
    /// Policy name -> the agents its selector matches.
    selected: BTreeMap<String, BTreeSet<String>>,
    /// Segment name -> the agents its selector matches.
    segment_agents: BTreeMap<String, BTreeSet<String>>,
    /// Segment name -> what its members are made of, kept up to date one agent at a time.
    segment_parts: BTreeMap<String, SegmentParts>,
    segments: BTreeMap<String, Members>,
}

/// A segment's members as counts, so one agent joining, leaving or changing is a few map
/// updates rather than a pass over every member: how many sources (the segment's own
/// CIDRs, member agents' addresses) give each network, and how many member agents have
/// each record revision.
#[derive(Debug, Clone, Default)]
struct SegmentParts {
    nets: BTreeMap<IpNet, u32>,
    revs: BTreeMap<u64, u32>,
}

impl SegmentParts {
    fn new(seg: &super::model::Segment) -> Self {
        let mut parts = Self::default();
        for net in &seg.cidrs {
            *parts.nets.entry(*net).or_default() += 1;
        }
        parts
    }

    /// Adds (`add`) or takes away what member `entry` gives the segment: its record
    /// revision, and its addresses unless it is revoked.
    fn count(&mut self, (a, revoked, rev): &AgentEntry, add: bool) {
        fn bump<K: Ord>(map: &mut BTreeMap<K, u32>, key: K, add: bool) {
            if add {
                *map.entry(key).or_default() += 1;
            } else if let std::collections::btree_map::Entry::Occupied(mut e) = map.entry(key) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
        bump(&mut self.revs, *rev, add);
        if revoked.is_none() {
            for addr in a.addresses.iter().filter_map(|s| s.parse::<std::net::IpAddr>().ok()) {
                bump(&mut self.nets, IpNet::from(addr), add);
            }
        }
    }

    fn members(&self) -> Members {
        let revision = self.revs.keys().next_back().copied().unwrap_or(0);
        (self.nets.keys().copied().collect(), revision)
    }
}

fn selector_of(d: &Document) -> Option<&super::model::Selector> {
    match d {
        Document::Policy(p) => Some(&p.selector),
        Document::Segment(s) => s.selector.as_ref(),
        Document::Service(_) => None,
    }
}

impl View {
    fn new(docs: Vec<(Document, u64)>, base: u64, agents: &HashMap<String, AgentEntry>) -> Self {
        let mut v = View { base, ..View::default() };
        for (d, r) in docs {
            v.docs.push(d);
            v.revs.push(r);
        }
        for d in &v.docs.clone() {
            v.index_doc(d, agents);
        }
        v
    }

    fn index_doc(&mut self, d: &Document, agents: &HashMap<String, AgentEntry>) {
        let matching = |sel: Option<&super::model::Selector>| -> BTreeSet<String> {
            match sel {
                None => BTreeSet::new(),
                Some(sel) => agents
                    .values()
                    .filter(|(a, _, _)| sel.matches(&a.labels))
                    .map(|(a, _, _)| a.id.clone())
                    .collect(),
            }
        };
        match d {
            Document::Policy(p) => {
                self.selected.insert(p.name.clone(), matching(Some(&p.selector)));
            }
            Document::Segment(s) => {
                let ids = matching(s.selector.as_ref());
                let mut parts = SegmentParts::new(s);
                for entry in ids.iter().filter_map(|id| agents.get(id)) {
                    parts.count(entry, true);
                }
                self.segments.insert(s.name.clone(), parts.members());
                self.segment_parts.insert(s.name.clone(), parts);
                self.segment_agents.insert(s.name.clone(), ids);
            }
            Document::Service(_) => {}
        }
    }

    fn unindex_doc(&mut self, d: &Document) {
        match d {
            Document::Policy(p) => {
                self.selected.remove(&p.name);
            }
            Document::Segment(s) => {
                self.segments.remove(&s.name);
                self.segment_parts.remove(&s.name);
                self.segment_agents.remove(&s.name);
            }
            Document::Service(_) => {}
        }
    }

    /// The agents selected by a policy whose rules name segment or service `name`.
    fn referrers(&self, kind: &str, name: &str, out: &mut BTreeSet<String>) {
        for d in &self.docs {
            let Document::Policy(p) = d else { continue };
            let uses = p.firewall.iter().flat_map(|f| &f.rules).any(|r| match kind {
                "Segment" => r.peers.iter().any(|x| x == name),
                _ => r.services.iter().any(|x| x == name),
            });
            if uses && let Some(ids) = self.selected.get(&p.name) {
                out.extend(ids.iter().cloned());
            }
        }
    }

    /// Replaces the documents; returns the agents whose state may differ.
    fn set_docs(
        &mut self,
        docs: Vec<(Document, u64)>,
        base: u64,
        agents: &HashMap<String, AgentEntry>,
    ) -> Affected {
        let mut affected = Affected::default();
        if base != self.base {
            affected.all = true;
            self.base = base;
        }
        let old: BTreeMap<String, (Document, u64)> = self
            .docs
            .iter()
            .cloned()
            .zip(self.revs.iter().copied())
            .map(|(d, r)| (d.key(), (d, r)))
            .collect();
        let new: BTreeMap<String, (Document, u64)> =
            docs.iter().map(|(d, r)| (d.key(), (d.clone(), *r))).collect();
        let changed: Vec<(Option<Document>, Option<Document>)> = old
            .keys()
            .chain(new.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| old.get(*k) != new.get(*k))
            .map(|k| (old.get(k).map(|x| x.0.clone()), new.get(k).map(|x| x.0.clone())))
            .collect();
        if changed.is_empty() {
            return affected;
        }
        // Agents reached before the change.
        for (before, after) in &changed {
            let d = before.as_ref().or(after.as_ref()).map(|d| (d.kind(), d.name().to_owned()));
            match d {
                Some(("Policy", name)) => {
                    affected.ids.extend(self.selected.get(&name).into_iter().flatten().cloned());
                }
                Some((kind, name)) => self.referrers(kind, &name, &mut affected.ids),
                None => {}
            }
        }
        self.docs = docs.iter().map(|(d, _)| d.clone()).collect();
        self.revs = docs.iter().map(|(_, r)| *r).collect();
        for (before, after) in &changed {
            if let Some(d) = before {
                self.unindex_doc(d);
            }
            if let Some(d) = after {
                self.index_doc(d, agents);
            }
        }
        // Agents reached after the change.
        for (before, after) in &changed {
            let d = after.as_ref().or(before.as_ref()).map(|d| (d.kind(), d.name().to_owned()));
            match d {
                Some(("Policy", name)) => {
                    affected.ids.extend(self.selected.get(&name).into_iter().flatten().cloned());
                }
                Some((kind, name)) => self.referrers(kind, &name, &mut affected.ids),
                None => {}
            }
        }
        affected
    }

    /// Agent `id` changed from `old` to what `agents` holds now: update the indexes;
    /// returns the agents whose segments changed.
    fn agent_changed(
        &mut self,
        id: &str,
        old: Option<&AgentEntry>,
        agents: &HashMap<String, AgentEntry>,
    ) -> BTreeSet<String> {
        let new = agents.get(id);
        let mut changed_segments = Vec::new();
        for d in &self.docs {
            let Some(sel) = selector_of(d) else { continue };
            let was = old.filter(|(a, _, _)| sel.matches(&a.labels));
            let is = new.filter(|(a, _, _)| sel.matches(&a.labels));
            match d {
                Document::Policy(p) => {
                    let set = self.selected.entry(p.name.clone()).or_default();
                    if is.is_some() {
                        set.insert(id.to_owned());
                    } else {
                        set.remove(id);
                    }
                }
                Document::Segment(s) if was.is_some() || is.is_some() => {
                    let set = self.segment_agents.entry(s.name.clone()).or_default();
                    if is.is_some() {
                        set.insert(id.to_owned());
                    } else {
                        set.remove(id);
                    }
                    let parts = self
                        .segment_parts
                        .entry(s.name.clone())
                        .or_insert_with(|| SegmentParts::new(s));
                    if let Some(entry) = was {
                        parts.count(entry, false);
                    }
                    if let Some(entry) = is {
                        parts.count(entry, true);
                    }
                    let members = parts.members();
                    if self.segments.get(&s.name) != Some(&members) {
                        self.segments.insert(s.name.clone(), members);
                        changed_segments.push(s.name.clone());
                    }
                }
                _ => {}
            }
        }
        let mut affected = BTreeSet::new();
        for name in changed_segments {
            self.referrers("Segment", &name, &mut affected);
        }
        affected
    }

    fn resolve(&self, agent: &AgentEntry, base: u64) -> Resolved {
        let members = |name: &str| self.segments.get(name);
        resolve_from(&self.docs, Some(&self.revs), self.base.max(base), &members, &agent.0, agent.2)
    }
}

/// What the resolver reads from the store besides agents.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The released documents with their revisions, and the narrowing revision.
    pub released: (Vec<(Document, u64)>, u64),
    /// The active rollout: canaries, target documents, and the revision they switched at.
    pub canary: Option<(BTreeSet<String>, Vec<Document>, u64)>,
    /// The last ended rollout's canaries and the revision it ended at.
    pub returned: (BTreeSet<String>, u64),
}

impl Sources {
    /// Every document released as of now: what agents got before staging existed.
    pub fn plain(docs: Vec<(Document, u64)>, narrowed: u64) -> Self {
        Self { released: (docs, narrowed), canary: None, returned: (BTreeSet::new(), 0) }
    }

    pub fn read(reader: &Reader) -> Result<Self, NodeError> {
        let released = match rollout::released(reader)? {
            Some((rel, _)) => (rel.documents, rel.narrowed),
            None => (policy_store::stored(reader)?, policy_store::narrowed(reader)?),
        };
        let canary = rollout::current(reader)?.map(|(r, since, _)| {
            let docs = r.documents.clone();
            (rollout::id_set(&r.canaries), docs, since)
        });
        let returned = rollout::last(reader)?
            .map_or((BTreeSet::new(), 0), |(e, rev)| (rollout::id_set(&e.canaries), rev));
        Ok(Self { released, canary, returned })
    }
}

/// The resolver's state: pure, so the benchmark drives it without a cluster.
#[derive(Debug, Default)]
pub struct Core {
    /// The applied revision this state reflects.
    pub revision: u64,
    agents: HashMap<String, AgentEntry>,
    released: View,
    canary: Option<(BTreeSet<String>, View)>,
    returned: (BTreeSet<String>, u64),
}

impl Core {
    pub fn new(sources: Sources, agents: Vec<AgentEntry>) -> Self {
        let agents: HashMap<String, AgentEntry> =
            agents.into_iter().map(|e| (e.0.id.clone(), e)).collect();
        let released = View::new(sources.released.0, sources.released.1, &agents);
        let canary = sources.canary.map(|(ids, docs, since)| {
            (ids, View::new(docs.into_iter().map(|d| (d, since)).collect(), since, &agents))
        });
        Self { revision: 0, agents, released, canary, returned: sources.returned }
    }

    pub fn agents(&self) -> usize {
        self.agents.len()
    }

    fn is_canary(&self, id: &str) -> bool {
        self.canary.as_ref().is_some_and(|(ids, _)| ids.contains(id))
    }

    /// Takes new documents / rollout state; returns the agents whose state may differ.
    pub fn set_sources(&mut self, sources: Sources) -> Affected {
        let mut affected = Affected::default();
        let mut released =
            self.released.set_docs(sources.released.0, sources.released.1, &self.agents);
        if let Some((ids, _)) = &self.canary {
            released.ids.retain(|id| !ids.contains(id));
        }
        affected.extend(released);
        let old_ids = self.canary.as_ref().map(|(ids, _)| ids.clone()).unwrap_or_default();
        let old_since = self.canary.as_ref().map_or(0, |(_, v)| v.base);
        match sources.canary {
            None => self.canary = None,
            Some((ids, docs, since)) => {
                let docs: Vec<(Document, u64)> = docs.into_iter().map(|d| (d, since)).collect();
                match &mut self.canary {
                    Some((old, view)) if view.base == since => {
                        let mut a = view.set_docs(docs, since, &self.agents);
                        a.ids.retain(|id| ids.contains(id));
                        if a.all {
                            a = Affected { all: false, ids: ids.clone() };
                        }
                        affected.extend(a);
                        *old = ids;
                    }
                    _ => self.canary = Some((ids, View::new(docs, since, &self.agents))),
                }
            }
        }
        let new_ids = self.canary.as_ref().map(|(ids, _)| ids.clone()).unwrap_or_default();
        let new_since = self.canary.as_ref().map_or(0, |(_, v)| v.base);
        if old_ids != new_ids || old_since != new_since {
            affected.ids.extend(old_ids);
            affected.ids.extend(new_ids);
        }
        if sources.returned != self.returned {
            affected.ids.extend(self.returned.0.iter().cloned());
            affected.ids.extend(sources.returned.0.iter().cloned());
            self.returned = sources.returned;
        }
        affected
    }

    /// Takes an agent's new record (`None`: gone); returns the agents whose state may differ.
    pub fn set_agent(&mut self, id: &str, entry: Option<AgentEntry>) -> Affected {
        let old = match entry {
            Some(e) => self.agents.insert(id.to_owned(), e),
            None => self.agents.remove(id),
        };
        let mut ids = BTreeSet::from([id.to_owned()]);
        let mut released = self.released.agent_changed(id, old.as_ref(), &self.agents);
        if let Some((canaries, view)) = &mut self.canary {
            released.retain(|x| !canaries.contains(x));
            let mut c = view.agent_changed(id, old.as_ref(), &self.agents);
            c.retain(|x| canaries.contains(x));
            ids.extend(c);
        }
        ids.extend(released);
        Affected { all: false, ids }
    }

    /// Agent `id`'s desired state (`None`: not enrolled).
    pub fn resolve(&self, id: &str) -> Option<Resolved> {
        let agent = self.agents.get(id)?;
        let base = if self.returned.0.contains(id) { self.returned.1 } else { 0 };
        Some(match &self.canary {
            Some((ids, view)) if ids.contains(id) => view.resolve(agent, base),
            _ => self.released.resolve(agent, base),
        })
    }

    /// The ids of every agent.
    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.agents.keys()
    }

    /// Whether `id` resolves against a rollout's target documents now.
    pub fn canary(&self, id: &str) -> bool {
        self.is_canary(id)
    }
}

/// The resolver of one node: the [`Core`], and a wake-up per agent with an open stream.
pub struct Resolver {
    core: RwLock<Core>,
    wakers: Mutex<Wakers>,
    applied: watch::Sender<u64>,
    /// Agents woken because their inputs changed, since the node started.
    pub recomputed: AtomicU64,
}

/// A wake-up per agent with an open stream. Closed streams leave their sender behind until
/// the next sweep, which runs when the map has doubled since the last one: sweeping on
/// every stream opening cost O(agents) each, O(agents²) for a reconnect storm.
#[derive(Default)]
struct Wakers {
    by_agent: HashMap<String, watch::Sender<u64>>,
    sweep_at: usize,
}

impl Wakers {
    fn subscribe(&mut self, id: &str) -> watch::Receiver<u64> {
        if self.by_agent.len() >= self.sweep_at {
            self.by_agent.retain(|_, tx| tx.receiver_count() > 0);
            self.sweep_at = (self.by_agent.len() * 2).max(1024);
        }
        self.by_agent.entry(id.to_owned()).or_insert_with(|| watch::channel(0).0).subscribe()
    }
}

/// One agent's record and revocation, as [`security::agents`] gives them.
fn agent_entry(reader: &Reader, id: &str) -> Result<Option<AgentEntry>, NodeError> {
    let read = |e: crate::raft::state_machine::ReadError| NodeError::Internal(e.to_string());
    let Some(r) = reader.get(security::AGENT, id).map_err(read)? else { return Ok(None) };
    let agent: security::AgentRecord = serde_json::from_slice(&r.value)
        .map_err(|e| NodeError::Internal(format!("corrupt agent record {id}: {e}")))?;
    let revoked = reader.get(security::REVOKED_AGENT, id).map_err(read)?;
    let rev = r.mod_revision.max(revoked.as_ref().map_or(0, |x| x.mod_revision));
    let reason = revoked.is_some().then(|| security::agent_revoked(reader, id).unwrap_or_default());
    Ok(Some((agent, reason, rev)))
}

fn load(reader: &Reader) -> Result<Core, NodeError> {
    let revision = reader.revision();
    let mut core = Core::new(Sources::read(reader)?, security::agents(reader)?);
    core.revision = revision;
    Ok(core)
}

impl Resolver {
    /// Loads this node's applied state and follows it in a task.
    pub fn spawn(node: Arc<Node>) -> Result<Arc<Self>, NodeError> {
        let core = load(&node.reader)?;
        let (applied, _) = watch::channel(core.revision);
        let resolver = Arc::new(Self {
            core: RwLock::new(core),
            wakers: Mutex::default(),
            applied,
            recomputed: AtomicU64::new(0),
        });
        let r = resolver.clone();
        tokio::spawn(async move {
            let mut revisions = node.reader.subscribe();
            loop {
                let target = *revisions.borrow_and_update();
                if let Err(e) = r.follow(&node.reader, target) {
                    tracing::warn!(error = %e, "resolver could not follow the applied state");
                }
                if revisions.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(resolver)
    }

    /// Brings the core to `target` and wakes the affected agents.
    fn follow(&self, reader: &Reader, target: u64) -> Result<(), NodeError> {
        let from = self.read().revision;
        if target <= from {
            return Ok(());
        }
        let affected = match reader.changes(from, target) {
            Err(_) => {
                // The history no longer reaches `from` (caught up by snapshot): reload.
                *self.write() = load(reader)?;
                Affected::everyone()
            }
            Ok(changes) => {
                let mut agents = BTreeSet::new();
                let mut sources = false;
                for c in &changes {
                    match c.record.kind.as_str() {
                        security::AGENT | security::REVOKED_AGENT => {
                            agents.insert(c.record.key.clone());
                        }
                        policy_store::KIND | rollout::KIND => sources = true,
                        k if k.starts_with("bulwark.policy-meta") => sources = true,
                        _ => {}
                    }
                }
                let mut affected = Affected::default();
                let new_sources = if sources { Some(Sources::read(reader)?) } else { None };
                let entries: Vec<(String, Option<AgentEntry>)> = agents
                    .into_iter()
                    .map(|id| agent_entry(reader, &id).map(|e| (id, e)))
                    .collect::<Result<_, _>>()?;
                let mut core = self.write();
                for (id, e) in entries {
                    affected.extend(core.set_agent(&id, e));
                }
                if let Some(s) = new_sources {
                    affected.extend(core.set_sources(s));
                }
                core.revision = target;
                affected
            }
        };
        let total = self.read().agents();
        self.recomputed.fetch_add(affected.count(total) as u64, Ordering::Relaxed);
        let wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        let wake = |tx: &watch::Sender<u64>| tx.send_modify(|n| *n += 1);
        if affected.all {
            wakers.by_agent.values().for_each(wake);
        } else {
            affected.ids.iter().filter_map(|id| wakers.by_agent.get(id)).for_each(wake);
        }
        drop(wakers);
        self.applied.send_replace(target);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Agent `id`'s desired state as this node resolves it now.
    pub fn resolve(&self, id: &str) -> Option<Resolved> {
        self.read().resolve(id)
    }

    /// Whether agent `id` is a canary of the active rollout.
    pub fn is_canary(&self, id: &str) -> bool {
        self.read().canary(id)
    }

    /// A receiver that changes whenever agent `id`'s desired state may have.
    pub fn watch(&self, id: &str) -> watch::Receiver<u64> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).subscribe(id)
    }

    /// Waits until the resolver reflects at least `revision`.
    pub async fn caught_up(&self, revision: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= revision).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_streams_are_swept_while_open_ones_keep_their_wake_up() {
        let mut wakers = Wakers::default();
        let mut open = Vec::new();
        for i in 0..10_000 {
            let rx = wakers.subscribe(&format!("agt-{i}"));
            if i % 4 == 0 {
                open.push((i, rx));
            }
        }
        // 2,500 open; the closed ones are gone at every sweep, so the map stays within
        // twice what is open (and never sweeps on every opening).
        assert!(wakers.by_agent.len() <= 2 * open.len() + 1024, "{}", wakers.by_agent.len());
        for (i, rx) in &mut open {
            wakers.by_agent[&format!("agt-{i}")].send_modify(|n| *n += 1);
            assert!(rx.has_changed().unwrap(), "agent {i} lost its wake-up");
        }
        // A second stream of an agent shares the agent's sender.
        let again = wakers.subscribe("agt-0");
        wakers.by_agent["agt-0"].send_modify(|n| *n += 1);
        assert!(again.has_changed().unwrap() && open[0].1.has_changed().unwrap());
    }

    /// Segment members kept one agent change at a time are what a full index of the same
    /// fleet gives: agents joining with a shared address, moving, being revoked, leaving.
    #[test]
    fn segment_members_kept_per_change_match_a_full_index() {
        let (docs, fleet) = crate::ctl::bench::synthetic_fleet(40, 10);
        let revs: Vec<(Document, u64)> = docs.into_iter().map(|d| (d, 2)).collect();
        let mut core = Core::new(Sources::plain(revs.clone(), 0), fleet);
        let entry = |id: &str| core.agents[id].clone();
        let full = |core: &Core| View::new(revs.clone(), 0, &core.agents).segments;
        let mut steps: Vec<(String, Option<AgentEntry>)> = Vec::new();
        // A new agent of agt-00001's role with agt-00001's address (counted twice).
        let mut twin = entry("agt-00001");
        twin.0.id = "agt-twin".into();
        twin.2 = 9;
        steps.push(("agt-twin".into(), Some(twin.clone())));
        // agt-00001 moves to a new address: the shared one stays, held by the twin.
        let mut moved = entry("agt-00001");
        moved.0.addresses = vec!["198.19.77.1".into(), "not an address".into()];
        moved.2 = 10;
        steps.push(("agt-00001".into(), Some(moved)));
        // agt-00002 changes role (leaves one segment, joins another), then is revoked.
        let mut other = entry("agt-00002");
        other.0.labels.insert("role".into(), "role-7".into());
        steps.push(("agt-00002".into(), Some(other.clone())));
        other.1 = Some("retired".into());
        steps.push(("agt-00002".into(), Some(other)));
        // The twin leaves: its revision and address go with it.
        steps.push(("agt-twin".into(), None));
        for (i, (id, change)) in steps.into_iter().enumerate() {
            core.set_agent(&id, change);
            assert_eq!(core.released.segments, full(&core), "after step {i} ({id})");
        }
    }

    #[test]
    fn the_same_documents_from_a_released_record_change_nothing() {
        let (docs, fleet) = crate::ctl::bench::synthetic_fleet(40, 10);
        let revs: Vec<(Document, u64)> = docs.into_iter().map(|d| (d, 2)).collect();
        let mut core = Core::new(Sources::plain(revs.clone(), 0), fleet);
        let before = core.resolve("agt-00001").unwrap();
        let json = serde_json::to_vec(&revs).unwrap();
        let back: Vec<(Document, u64)> = serde_json::from_slice(&json).unwrap();
        let affected = core.set_sources(Sources::plain(back, 0));
        assert_eq!(affected, Affected::default());
        assert_eq!(core.resolve("agt-00001").unwrap(), before);
    }
}
