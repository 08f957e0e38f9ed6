//! EventService: the events agents reported (drift repaired, rollbacks, apply failures,
//! later users and logins), filtered and paged, or followed as they are committed.

use std::collections::HashMap;
use std::sync::Arc;

use bulwark_proto::v1 as pb;
use bulwark_proto::v1::event_service_server::EventService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::fleet::event_to_pb;
use crate::fleet::{self, EventFilter};
use crate::node::{Consistency, Node};
use crate::security;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

pub struct EventApi {
    node: Arc<Node>,
}

impl EventApi {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The filter, with a hostname turned into the agent ids that carry it.
struct Query {
    filter: EventFilter,
    /// Set when the request named a hostname: only these agents.
    agents: Option<Vec<String>>,
    hostnames: HashMap<String, String>,
    limit: usize,
}

impl Query {
    fn new(node: &Node, r: &pb::ListEventsRequest) -> Result<Self, Status> {
        let hostnames: HashMap<String, String> = security::agents(&node.reader)?
            .into_iter()
            .map(|(a, _, _)| (a.id, a.hostname))
            .collect();
        let agents = (!r.hostname.is_empty()).then(|| {
            hostnames.iter().filter(|(_, h)| **h == r.hostname).map(|(id, _)| id.clone()).collect()
        });
        let limit = match r.limit as usize {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let filter = EventFilter {
            kinds: r.kinds.clone(),
            agent_id: r.agent_id.clone(),
            since_ms: r.since_ms,
        };
        Ok(Self { filter, agents, hostnames, limit })
    }

    /// The next page after `cursor`, and the cursor past it.
    fn page(&self, node: &Node, cursor: &str) -> Result<(Vec<pb::StoredEvent>, String), Status> {
        let (events, next) = fleet::list_events(&node.reader, &self.filter, cursor, self.limit)?;
        let events = events
            .into_iter()
            .filter(|e| self.agents.as_ref().is_none_or(|ids| ids.contains(&e.agent_id)))
            .map(|e| pb::StoredEvent {
                hostname: self.hostnames.get(&e.agent_id).cloned().unwrap_or_default(),
                agent_id: e.agent_id,
                event: Some(event_to_pb(e.event)),
                cursor: e.cursor,
            })
            .collect();
        Ok((events, next))
    }
}

type FollowStream = ReceiverStream<Result<pb::StoredEvent, Status>>;

#[tonic::async_trait]
impl EventService for EventApi {
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsReply>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(Consistency::Linearizable).await?;
        let query = Query::new(&self.node, &r)?;
        let (events, next) = query.page(&self.node, &r.after)?;
        let next = if events.len() == query.limit { next } else { String::new() };
        Ok(Response::new(pb::ListEventsReply { events, next }))
    }

    type FollowEventsStream = FollowStream;

    async fn follow_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<FollowStream>, Status> {
        let r = req.into_inner();
        self.node.read_barrier(Consistency::Linearizable).await?;
        let mut query = Query::new(&self.node, &r)?;
        query.limit = MAX_LIMIT;
        let (tx, rx) = mpsc::channel(256);
        let node = self.node.clone();
        tokio::spawn(async move {
            let mut notes = node.reader.subscribe_notes();
            let mut cursor = r.after;
            loop {
                notes.borrow_and_update();
                match query.page(&node, &cursor) {
                    Ok((events, next)) => {
                        let more = next != cursor;
                        for e in events {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        cursor = next;
                        if more {
                            // Read on until nothing new is stored, then wait.
                            continue;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                tokio::select! {
                    changed = notes.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
