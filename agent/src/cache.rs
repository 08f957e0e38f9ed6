//! The agent's local store (sled in the state dir): the last desired state received
//! (last-known-good, persisted before it is applied), the last one the firewall confirmed
//! (the commit-confirmed rollback target), and the event spool that holds events until a
//! controller has committed them.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use bulwark_proto::v1 as pb;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("agent cache {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("agent cache: {0}")]
    Storage(#[from] sled::Error),
    #[error("agent cache holds a corrupt {what}: {source}")]
    Corrupt { what: &'static str, source: prost::DecodeError },
}

const DESIRED: &[u8] = b"desired";
const CONFIRMED_FIREWALL: &[u8] = b"confirmed-firewall";

#[derive(Clone)]
pub struct Cache {
    db: sled::Db,
    state: sled::Tree,
    spool: sled::Tree,
    /// Monitors' progress (baselines, log positions, journal cursors), changed together
    /// with the events it produced.
    marks: sled::Tree,
    /// Most events the spool holds; see [`Cache::spool`] for what happens beyond.
    spool_limit: usize,
    /// Held while ids are given and the events spooled, so ids ascend in spool order: the
    /// controllers store each agent's events once by remembering the highest id stored,
    /// so an event must never get an id below one already sent. Holds the millisecond
    /// part of the newest id.
    ids: Arc<Mutex<i64>>,
}

/// The default bound of the event spool: days of a busy host's logins with no controller.
pub const SPOOL_LIMIT: usize = 100_000;
const DROPPED: &[u8] = b"spool-dropped";
/// The millisecond part of the newest event id (big-endian i64), kept across restarts.
const LAST_ID_MS: &[u8] = b"last-event-id-ms";

impl Cache {
    /// Opens (or creates) the cache under `dir`. Fails if another agent holds it.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let path = dir.join("cache");
        let db = sled::Config::new()
            .path(&path)
            // The agent keeps a few small values; a large page cache only costs memory.
            .cache_capacity(1 << 20)
            .open()
            .map_err(|source| CacheError::Open { path: path.display().to_string(), source })?;
        let state = db.open_tree("state")?;
        let last_ms = state
            .get(LAST_ID_MS)?
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, i64::from_be_bytes);
        Ok(Self {
            state,
            spool: db.open_tree("spool")?,
            marks: db.open_tree("marks")?,
            spool_limit: SPOOL_LIMIT,
            ids: Arc::new(Mutex::new(last_ms)),
            db,
        })
    }

    fn get<M: Message + Default>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<M>, CacheError> {
        match self.state.get(key)? {
            Some(bytes) => {
                Ok(Some(M::decode(&*bytes).map_err(|source| CacheError::Corrupt { what, source })?))
            }
            None => Ok(None),
        }
    }

    /// The newest desired state received from a controller.
    pub fn desired(&self) -> Result<Option<pb::DesiredState>, CacheError> {
        self.get(DESIRED, "desired state")
    }

    /// Stores `state` durably (flushed) before the caller applies it.
    pub async fn set_desired(&self, state: &pb::DesiredState) -> Result<(), CacheError> {
        self.state.insert(DESIRED, state.encode_to_vec())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// The newest desired state whose firewall was confirmed (a controller was reached after
    /// it was applied): what a commit-confirmed rollback restores.
    pub fn confirmed_firewall(&self) -> Result<Option<pb::DesiredState>, CacheError> {
        self.get(CONFIRMED_FIREWALL, "confirmed firewall state")
    }

    pub async fn set_confirmed_firewall(&self, state: &pb::DesiredState) -> Result<(), CacheError> {
        self.state.insert(CONFIRMED_FIREWALL, state.encode_to_vec())?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// A cache whose spool holds at most `limit` events (tests).
    pub fn with_spool_limit(mut self, limit: usize) -> Self {
        self.spool_limit = limit.max(2);
        self
    }

    /// Spools `event` durably under a new id (returned; the event's own is ignored).
    ///
    /// Overflow rule: when the spool is full (no controller has acknowledged for a long
    /// time), the *oldest* events make room, and an `events-dropped` event saying how many
    /// went (and the running total, also kept across restarts) is spooled in their place:
    /// never a silent loss.
    pub async fn spool(&self, event: pb::AgentEvent) -> Result<String, CacheError> {
        let mut ids = self.spool_with_ids(std::slice::from_ref(&event), None).await?;
        Ok(ids.remove(0))
    }

    /// Events dropped by the overflow rule since the agent was enrolled.
    pub fn dropped(&self) -> u64 {
        self.state
            .get(DROPPED)
            .ok()
            .flatten()
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// Drops the oldest events so `incoming` more fit, and records that it did.
    fn make_room(&self, incoming: usize, last_ms: &mut i64) -> Result<(), CacheError> {
        let len = self.spool.len();
        if len + incoming <= self.spool_limit {
            return Ok(());
        }
        // One more slot for the events-dropped notice itself.
        let excess = len + incoming + 1 - self.spool_limit;
        let mut batch = sled::Batch::default();
        let mut dropped = 0u64;
        for key in self.spool.iter().keys().take(excess) {
            batch.remove(key?);
            dropped += 1;
        }
        self.spool.apply_batch(batch)?;
        let total = self.dropped() + dropped;
        self.state.insert(DROPPED, &total.to_be_bytes())?;
        let notice = pb::AgentEvent {
            id: self.next_id(last_ms)?,
            kind: "events-dropped".into(),
            enforcer: "spool".into(),
            at_ms: crate::enforce::reconcile::now_ms(),
            summary: format!(
                "{dropped} oldest events dropped: the spool was full ({} events) while no controller acknowledged; {total} dropped in all",
                self.spool_limit
            ),
            fields: [
                ("dropped".to_owned(), dropped.to_string()),
                ("total".to_owned(), total.to_string()),
            ]
            .into(),
            ..Default::default()
        };
        tracing::error!(
            dropped,
            total,
            limit = self.spool_limit,
            "event spool full: oldest events dropped"
        );
        self.spool.insert(notice.id.as_bytes(), notice.encode_to_vec())?;
        Ok(())
    }

    /// The oldest `max` spooled events.
    pub fn spooled(&self, max: usize) -> Result<Vec<pb::AgentEvent>, CacheError> {
        self.spool
            .iter()
            .values()
            .take(max)
            .map(|v| {
                pb::AgentEvent::decode(&*v?)
                    .map_err(|source| CacheError::Corrupt { what: "spooled event", source })
            })
            .collect()
    }

    /// Drops events a controller acknowledged.
    pub async fn unspool(&self, ids: &[String]) -> Result<(), CacheError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.as_bytes());
        }
        self.spool.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// A monitor's stored progress under `key` (a baseline, a log position, a cursor).
    pub fn mark(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.marks.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Spools `events` under new ids (their own are ignored) and stores `mark` in one
    /// transaction, flushed: after a crash either both are there or neither, so a monitor
    /// resuming from its mark neither misses nor repeats an event.
    pub async fn spool_marked(
        &self,
        events: &[pb::AgentEvent],
        mark: Option<(&str, &[u8])>,
    ) -> Result<(), CacheError> {
        self.spool_with_ids(events, mark).await.map(drop)
    }

    /// Spools `events` under new ids, with `mark`, flushed; returns the ids. Ids are given
    /// and the events stored under [`Cache::ids`], so ids ascend in spool order.
    async fn spool_with_ids(
        &self,
        events: &[pb::AgentEvent],
        mark: Option<(&str, &[u8])>,
    ) -> Result<Vec<String>, CacheError> {
        let ids = {
            let mut last_ms = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
            self.make_room(events.len(), &mut last_ms)?;
            let mut encoded = Vec::with_capacity(events.len());
            for event in events {
                let id = self.next_id(&mut last_ms)?;
                encoded.push((id.clone(), pb::AgentEvent { id, ..event.clone() }.encode_to_vec()));
            }
            self.commit_marked(&encoded, mark)?;
            encoded.into_iter().map(|(id, _)| id).collect()
        };
        self.db.flush_async().await?;
        Ok(ids)
    }

    fn commit_marked(
        &self,
        encoded: &[(String, Vec<u8>)],
        mark: Option<(&str, &[u8])>,
    ) -> Result<(), CacheError> {
        use sled::Transactional;
        (&self.spool, &self.marks)
            .transaction(|(spool, marks)| {
                for (id, bytes) in encoded {
                    spool.insert(id.as_bytes(), bytes.as_slice())?;
                }
                if let Some((key, value)) = mark {
                    marks.insert(key.as_bytes(), value)?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => CacheError::Storage(e),
                // The closure never aborts.
                sled::transaction::TransactionError::Abort(()) => {
                    CacheError::Storage(sled::Error::Unsupported("aborted".into()))
                }
            })
    }

    pub fn spool_len(&self) -> usize {
        self.spool.len()
    }

    /// A new event id, above every earlier one of this agent (across restarts, and when
    /// the clock steps back): the clock's milliseconds, never below the last id's, and a
    /// sequence number. Called with [`Cache::ids`] held.
    fn next_id(&self, last_ms: &mut i64) -> Result<String, CacheError> {
        let ms = crate::enforce::reconcile::now_ms().max(*last_ms);
        if ms != *last_ms {
            self.state.insert(LAST_ID_MS, &ms.to_be_bytes())?;
            *last_ms = ms;
        }
        let seq = self.db.generate_id()?;
        Ok(format!("{ms:013}-{seq:08}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the cache a dropped one used: sled releases its file lock when its flusher
    /// thread lets go of the dropped db.
    async fn reopen(dir: &Path) -> Cache {
        let mut reopened = Cache::open(dir);
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            reopened = Cache::open(dir);
        }
        reopened.unwrap()
    }

    #[tokio::test]
    async fn desired_state_and_spool_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = pb::DesiredState { revision: 7, agent_id: "a-1".into(), ..Default::default() };
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert!(cache.desired().unwrap().is_none());
            cache.set_desired(&state).await.unwrap();
            for _ in 0..3 {
                cache.spool(pb::AgentEvent::default()).await.unwrap();
            }
        }
        let cache = reopen(dir.path()).await;
        assert_eq!(cache.desired().unwrap(), Some(state));
        let events = cache.spooled(10).unwrap();
        assert_eq!(events.len(), 3);
        assert!(events.windows(2).all(|w| w[0].id < w[1].id), "time-ordered ids");
        cache.unspool(&[events[0].id.clone()]).await.unwrap();
        assert_eq!(cache.spool_len(), 2);
        // A full spool drops its oldest events and says so, never silently.
        let small = cache.clone().with_spool_limit(4);
        let mut newest = String::new();
        for _ in 0..6 {
            let event = pb::AgentEvent { kind: "login".into(), ..Default::default() };
            newest = small.spool(event).await.unwrap();
        }
        let kept = small.spooled(10).unwrap();
        assert!(kept.len() <= 4, "{} events kept", kept.len());
        let notices: Vec<_> = kept.iter().filter(|e| e.kind == "events-dropped").collect();
        assert!(!notices.is_empty(), "no events-dropped notice among {kept:?}");
        assert!(small.dropped() >= 3, "dropped {}", small.dropped());
        assert!(kept.iter().any(|e| e.id == newest), "the newest event was dropped");
        // A second agent on the same state dir is refused, not corrupting the first.
        assert!(Cache::open(dir.path()).is_err());
    }

    /// Ids never go below an earlier one, even after the clock stepped back across a
    /// restart: controllers keep each agent's events by the highest id stored.
    #[tokio::test]
    async fn event_ids_ascend_when_the_clock_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let ahead = crate::enforce::reconcile::now_ms() + 3_600_000;
        {
            let cache = Cache::open(dir.path()).unwrap();
            // As if the last id was given an hour ago by a clock that was an hour fast.
            cache.state.insert(LAST_ID_MS, &ahead.to_be_bytes()).unwrap();
            cache.db.flush_async().await.unwrap();
        }
        let cache = reopen(dir.path()).await;
        let first = cache.spool(pb::AgentEvent::default()).await.unwrap();
        cache
            .spool_marked(&[pb::AgentEvent::default(), pb::AgentEvent::default()], None)
            .await
            .unwrap();
        let ids: Vec<String> = cache.spooled(10).unwrap().into_iter().map(|e| e.id).collect();
        assert!(first.starts_with(&format!("{ahead:013}-")), "{first}");
        assert_eq!(ids[0], first);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}
