//! The broker seam: what every relay instance must share. It orders and ids a
//! room's events, keeps presence, retained topic values and a bounded history,
//! and hands every event to each instance's local [`Fanout`](crate::delivery::Fanout). The memory broker
//! serves one process; a Redis broker (the same operations, the same contract
//! tests) serves many.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryBroker;
pub use redis::{RedisBroker, RedisSettings, StartCause, StartError};

use async_trait::async_trait;

use crate::idempotency::Once;
use crate::protocol::{
    Control, Event, EventId, LeaveReason, NameError, Payload, PeerInfo, PeerList, Publish, RoomName,
};
use crate::topic::{Topic, TopicFilter};

pub use crate::error::BrokerError;

/// Bounds on what a broker keeps per room.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events kept in a room's history.
    pub history_size: usize,
    /// Age after which history events are dropped.
    pub history_ttl: Duration,
    /// Bytes of events kept in one room's history (their JSON).
    pub history_bytes: usize,
    /// Bytes of history kept across every room of this relay (memory broker;
    /// with Redis, history lives in Redis and its `maxmemory` bounds it).
    pub history_bytes_total: usize,
    /// Retained topics per room.
    pub max_topics: usize,
}

/// A message to publish, before the broker gives it an id and a time: the
/// client's [`Publish`] as the hub checked it (never `retain`: a retained
/// write is a [`RetainDraft`]), with who sends it.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Sending peer id, or the token's `sub`.
    pub from: Arc<str>,
    /// What the client published.
    pub publish: Publish,
    /// Makes a retry of this publish return the first id and deliver nothing.
    pub once: Option<Once>,
}

/// A topic value to store, before the broker gives it an id and a time.
#[derive(Debug, Clone)]
pub struct RetainDraft {
    /// The topic.
    pub topic: Topic,
    /// The value.
    pub data: Payload,
    /// Who sets it (peer id or `sub`).
    pub from: Arc<str>,
    /// Lifetime; the value is cleared (with a `status` event) when it lapses.
    pub ttl: Option<Duration>,
    /// Makes a retry of this write return the first id and deliver nothing.
    pub once: Option<Once>,
}

/// A stored topic value.
#[derive(Debug, Clone)]
pub struct Retained {
    /// The topic.
    pub topic: Topic,
    /// The value.
    pub data: Payload,
    /// When it was set (ms since the epoch).
    pub ts: u64,
    /// Who set it.
    pub from: Arc<str>,
    /// When it lapses (ms since the epoch).
    pub expires_at: Option<u64>,
    /// Its `status` event with `retained: true`, serialized once for every
    /// subscriber that joins while it holds.
    pub replay: Arc<Event>,
}

/// A range of a room's history.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Events after the requested id, oldest first.
    pub events: Vec<Arc<Event>>,
    /// False when events after the requested id were already dropped (or the
    /// room's history is unknown), so the caller must resynchronise.
    pub complete: bool,
}

/// Longest delay a will may carry: one hour.
pub const MAX_WILL_DELAY_SECS: f64 = 3600.0;

/// A retained publish made for a connection that ends without `leave`. Kept in
/// the broker so that another instance can fire it if this one dies.
#[derive(Debug, Clone)]
pub struct Will {
    /// The topic to set.
    pub topic: Topic,
    /// The value to set.
    pub data: Payload,
    /// Wait this long, and fire only if no session of the same user joined meanwhile.
    pub after: Option<Duration>,
}

impl Will {
    /// Builds a will from client input, checking the topic and the delay.
    pub fn new(topic: &str, data: Payload, after: Option<f64>) -> Result<Will, NameError> {
        let topic = Topic::parse(topic)?;
        let after = after.map(Will::delay).transpose()?;
        Ok(Will { topic, data, after })
    }

    /// Checks a will's delay in seconds (0 to `MAX_WILL_DELAY_SECS`).
    pub fn delay(seconds: f64) -> Result<Duration, NameError> {
        if seconds.is_finite() && (0.0..=MAX_WILL_DELAY_SECS).contains(&seconds) {
            Ok(Duration::from_secs_f64(seconds))
        } else {
            Err(NameError(format!(
                "a will's delay must be 0 to {MAX_WILL_DELAY_SECS} seconds"
            )))
        }
    }

    /// The retained publish this will makes, on behalf of the departed peer `from`.
    pub fn into_draft(self, from: Arc<str>) -> RetainDraft {
        RetainDraft {
            topic: self.topic,
            data: self.data,
            from,
            ttl: None,
            once: None,
        }
    }
}

/// A will waiting out its delay. The broker keeps it (with Redis, in Redis)
/// so that whichever instance is alive when it falls due fires it, once:
/// a deploy or a crash of the instance that held the connection loses nothing.
#[derive(Debug, Clone)]
pub struct DeferredWill {
    /// The room.
    pub room: RoomName,
    /// The departed peer.
    pub peer: Arc<str>,
    /// Its user: the will does not fire if a session of this user is back.
    pub user: Arc<str>,
    /// The will.
    pub will: Will,
    /// A unique id: the will's idempotency key, so it fires once.
    pub id: String,
    /// How the broker finds it again to settle it.
    pub handle: String,
}

/// How long a claimed will stays hidden from other instances; if the one that
/// claimed it dies before settling it, another fires it after this (its
/// idempotency key keeps it from firing twice).
pub const WILL_LEASE: Duration = Duration::from_secs(10);

/// A room's presence and position, as a joining subscriber needs them.
#[derive(Debug, Clone, Default)]
pub struct RoomSnapshot {
    /// Peers present, oldest first.
    pub peers: Vec<PeerInfo>,
    /// The room's last event id.
    pub last_id: Option<EventId>,
}

/// The room as a peer that just joined must see it: the others present,
/// and the room's last id.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The others present, oldest first.
    pub peers: PeerList,
    /// The room's last event id.
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

/// One page of the room listing, and where the next one starts.
#[derive(Debug, Clone, Default)]
pub struct RoomPage {
    /// Rooms with peers or retained topics, by name within the page.
    pub rooms: Vec<RoomSummary>,
    /// The cursor of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// The seam between the hub and where rooms live: one implementation per
/// backend (a folder each), chosen once at start-up and shared as
/// `Arc<dyn Broker>`. Every implementation passes the same contract tests.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Gives a message its id and time, keeps it in history (unless direct) and
    /// delivers it (a direct message only to its recipient, who must be present).
    /// With `draft.once`, a retry returns the first attempt's id and does nothing.
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError>;

    /// Delivers a control message to its peer, present in a room, on
    /// whichever instance holds it; `NoSuchPeer` when it is not present.
    async fn control(&self, room: &RoomName, control: Control) -> Result<(), BrokerError>;

    /// Stores a topic's retained value and delivers its live `status` event.
    async fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError>;

    /// Clears a topic's retained value and delivers a `status` event with `data:
    /// null`; `None` when the topic held no value. With `once`, a retry of a
    /// clear that was done returns its event again (with its id) and does nothing.
    async fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError>;

    /// The retained values of a room whose topics match `filter` (all without
    /// one), sorted by topic.
    async fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, BrokerError>;

    /// History, oldest first: the first `limit` events after `since` (paging
    /// forward), or without `since` the newest `limit` events.
    async fn history(
        &self,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, BrokerError>;

    /// Adds a peer to a room's presence, announces it with `join`, and returns the
    /// room as the new peer must see it (the others, and the last id).
    async fn join(&self, room: &RoomName, peer: PeerInfo) -> Result<Joined, BrokerError>;

    /// Removes a peer from a room and announces it with `leave`.
    async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError>;

    /// Sets a peer's presence state and announces it with `state`.
    async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError>;

    /// The room's presence and last id.
    async fn snapshot(&self, room: &RoomName) -> Result<RoomSnapshot, BrokerError>;

    /// One present peer of a room.
    async fn peer(&self, room: &RoomName, peer: &str) -> Result<Option<PeerInfo>, BrokerError>;

    /// A page of about `limit` rooms with peers or retained topics, with
    /// counts, from `cursor` (the previous page's `next`; `None` for the
    /// first). One round trip per page with Redis, whatever the number of
    /// rooms. A room may show on two pages while the listing runs.
    async fn rooms(&self, cursor: Option<&str>, limit: usize) -> Result<RoomPage, BrokerError>;

    /// Makes sure events of `room` published on any instance reach this
    /// instance's fan-out; returns once that holds. Called before a local
    /// subscriber reads the room's snapshot.
    async fn watch(&self, room: &RoomName) -> Result<(), BrokerError>;

    /// Stops bringing `room`'s events to this instance (its last local
    /// subscriber left).
    async fn unwatch(&self, room: &RoomName) -> Result<(), BrokerError>;

    /// Stores (replacing) the will of `peer` in `room`.
    async fn put_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError>;

    /// Removes and returns the will of `peer` in `room`: exactly one caller gets it.
    async fn take_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
    ) -> Result<Option<Will>, BrokerError>;

    /// Keeps a delayed will until it falls due (its delay counted from now,
    /// the end of its connection), for any instance to fire.
    async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError>;

    /// Forgets a claimed will: it fired, or its user was back.
    async fn settle_will(&self, will: &DeferredWill) -> Result<(), BrokerError>;

    /// Does the time-driven work as of `now_ms`: clears lapsed retained values
    /// (with `status` events), drops history past its age, forgets empty rooms,
    /// and (with Redis) removes the peers of dead instances, firing or
    /// deferring their wills. Returns the delayed wills now due, claimed for
    /// `WILL_LEASE`, for the hub to fire (or drop) and then `settle_will`.
    /// The hub calls it every second; tests call it with a chosen time.
    async fn sweep(&self, now_ms: u64) -> Result<Vec<DeferredWill>, BrokerError>;

    /// True while the broker can serve (Redis reachable, when configured).
    fn is_ready(&self) -> bool;
}
