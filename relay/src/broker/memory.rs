//! The in-memory broker: one process, no dependencies. Each room's state sits
//! behind its own lock; an id is assigned and the event handed to the local
//! fan-out under that lock, so every subscriber sees one order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{BrokerError, Draft, RoomSnapshot, RoomSummary};
use crate::hub::Fanout;
use crate::protocol::{Event, EventId, LeaveReason, Message, Payload, PeerInfo, RoomName, now_ms};

/// Rooms, presence and ids held in this process.
pub struct MemoryBroker {
    rooms: Mutex<HashMap<RoomName, Arc<Mutex<RoomState>>>>,
    fanout: Arc<Fanout>,
}

#[derive(Default)]
struct RoomState {
    last_id: Option<EventId>,
    /// Present peers with their join order.
    presence: HashMap<Arc<str>, (u64, PeerInfo)>,
    joins: u64,
}

impl RoomState {
    fn next_id(&mut self) -> EventId {
        let id = self.last_id.unwrap_or_default().next_after(now_ms());
        self.last_id = Some(id);
        id
    }

    fn snapshot(&self, except: Option<&str>) -> RoomSnapshot {
        let mut peers: Vec<&(u64, PeerInfo)> = self
            .presence
            .values()
            .filter(|(_, p)| Some(&*p.id) != except)
            .collect();
        peers.sort_by_key(|(order, _)| *order);
        RoomSnapshot {
            peers: peers.into_iter().map(|(_, p)| p.clone()).collect(),
            last_id: self.last_id,
        }
    }

    fn is_idle(&self) -> bool {
        self.presence.is_empty()
    }

    /// Idle, and the clock has moved past the last id, so a fresh state for the
    /// same room cannot hand out an id already used.
    fn is_collectable(&self) -> bool {
        self.is_idle() && self.last_id.is_none_or(|id| id.ms < now_ms())
    }
}

impl MemoryBroker {
    /// A broker delivering to `fanout`.
    pub fn new(fanout: Arc<Fanout>) -> MemoryBroker {
        MemoryBroker {
            rooms: Mutex::new(HashMap::new()),
            fanout,
        }
    }

    fn room(&self, room: &RoomName) -> Arc<Mutex<RoomState>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(room.clone()).or_default().clone()
    }

    fn existing(&self, room: &RoomName) -> Option<Arc<Mutex<RoomState>>> {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.get(room).cloned()
    }

    /// Forgets a room that holds nothing any more.
    fn collect(&self, room: &RoomName) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = rooms.get(room)
            && state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_collectable()
        {
            rooms.remove(room);
        }
    }

    pub(super) fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError> {
        let state = self.room(room);
        let event = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(to) = &draft.to
                && !state.presence.contains_key(to)
            {
                return Err(BrokerError::NoSuchPeer {
                    room: room.to_string(),
                    peer: to.to_string(),
                });
            }
            let message = Message {
                room: room.clone(),
                id: state.next_id(),
                ts: now_ms(),
                from: draft.from,
                kind: draft.kind,
                data: draft.data,
                to: draft.to,
                topic: draft.topic,
            };
            let event = Event::message(&message);
            self.fanout.deliver(room, event.clone());
            event
        };
        self.collect(room);
        Ok(event)
    }

    pub(super) fn join(&self, room: &RoomName, peer: PeerInfo) -> RoomSnapshot {
        let state = self.room(room);
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.joins += 1;
        let order = state.joins;
        let event = Event::join(room, &peer);
        let id = peer.id.clone();
        state.presence.insert(id.clone(), (order, peer));
        self.fanout.deliver(room, event);
        state.snapshot(Some(&id))
    }

    pub(super) fn leave(&self, room: &RoomName, peer: &Arc<str>, reason: LeaveReason) {
        let Some(state) = self.existing(room) else {
            return;
        };
        {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
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
        let state = self.existing(room).ok_or_else(|| BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: peer.to_string(),
        })?;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((_, entry)) = state.presence.get_mut(peer) else {
            return Err(BrokerError::NoSuchPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            });
        };
        entry.state = value.clone();
        self.fanout.deliver(room, Event::state(room, peer, &value));
        Ok(())
    }

    pub(super) fn snapshot(&self, room: &RoomName) -> RoomSnapshot {
        match self.existing(room) {
            Some(state) => state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot(None),
            None => RoomSnapshot::default(),
        }
    }

    pub(super) fn peer(&self, room: &RoomName, peer: &str) -> Option<PeerInfo> {
        let state = self.existing(room)?;
        let state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.presence.get(peer).map(|(_, p)| p.clone())
    }

    pub(super) fn rooms(&self) -> Vec<RoomSummary> {
        let rooms: Vec<(RoomName, Arc<Mutex<RoomState>>)> = {
            let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut out: Vec<RoomSummary> = rooms
            .into_iter()
            .filter_map(|(room, state)| {
                let state = state.lock().unwrap_or_else(|p| p.into_inner());
                (!state.is_idle()).then(|| RoomSummary {
                    room,
                    peers: state.presence.len(),
                    topics: 0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.room.cmp(&b.room));
        out
    }
}
