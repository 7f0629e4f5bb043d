//! The in-memory broker: one process, no dependencies. Each room's state sits
//! behind its own lock; an id is assigned, the event kept in history and handed
//! to the local fan-out under that lock, so every subscriber sees one order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use self::presence::Presence;
use super::{
    Broker, BrokerError, DeferredWill, Draft, History, Joined, Limits, RetainDraft, Retained,
    RoomPage, RoomSnapshot, RoomSummary, Will,
};
use crate::delivery::Fanout;
use crate::idempotency::{Ledger, Once, Recall};
use crate::protocol::{
    Control, Event, EventId, LeaveReason, Payload, PeerInfo, PeerList, RoomName, Status, now_ms,
    null_payload,
};
use crate::topic::{Topic, TopicFilter};

mod presence;

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

struct RoomState {
    last_id: Option<EventId>,
    /// Present peers with their join order.
    presence: Presence,
    joins: u64,
    retained: BTreeMap<Topic, Retained>,
    /// Kept events (messages and topic updates), made with the first and
    /// dropped with the last: 8 B in a quiet room, not 40.
    history: Option<Box<Kept>>,
    /// The broker's count of history bytes across rooms, shared.
    history_total: Arc<AtomicUsize>,
    /// The newest id dropped from history: a resume from before it has a gap.
    dropped_through: Option<EventId>,
    /// Wills of present peers (boxed, made on first use, as `once`: most
    /// rooms never hold one, and empty ones inline cost every room 128 B).
    #[allow(
        clippy::box_collection,
        reason = "8 B inline where an empty map is 48 B"
    )]
    wills: Option<Box<HashMap<Arc<str>, Will>>>,
    /// Keyed writes done, for the history TTL.
    once: Option<Box<Ledger>>,
}

/// A room's kept events and their bytes (their JSON).
#[derive(Default)]
struct Kept {
    events: VecDeque<(u64, Arc<Event>)>,
    bytes: usize,
}

impl RoomState {
    fn new(history_total: Arc<AtomicUsize>) -> RoomState {
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
    fn recall(&mut self, once: Option<&Once>) -> Result<Option<EventId>, BrokerError> {
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
    fn remember_once(&mut self, once: Option<&Once>, id: Option<EventId>, limits: &Limits) {
        if let (Some(once), Some(id)) = (once, id) {
            let expires = now_ms().saturating_add(limits.history_ttl.as_millis() as u64);
            self.once
                .get_or_insert_with(Box::default)
                .remember(once, id, expires);
        }
    }

    fn next_id(&mut self) -> EventId {
        let id = self.last_id.unwrap_or_default().next_after(now_ms());
        self.last_id = Some(id);
        id
    }

    fn snapshot(&self, except: Option<&str>) -> RoomSnapshot {
        RoomSnapshot {
            peers: self.peers(except).into_iter().cloned().collect(),
            last_id: self.last_id,
        }
    }

    /// The present peers, oldest first.
    fn peers(&self, except: Option<&str>) -> Vec<&PeerInfo> {
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
    fn peers_json(&self) -> Option<Payload> {
        let json = serde_json::to_string(&self.peers(None)).ok()?;
        serde_json::value::RawValue::from_string(json)
            .ok()
            .map(Payload::from)
    }

    /// Keeps an event in history, dropping the oldest beyond the room's count
    /// and byte limits, then, while every room's history together is over the
    /// relay-wide cap, this room's oldest (the new event last of all): the
    /// room being written pays for the memory it asks for.
    fn remember(&mut self, ts: u64, event: Arc<Event>, limits: &Limits) {
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

    fn drop_oldest(&mut self) {
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
    fn kept(&self) -> impl Iterator<Item = &(u64, Arc<Event>)> {
        self.history.iter().flat_map(|h| h.events.iter())
    }

    /// Nothing left worth keeping, and the clock has moved past the last id, so a
    /// fresh state for the same room cannot hand out an id already used.
    fn is_collectable(&self) -> bool {
        self.presence.is_empty()
            && self.retained.is_empty()
            && self.history.is_none()
            && self.wills.as_ref().is_none_or(|w| w.is_empty())
            && self.once.as_ref().is_none_or(|o| o.is_empty())
            && self.last_id.is_none_or(|id| id.ms < now_ms())
    }

    /// A live `status` event for `topic`, kept in history and delivered.
    fn status_event(
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

    pub(super) fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        let state = self.room(room);
        let mut state = lock(&state);
        if let Some(id) = state.recall(draft.once.as_ref())? {
            return Ok(Self::status_replay(
                room,
                id,
                &draft.topic,
                draft.data,
                draft.from,
            ));
        }
        if !state.retained.contains_key(&draft.topic)
            && state.retained.len() >= self.limits.max_topics
        {
            return Err(BrokerError::TooManyTopics {
                room: room.to_string(),
                limit: self.limits.max_topics,
            });
        }
        let (ts, event) = state.status_event(
            room,
            &draft.topic,
            draft.data.clone(),
            draft.from.clone(),
            &self.limits,
        );
        let replay = Event::status(&Status {
            room: room.clone(),
            id: None,
            topic: draft.topic.as_arc().clone(),
            data: draft.data.clone(),
            ts,
            from: draft.from.clone(),
            retained: true,
        });
        let retained = Retained {
            topic: draft.topic.clone(),
            data: draft.data,
            ts,
            from: draft.from,
            expires_at: draft
                .ttl
                .map(|ttl| ts.saturating_add(ttl.as_millis() as u64)),
            replay,
        };
        state.retained.insert(draft.topic, retained);
        state.remember_once(draft.once.as_ref(), event.id(), &self.limits);
        self.fanout.deliver(room, event.clone());
        Ok(event)
    }

    /// The answer to a retried keyed topic write: its `status` event with the
    /// first attempt's id, not stored and not delivered again.
    fn status_replay(
        room: &RoomName,
        id: EventId,
        topic: &Topic,
        data: Payload,
        from: Arc<str>,
    ) -> Arc<Event> {
        Event::status(&Status {
            room: room.clone(),
            id: Some(id),
            topic: topic.as_arc().clone(),
            data,
            ts: now_ms(),
            from,
            retained: false,
        })
    }

    pub(super) fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        let Some(state) = self.existing(room) else {
            return Ok(None);
        };
        let event = {
            let mut state = lock(&state);
            if let Some(id) = state.recall(once)? {
                return Ok(Some(Self::status_replay(
                    room,
                    id,
                    topic,
                    null_payload(),
                    from,
                )));
            }
            let Some(held) = state.retained.remove(topic) else {
                return Ok(None);
            };
            if held.expires_at.is_some_and(|t| t <= now_ms()) {
                // It had already lapsed; the sweep announces that.
                state.retained.insert(topic.clone(), held);
                return Ok(None);
            }
            let (_, event) = state.status_event(room, topic, null_payload(), from, &self.limits);
            state.remember_once(once, event.id(), &self.limits);
            self.fanout.deliver(room, event.clone());
            event
        };
        self.collect(room);
        Ok(Some(event))
    }

    pub(super) fn retained(&self, room: &RoomName, filter: Option<&TopicFilter>) -> Vec<Retained> {
        let Some(state) = self.existing(room) else {
            return Vec::new();
        };
        let state = lock(&state);
        let now = now_ms();
        state
            .retained
            .values()
            .filter(|r| r.expires_at.is_none_or(|t| t > now))
            .filter(|r| filter.is_none_or(|f| f.matches(r.topic.as_str())))
            .cloned()
            .collect()
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

    pub(super) fn put_will(&self, room: &RoomName, peer: &Arc<str>, will: Will) {
        let state = self.room(room);
        lock(&state)
            .wills
            .get_or_insert_with(Box::default)
            .insert(peer.clone(), will);
    }

    pub(super) fn take_will(&self, room: &RoomName, peer: &Arc<str>) -> Option<Will> {
        let state = self.existing(room)?;
        let mut state = lock(&state);
        let wills = state.wills.as_mut()?;
        let will = wills.remove(peer);
        if wills.is_empty() {
            state.wills = None;
        }
        will
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

    pub(super) fn defer_will(&self, room: &RoomName, peer: &Arc<str>, user: &Arc<str>, will: Will) {
        let due = now_ms().saturating_add(will.after.map_or(0, |d| d.as_millis() as u64));
        let deferred = DeferredWill {
            room: room.clone(),
            peer: peer.clone(),
            user: user.clone(),
            will,
            id: format!("{due}:{room}:{peer}"),
            handle: String::new(),
        };
        let mut list = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        list.push((due, deferred));
    }

    /// Takes the wills that are due: in one process there is no one to
    /// share them with, so claiming is taking.
    fn due_wills(&self) -> Vec<DeferredWill> {
        let now = now_ms();
        let mut list = self.deferred.lock().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            return Vec::new();
        }
        let (due, waiting): (Vec<_>, Vec<_>) = list.drain(..).partition(|(at, _)| *at <= now);
        *list = waiting;
        let mut due = due;
        due.sort_by_key(|(at, _)| *at);
        due.into_iter().map(|(_, w)| w).collect()
    }

    pub(super) fn sweep(&self, now: u64) -> Vec<DeferredWill> {
        let horizon = now.saturating_sub(self.limits.history_ttl.as_millis() as u64);
        for (room, state) in self.all_rooms() {
            {
                let mut state = lock(&state);
                let lapsed: Vec<Topic> = state
                    .retained
                    .values()
                    .filter(|r| r.expires_at.is_some_and(|t| t <= now))
                    .map(|r| r.topic.clone())
                    .collect();
                for topic in lapsed {
                    if let Some(held) = state.retained.remove(&topic) {
                        let (_, event) = state.status_event(
                            &room,
                            &topic,
                            null_payload(),
                            held.from,
                            &self.limits,
                        );
                        self.fanout.deliver(&room, event);
                    }
                }
                while state.kept().next().is_some_and(|(ts, _)| *ts <= horizon) {
                    state.drop_oldest();
                }
                if let Some(ledger) = state.once.as_mut() {
                    ledger.prune(now);
                    if ledger.is_empty() {
                        state.once = None;
                    }
                }
            }
            self.collect(&room);
        }
        self.due_wills()
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
