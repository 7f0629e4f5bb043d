//! What events carry: peers as a room sees them, application messages and
//! topic values.

use std::sync::Arc;

use serde::Serialize;

use super::{EventId, Payload, RoomName};

/// A peer as the room sees it: the presence entry sent in `welcome` and `join`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// `<sub>.<random>`, unique across relay instances.
    pub id: Arc<str>,
    /// The token's `sub`.
    pub user: Arc<str>,
    /// The token's `meta` claim, or `null`.
    pub meta: Payload,
    /// The state the peer set with the `state` op, or `null`.
    pub state: Payload,
}

/// The others present when a peer joined: a list built for it, or the JSON
/// array that every peer joining within one presence window shares (built
/// once per room per window; see `delivery/presence.rs`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum PeerList {
    /// Built for this joiner.
    Own(Vec<PeerInfo>),
    /// The array shared by the window's joiners: the room as the first of
    /// them found it. The changes since reach each of them in the window's
    /// `presence` event.
    Shared(Payload),
}

/// Why a peer left a room; the `reason` of a `leave` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    /// It left or its connection closed.
    Closed,
    /// It went silent (idle timeout) or its relay instance died.
    Timeout,
    /// A newer connection of the same peer replaced it.
    Replaced,
    /// Its token expired.
    Expired,
}

/// An application message as stored and delivered: the body of a `message` event.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// The room it was published to.
    pub room: RoomName,
    /// Its id, growing within the room.
    pub id: EventId,
    /// When the relay accepted it (ms since the epoch).
    pub ts: u64,
    /// The sending peer id, or the token's `sub` for a POST without `conn`.
    pub from: Arc<str>,
    /// Application-defined message type (`message` by default).
    #[serde(rename = "type")]
    pub kind: Arc<str>,
    /// The payload.
    pub data: Payload,
    /// Recipient peer id of a direct message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Arc<str>>,
    /// Topic the message was published to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<Arc<str>>,
}

/// A topic value as delivered in a `status` event: its body.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The room.
    pub room: RoomName,
    /// Its id when live; `None` when replayed from the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<EventId>,
    /// The topic.
    pub topic: Arc<str>,
    /// The value; `null` when cleared.
    pub data: Payload,
    /// When the value was set (ms since the epoch).
    pub ts: u64,
    /// Who set it.
    pub from: Arc<str>,
    /// True when replayed from the store, false for a live update.
    pub retained: bool,
}
