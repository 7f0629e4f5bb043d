//! The in-memory broker: one process, no dependencies. Each room's state sits
//! behind its own lock; an id is assigned, the event kept in history and handed
//! to the local fan-out under that lock, so every subscriber sees one order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{
    Broker, BrokerError, DeferredWill, Draft, History, Joined, Limits, RetainDraft, Retained,
    RoomPage, RoomSnapshot, RoomSummary, Will,
};
use crate::delivery::Fanout;
use crate::idempotency::Once;
use crate::protocol::{
    Control, Event, EventId, LeaveReason, Payload, PeerInfo, PeerList, RoomName, now_ms,
};
use crate::topic::{Topic, TopicFilter};

mod presence;
mod retained;
mod room;
mod wills;

use self::room::RoomState;

/// Rooms, presence, retained values, history and ids held in this process.
pub struct MemoryBroker {
    rooms: Mutex<HashMap<RoomName, Arc<Mutex<RoomState>>>>,
    fanout: Arc<Fanout>,
    limits: Limits,
    /// Bytes of history held by every room together (the relay-wide cap).
    history_total: Arc<AtomicUsize>,
    /// Delayed wills waiting out their delay, with when each is due (ms).
    deferred: Mutex<Vec<(u64, DeferredWill)>>,
}

impl MemoryBroker {
    /// A broker delivering to `fanout`, keeping what `limits` allow.
    pub fn new(fanout: Arc<Fanout>, limits: Limits) -> MemoryBroker {
        MemoryBroker {
            rooms: Mutex::new(HashMap::new()),
            fanout,
            limits,
            history_total: Arc::new(AtomicUsize::new(0)),
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of history held across every room (bounded by
    /// `EDGEWIRE_HISTORY_BYTES_TOTAL`).
    pub fn history_bytes(&self) -> usize {
        self.history_total.load(Ordering::Relaxed)
    }

    fn room(&self, room: &RoomName) -> Arc<Mutex<RoomState>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(room.clone())
            .or_insert_with(|| Arc::new(Mutex::new(RoomState::new(self.history_total.clone()))))
            .clone()
    }

    fn existing(&self, room: &RoomName) -> Option<Arc<Mutex<RoomState>>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(room).cloned()
    }

    /// Forgets a room that holds nothing any more.
    fn collect(&self, room: &RoomName) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = rooms.get(room)
            && lock(state).is_collectable()
        {
            rooms.remove(room);
        }
    }

    pub(super) fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError> {
        let state = self.room(room);
        let event = {
            let mut state = lock(&state);
            let done = state.recall(draft.once.as_ref())?;
            if done.is_none()
                && let Some(to) = &draft.publish.to
                && !state.presence.contains(to)
            {
                return Err(BrokerError::NoSuchPeer {
                    room: room.to_string(),
                    peer: to.to_string(),
                });
            }
            let ts = now_ms();
            let id = done.unwrap_or_else(|| state.next_id());
            let message = draft.publish.into_message(room.clone(), id, ts, draft.from);
            let event = Event::message(&message);
            if done.is_some() {
                // A retry of a publish that was done: its id, and nothing more.
                return Ok(event);
            }
            if message.to.is_none() {
                state.remember(ts, event.clone(), &self.limits);
            }
            state.remember_once(draft.once.as_ref(), event.id(), &self.limits);
            self.fanout.deliver(room, event.clone());
            event
        };
        self.collect(room);
        Ok(event)
    }

    pub(super) fn history(&self, room: &RoomName, since: Option<EventId>, limit: usize) -> History {
        let Some(state) = self.existing(room) else {
            // Nothing is known of this room: a resume point cannot be vouched for.
            return History {
                events: Vec::new(),
                complete: since.is_none(),
            };
        };
        let state = lock(&state);
        let horizon = now_ms().saturating_sub(self.limits.history_ttl.as_millis() as u64);
        let complete = match since {
            None => true,
            Some(since) => {
                let dropped = state.dropped_through.is_some_and(|d| since < d);
                let aged = state
                    .kept()
                    .take_while(|(ts, _)| *ts <= horizon)
                    .any(|(_, e)| e.id().is_some_and(|id| id > since));
                !dropped && !aged
            }
        };
        let live = state.kept().filter(|(ts, _)| *ts > horizon).map(|(_, e)| e);
        let events: Vec<Arc<Event>> = match since {
            // Paging forward: the oldest `limit` after the resume point.
            Some(since) => live
                .filter(|e| e.id().is_some_and(|id| id > since))
                .take(limit)
                .cloned()
                .collect(),
            // No resume point: the newest `limit`, still oldest first.
            None => {
                let all: Vec<&Arc<Event>> = live.collect();
                let skip = all.len().saturating_sub(limit);
                all.into_iter().skip(skip).cloned().collect()
            }
        };
        History { events, complete }
    }

    pub(super) fn control(&self, room: &RoomName, control: Control) -> Result<(), BrokerError> {
        let peer = control.to();
        let present = self
            .existing(room)
            .is_some_and(|state| lock(&state).presence.contains(peer));
        if !present {
            return Err(BrokerError::NoSuchPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            });
        }
        self.fanout.control(control);
        Ok(())
    }

    pub(super) fn join(&self, room: &RoomName, peer: PeerInfo) -> Joined {
        let state = self.room(room);
        let mut state = lock(&state);
        state.joins += 1;
        let order = state.joins;
        let event = Event::join(room, &peer);
        // Announced before the joiner is in the map, so the others it sees
        // (its own list, or the window's shared one) never include it.
        let shared = self.fanout.deliver_join(room, event, || state.peers_json());
        let peers = match shared {
            Some(json) => PeerList::Shared(json),
            None => PeerList::Own(state.snapshot(None).peers),
        };
        state.presence.insert(order, peer);
        Joined {
            peers,
            last_id: state.last_id,
        }
    }

    pub(super) fn leave(&self, room: &RoomName, peer: &Arc<str>, reason: LeaveReason) {
        let Some(state) = self.existing(room) else {
            return;
        };
        {
            let mut state = lock(&state);
            if state.presence.remove(peer).is_some() {
                self.fanout.deliver(room, Event::leave(room, peer, reason));
            }
        }
        self.collect(room);
    }

    pub(super) fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        value: Payload,
    ) -> Result<(), BrokerError> {
        let missing = || BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: peer.to_string(),
        };
        let state = self.existing(room).ok_or_else(missing)?;
        let mut state = lock(&state);
        let (_, entry) = state.presence.get_mut(peer).ok_or_else(missing)?;
        entry.state = value.clone();
        self.fanout.deliver(room, Event::state(room, peer, &value));
        Ok(())
    }

    pub(super) fn snapshot(&self, room: &RoomName) -> RoomSnapshot {
        match self.existing(room) {
            Some(state) => lock(&state).snapshot(None),
            None => RoomSnapshot::default(),
        }
    }

    pub(super) fn peer(&self, room: &RoomName, peer: &str) -> Option<PeerInfo> {
        let state = self.existing(room)?;
        let state = lock(&state);
        state.presence.get(peer).map(|(_, p)| p.clone())
    }

    fn all_rooms(&self) -> Vec<(RoomName, Arc<Mutex<RoomState>>)> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub(super) fn rooms(&self, cursor: Option<&str>, limit: usize) -> RoomPage {
        let now = now_ms();
        let mut out: Vec<RoomSummary> = self
            .all_rooms()
            .into_iter()
            .filter(|(room, _)| cursor.is_none_or(|c| room.as_str() > c))
            .filter_map(|(room, state)| {
                let state = lock(&state);
                let topics = state
                    .retained
                    .values()
                    .filter(|r| r.expires_at.is_none_or(|t| t > now))
                    .count();
                (!state.presence.is_empty() || topics > 0).then(|| RoomSummary {
                    room,
                    peers: state.presence.len(),
                    topics,
                })
            })
            .collect();
        out.sort_by(|a, b| a.room.cmp(&b.room));
        // The cursor is the last room given: the next page starts after it.
        let next = (out.len() > limit).then(|| out[limit - 1].room.to_string());
        out.truncate(limit);
        RoomPage { rooms: out, next }
    }
}

fn lock(state: &Mutex<RoomState>) -> std::sync::MutexGuard<'_, RoomState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The broker seam, by the inherent methods above.
#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError> {
        MemoryBroker::publish(self, room, draft)
    }

    async fn control(&self, room: &RoomName, control: Control) -> Result<(), BrokerError> {
        MemoryBroker::control(self, room, control)
    }

    async fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        MemoryBroker::set_retained(self, room, draft)
    }

    async fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        MemoryBroker::clear_retained(self, room, topic, from, once)
    }

    async fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, BrokerError> {
        Ok(MemoryBroker::retained(self, room, filter))
    }

    async fn history(
        &self,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        Ok(MemoryBroker::history(self, room, since, limit))
    }

    async fn join(&self, room: &RoomName, peer: PeerInfo) -> Result<Joined, BrokerError> {
        Ok(MemoryBroker::join(self, room, peer))
    }

    async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError> {
        MemoryBroker::leave(self, room, peer, reason);
        Ok(())
    }

    async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError> {
        MemoryBroker::set_state(self, room, peer, state)
    }

    async fn snapshot(&self, room: &RoomName) -> Result<RoomSnapshot, BrokerError> {
        Ok(MemoryBroker::snapshot(self, room))
    }

    async fn peer(&self, room: &RoomName, peer: &str) -> Result<Option<PeerInfo>, BrokerError> {
        Ok(MemoryBroker::peer(self, room, peer))
    }

    async fn rooms(&self, cursor: Option<&str>, limit: usize) -> Result<RoomPage, BrokerError> {
        Ok(MemoryBroker::rooms(self, cursor, limit))
    }

    async fn watch(&self, _room: &RoomName) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unwatch(&self, _room: &RoomName) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn put_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        MemoryBroker::put_will(self, room, peer, will);
        Ok(())
    }

    async fn take_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
    ) -> Result<Option<Will>, BrokerError> {
        Ok(MemoryBroker::take_will(self, room, peer))
    }

    async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        MemoryBroker::defer_will(self, room, peer, user, will);
        Ok(())
    }

    async fn settle_will(&self, _will: &DeferredWill) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn sweep(&self, now_ms: u64) -> Result<Vec<DeferredWill>, BrokerError> {
        Ok(MemoryBroker::sweep(self, now_ms))
    }

    fn is_ready(&self) -> bool {
        true
    }
}
