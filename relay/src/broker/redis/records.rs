//! Stored forms of what the broker keeps in Redis.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::BrokerError;
use crate::protocol::RoomName;

/// Stored form of a pending (deferred) will: the will with its room, peer and
/// user, and a random id that names it for its once-only firing.
#[derive(Serialize, Deserialize)]
pub(super) struct DeferredRecord<'a> {
    pub(super) id: &'a str,
    pub(super) room: &'a str,
    pub(super) peer: &'a str,
    pub(super) user: &'a str,
    pub(super) topic: &'a str,
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
    pub(super) after: Option<f64>,
}

/// A peer as a member of its instance's set: `[room, peer]` as JSON.
pub(super) fn peer_member(room: &RoomName, peer: &str) -> String {
    serde_json::to_string(&(room.as_str(), peer)).unwrap_or_default()
}

/// Stored form of a retained value.
#[derive(Serialize, Deserialize)]
pub(super) struct RetainedRecord<'a> {
    pub(super) id: &'a str,
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
    pub(super) ts: u64,
    pub(super) from: &'a str,
    /// Expiry (ms since the epoch), if any.
    pub(super) x: Option<u64>,
}

/// Stored form of a will.
#[derive(Serialize, Deserialize)]
pub(super) struct WillRecord<'a> {
    pub(super) topic: &'a str,
    #[serde(borrow)]
    pub(super) data: &'a RawValue,
    pub(super) after: Option<f64>,
}

/// Stored form of a presence entry's peer.
#[derive(Deserialize)]
pub(super) struct PeerRecord {
    pub(super) id: String,
    pub(super) user: String,
    pub(super) meta: Box<RawValue>,
    pub(super) state: Box<RawValue>,
}

/// Splits an event's JSON, built with the id `0-0`, around that id.
pub(super) fn split_at_id(json: &str) -> Option<(String, String)> {
    const MARK: &str = "\"id\":\"0-0\"";
    let at = json.find(MARK)?;
    Some((json[..at + 6].to_owned(), json[at + 9..].to_owned()))
}

pub(super) fn template_error() -> BrokerError {
    tracing::error!("event template without an id placeholder");
    BrokerError::Unavailable
}
