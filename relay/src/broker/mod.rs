//! The broker seam: what must be shared by every relay instance. It orders and
//! ids a room's messages, keeps presence, and hands every event to each
//! instance's local [`Fanout`]. The memory broker serves one process; a Redis
//! broker (same operations) serves many.

mod memory;

use std::sync::Arc;

pub use memory::MemoryBroker;

use crate::hub::Fanout;
use crate::protocol::{Event, EventId, LeaveReason, Payload, PeerInfo, RoomName};

/// Broker failures, mapped to the contract's codes in `error.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The shared backend cannot be reached.
    #[error("backend unavailable")]
    Unavailable,
    /// A direct message or `conn` named a peer that is not in the room.
    #[error("no peer {peer} in room {room}")]
    NoSuchPeer {
        /// The room.
        room: String,
        /// The missing peer id.
        peer: String,
    },
}

/// A message to publish, before the broker gives it an id and a time.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Sending peer id, or the token's `sub`.
    pub from: Arc<str>,
    /// Application message type.
    pub kind: Arc<str>,
    /// Payload.
    pub data: Payload,
    /// Direct recipient.
    pub to: Option<Arc<str>>,
    /// Topic.
    pub topic: Option<Arc<str>>,
}

/// A room's presence and position, as a joining subscriber needs them.
#[derive(Debug, Clone, Default)]
pub struct RoomSnapshot {
    /// Peers present, oldest first.
    pub peers: Vec<PeerInfo>,
    /// The room's last message id.
    pub last_id: Option<EventId>,
}

/// A room in the `/rooms` listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomSummary {
    /// The room.
    pub room: RoomName,
    /// Peers present.
    pub peers: usize,
    /// Retained topics held.
    pub topics: usize,
}

/// The broker in use: an enum rather than a trait object so calls stay static.
pub enum Broker {
    /// One process, no dependencies (the default).
    Memory(MemoryBroker),
}

impl Broker {
    /// The in-memory broker delivering to `fanout`.
    pub fn memory(fanout: Arc<Fanout>) -> Broker {
        Broker::Memory(MemoryBroker::new(fanout))
    }

    /// Gives a message its id and time and delivers it (a direct message only to
    /// its recipient, who must be in the room).
    pub async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError> {
        match self {
            Broker::Memory(b) => b.publish(room, draft),
        }
    }

    /// Adds a peer to a room's presence, announces it with `join`, and returns the
    /// room as the new peer must see it (the others, and the last id).
    pub async fn join(&self, room: &RoomName, peer: PeerInfo) -> Result<RoomSnapshot, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.join(room, peer)),
        }
    }

    /// Removes a peer from a room and announces it with `leave`.
    pub async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => {
                b.leave(room, peer, reason);
                Ok(())
            }
        }
    }

    /// Sets a peer's presence state and announces it with `state`.
    pub async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => b.set_state(room, peer, state),
        }
    }

    /// The room's presence and last id.
    pub async fn snapshot(&self, room: &RoomName) -> Result<RoomSnapshot, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.snapshot(room)),
        }
    }

    /// One present peer of a room.
    pub async fn peer(&self, room: &RoomName, peer: &str) -> Result<Option<PeerInfo>, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.peer(room, peer)),
        }
    }

    /// Every room with peers (or retained topics), with counts.
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.rooms()),
        }
    }
}
