//! One room's state in the memory broker: its presence, retained values,
//! kept history (bounded per room and relay-wide), wills and keyed writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::presence::Presence;
use crate::broker::{BrokerError, Limits, Retained, RoomSnapshot, Will};
use crate::idempotency::{Ledger, Once, Recall};
use crate::protocol::{Event, EventId, Payload, PeerInfo, RoomName, Status, now_ms};
use crate::topic::Topic;

pub(super) struct RoomState {
    pub(super) last_id: Option<EventId>,
    /// Present peers with their join order.
    pub(super) presence: Presence,
    pub(super) joins: u64,
    pub(super) retained: BTreeMap<Topic, Retained>,
    /// Kept events (messages and topic updates), made with the first and
    /// dropped with the last: 8 B in a quiet room, not 40.
    pub(super) history: Option<Box<Kept>>,
    /// The broker's count of history bytes across rooms, shared.
    pub(super) history_total: Arc<AtomicUsize>,
    /// The newest id dropped from history: a resume from before it has a gap.
    pub(super) dropped_through: Option<EventId>,
    /// Wills of present peers (boxed, made on first use, as `once`: most
    /// rooms never hold one, and empty ones inline cost every room 128 B).
    #[allow(
        clippy::box_collection,
        reason = "8 B inline where an empty map is 48 B"
    )]
    pub(super) wills: Option<Box<HashMap<Arc<str>, Will>>>,
    /// Keyed writes done, for the history TTL.
    pub(super) once: Option<Box<Ledger>>,
}

/// A room's kept events and their bytes (their JSON).
#[derive(Default)]
pub(super) struct Kept {
    pub(super) events: VecDeque<(u64, Arc<Event>)>,
    pub(super) bytes: usize,
}

impl RoomState {
    pub(super) fn new(history_total: Arc<AtomicUsize>) -> RoomState {
        RoomState {
            last_id: None,
            presence: Presence::default(),
            joins: 0,
            retained: BTreeMap::new(),
            history: None,
            history_total,
            // What came before this state was made (a restart, a forgotten
            // room) cannot be vouched for: a resume from before now is a gap.
            dropped_through: Some(EventId {
                ms: now_ms(),
                seq: 0,
            }),
            wills: None,
            once: None,
        }
    }

    /// What is known of a keyed write: `Some(id)` when it was done (answer
    /// with that id and do nothing), `None` when it is new (or unkeyed).
    pub(super) fn recall(&mut self, once: Option<&Once>) -> Result<Option<EventId>, BrokerError> {
        let (Some(once), Some(ledger)) = (once, self.once.as_mut()) else {
            return Ok(None);
        };
        match ledger.recall(once, now_ms()) {
            Recall::New => Ok(None),
            Recall::Done(id) => Ok(Some(id)),
            Recall::Reused => Err(BrokerError::KeyReused),
        }
    }

    /// Records a keyed write as done.
    pub(super) fn remember_once(
        &mut self,
        once: Option<&Once>,
        id: Option<EventId>,
        limits: &Limits,
    ) {
        if let (Some(once), Some(id)) = (once, id) {
            let expires = now_ms().saturating_add(limits.history_ttl.as_millis() as u64);
            self.once
                .get_or_insert_with(Box::default)
                .remember(once, id, expires);
        }
    }

    pub(super) fn next_id(&mut self) -> EventId {
        let id = self.last_id.unwrap_or_default().next_after(now_ms());
        self.last_id = Some(id);
        id
    }

    pub(super) fn snapshot(&self, except: Option<&str>) -> RoomSnapshot {
        RoomSnapshot {
            peers: self.peers(except).into_iter().cloned().collect(),
            last_id: self.last_id,
        }
    }

    /// The present peers, oldest first.
    pub(super) fn peers(&self, except: Option<&str>) -> Vec<&PeerInfo> {
        let mut peers: Vec<&(u64, PeerInfo)> = self
            .presence
            .iter()
            .filter(|(_, p)| Some(&*p.id) != except)
            .collect();
        peers.sort_by_key(|(order, _)| *order);
        peers.into_iter().map(|(_, p)| p).collect()
    }

    /// The present peers as one JSON array, for the `welcome` of every peer
    /// that joins within one presence window (`None` if it cannot be encoded:
    /// each joiner then gets its own list).
    pub(super) fn peers_json(&self) -> Option<Payload> {
        let json = serde_json::to_string(&self.peers(None)).ok()?;
        serde_json::value::RawValue::from_string(json)
            .ok()
            .map(Payload::from)
    }

    /// Keeps an event in history, dropping the oldest beyond the room's count
    /// and byte limits, then, while every room's history together is over the
    /// relay-wide cap, this room's oldest (the new event last of all): the
    /// room being written pays for the memory it asks for.
    pub(super) fn remember(&mut self, ts: u64, event: Arc<Event>, limits: &Limits) {
        if limits.history_size == 0 {
            self.dropped_through = event.id();
            return;
        }
        let size = event.json().len();
        let history = self.history.get_or_insert_with(Box::default);
        history.events.push_back((ts, event));
        history.bytes += size;
        let total = self.history_total.fetch_add(size, Ordering::Relaxed) + size;
        while self
            .history
            .as_ref()
            .is_some_and(|h| h.events.len() > limits.history_size || h.bytes > limits.history_bytes)
        {
            self.drop_oldest();
        }
        if total > limits.history_bytes_total {
            while self.history.is_some()
                && self.history_total.load(Ordering::Relaxed) > limits.history_bytes_total
            {
                self.drop_oldest();
            }
        }
    }

    pub(super) fn drop_oldest(&mut self) {
        let Some(history) = self.history.as_mut() else {
            return;
        };
        if let Some((_, old)) = history.events.pop_front() {
            let size = old.json().len();
            history.bytes -= size;
            self.history_total.fetch_sub(size, Ordering::Relaxed);
            self.dropped_through = old.id().or(self.dropped_through);
        }
        if history.events.is_empty() {
            self.history = None;
        }
    }

    /// The kept events, oldest first, with their time.
    pub(super) fn kept(&self) -> impl Iterator<Item = &(u64, Arc<Event>)> {
        self.history.iter().flat_map(|h| h.events.iter())
    }

    /// Nothing left worth keeping, and the clock has moved past the last id, so a
    /// fresh state for the same room cannot hand out an id already used.
    pub(super) fn is_collectable(&self) -> bool {
        self.presence.is_empty()
            && self.retained.is_empty()
            && self.history.is_none()
            && self.wills.as_ref().is_none_or(|w| w.is_empty())
            && self.once.as_ref().is_none_or(|o| o.is_empty())
            && self.last_id.is_none_or(|id| id.ms < now_ms())
    }

    /// A live `status` event for `topic`, kept in history and delivered.
    pub(super) fn status_event(
        &mut self,
        room: &RoomName,
        topic: &Topic,
        data: Payload,
        from: Arc<str>,
        limits: &Limits,
    ) -> (u64, Arc<Event>) {
        let ts = now_ms();
        let event = Event::status(&Status {
            room: room.clone(),
            id: Some(self.next_id()),
            topic: topic.as_arc().clone(),
            data,
            ts,
            from,
            retained: false,
        });
        self.remember(ts, event.clone(), limits);
        (ts, event)
    }
}
