//! The Redis broker: many relay instances share rooms through one Redis.
//!
//! - Every event of a room is published by one Lua script that appends it to
//!   the room's stream (`XADD`, which assigns the `<ms>-<seq>` id) and
//!   `PUBLISH`es it, atomically: one id, one order, for every instance. The
//!   event is serialized once, in two halves around its id.
//! - Each instance holds one pub/sub connection and subscribes to a room's
//!   channel once, while it has local subscribers; local fan-out does the rest.
//!   A reconnected pub/sub connection resubscribes and replays from the stream
//!   what it missed, so live subscribers see no gap.
//! - Presence, retained values and wills are per-room hashes. Presence entries
//!   name their instance; instances keep a heartbeat key alive, and any
//!   instance's sweep removes the peers (and fires the wills) of an instance
//!   whose heartbeat lapsed.
//! - On a Redis Cluster (`redis+cluster://` URLs) rooms are spread over
//!   buckets of one hash slot each (see `keys`), so every script still runs
//!   in one slot, and fan-out uses sharded pub/sub (see `sharded`).
//!
//! One file per concept: `connection` (one server or a cluster), `keys`
//! (names and buckets), `scripts` (the Lua), `records` (stored forms),
//! `events` (publish and history), `retained`, `presence`, `deadlines`
//! (time-driven work), `liveness` (heartbeat and dead instances), `pubsub`
//! (fan-out between instances on one server), `sharded` (on a cluster),
//! `errors`.

mod connection;
mod deadlines;
mod errors;
mod events;
mod keys;
mod liveness;
mod presence;
mod pubsub;
mod records;
mod retained;
mod scripts;
mod sharded;

pub use errors::{StartCause, StartError};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use self::connection::{Conn, Subscriber, Target};
use self::deadlines::SweepPlan;
use self::keys::Layout;
use self::liveness::heartbeat;
use self::pubsub::{PubSubState, pubsub_loop};
use self::scripts::Scripts;
use self::sharded::sharded_loop;
use crate::broker::{
    Broker, BrokerError, DeferredWill, Draft, History, Joined, Limits, RetainDraft, Retained,
    RoomPage, RoomSnapshot, Will,
};
use crate::delivery::Fanout;
use crate::idempotency::Once;
use crate::protocol::now_ms;
use crate::protocol::{Control, Event, EventId, LeaveReason, Payload, PeerInfo, RoomName};
use crate::topic::{Topic, TopicFilter};

/// How the Redis broker connects and identifies itself.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL of one server, or
    /// `redis+cluster://host:port,host:port` (`rediss+cluster://`) naming
    /// seed nodes of a Redis Cluster.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Longest wait for one Redis reply; also the connect timeout.
    pub timeout: Duration,
    /// How long an instance's heartbeat lives: a dead instance's peers are
    /// removed this long (plus one sweep) after its last beat.
    pub instance_ttl: Duration,
}

/// Shared state of the Redis broker.
pub struct RedisBroker {
    conn: Conn,
    /// One server or a cluster: how keys are laid out.
    layout: Layout,
    /// When each bucket's deadline set next needs a look.
    sweep_plan: SweepPlan,
    settings: RedisSettings,
    limits: Limits,
    instance: Arc<str>,
    fanout: Arc<Fanout>,
    pubsub: Arc<tokio::sync::Mutex<PubSubState>>,
    /// Last history id delivered locally per watched room (deduplication after a resync).
    delivered: Arc<Mutex<HashMap<RoomName, EventId>>>,
    commands_ok: Arc<AtomicBool>,
    pubsub_ok: Arc<AtomicBool>,
    /// Redis's clock minus this relay's, in ms (measured with each heartbeat).
    clock_offset_ms: AtomicI64,
    /// This instance's own peers and their wills, as it last told Redis: what
    /// it re-asserts when Redis has lost them.
    local: Mutex<HashMap<(RoomName, Arc<str>), LocalPeer>>,
    /// Since when (ms) this instance has reached Redis without a break and
    /// with its heartbeat in place. Other instances are judged dead only
    /// after this has lasted an instance TTL: after an outage they need one
    /// heartbeat to show they are alive.
    connected_since: AtomicU64,
    /// True once the first heartbeat was written.
    beaten: AtomicBool,
    /// Set when Redis has lost this instance's state; cleared once re-asserted.
    reassert_due: AtomicBool,
    scripts: Scripts,
}

/// One of this instance's peers as Redis should hold it.
pub(super) struct LocalPeer {
    pub(super) info: PeerInfo,
    /// The stored will record, if the peer has a will.
    pub(super) will: Option<String>,
}

impl RedisBroker {
    /// Connects (failing after the timeout), starts the heartbeat and the
    /// pub/sub task (tracked by the fan-out's tracker), and returns the broker. A failure says which URL (its
    /// password hidden), why, and what to check.
    pub async fn connect(
        settings: RedisSettings,
        limits: Limits,
        fanout: Arc<Fanout>,
        shutdown: CancellationToken,
    ) -> Result<Arc<RedisBroker>, StartError> {
        let tasks = fanout.tasks().clone();
        let timeout = settings.timeout;
        let shown_url = crate::redact::url_password(&settings.url);
        let failed = |cause: StartCause| StartError {
            url: shown_url.clone(),
            cause,
        };
        let target = Target::parse(&settings.url);
        let (conn, subscriber) = connection::open(&target, &settings.url, timeout)
            .await
            .map_err(failed)?;
        let layout = match target {
            Target::Single(_) => Layout::Single,
            Target::Cluster(_) => Layout::Cluster,
        };
        let instance: Arc<str> = Arc::from(format!("i-{}", crate::random::random_id(9)));
        let mut pubsub = PubSubState::default();
        if let Subscriber::Cluster(sub_conn, ..) = &subscriber {
            pubsub.cluster = Some(sub_conn.clone());
        }
        let broker = Arc::new(RedisBroker {
            conn,
            layout,
            sweep_plan: SweepPlan::new(layout.buckets()),
            settings,
            limits,
            instance,
            fanout,
            pubsub: Arc::new(tokio::sync::Mutex::new(pubsub)),
            delivered: Arc::new(Mutex::new(HashMap::new())),
            commands_ok: Arc::new(AtomicBool::new(true)),
            pubsub_ok: Arc::new(AtomicBool::new(false)),
            clock_offset_ms: AtomicI64::new(0),
            local: Mutex::new(HashMap::new()),
            connected_since: AtomicU64::new(now_ms()),
            beaten: AtomicBool::new(false),
            reassert_due: AtomicBool::new(false),
            scripts: Scripts::load(layout == Layout::Cluster),
        });
        broker
            .beat()
            .await
            .map_err(|_| failed(StartCause::Timeout(timeout)))?;
        tasks.spawn(heartbeat(broker.clone(), shutdown.clone()));
        match subscriber {
            Subscriber::Single(client) => {
                tasks.spawn(pubsub_loop(broker.clone(), *client, shutdown));
            }
            Subscriber::Cluster(_, pushes, overflowed) => {
                // Subscriptions are the cluster client's to keep: ready now.
                broker.pubsub_ok.store(true, Ordering::Relaxed);
                tasks.spawn(sharded_loop(broker.clone(), pushes, overflowed, shutdown));
            }
        }
        Ok(broker)
    }

    /// This instance's id, as written in presence entries.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// True while Redis answers and the pub/sub connection is up.
    pub fn is_ready(&self) -> bool {
        self.commands_ok.load(Ordering::Relaxed) && self.pubsub_ok.load(Ordering::Relaxed)
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// A time of this relay's clock (ms) on Redis's, where the deadlines
    /// and stream ids are, as last measured.
    pub(super) fn on_redis_clock(&self, local_ms: u64) -> u64 {
        (local_ms as i64 + self.clock_offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    pub(super) fn ttl_ms(&self) -> u64 {
        (self.limits.history_ttl.as_millis() as u64).max(1)
    }

    /// The latest moment, on Redis's clock, at which a write sent now may
    /// still be applied: the relay's own wait for the reply, less a tenth for
    /// the way back. A write that reaches Redis later (a paused server, a
    /// backlog) is refused by its script, so it is never applied after the
    /// relay has answered that it failed.
    pub(super) fn write_deadline(&self) -> i64 {
        let wait = self.settings.timeout.as_millis() as i64;
        now_ms() as i64 + self.clock_offset_ms.load(Ordering::Relaxed) + wait - wait / 10
    }
}

/// The broker seam, by the inherent methods above.
#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Arc<Event>, BrokerError> {
        RedisBroker::publish(self, room, draft).await
    }

    async fn control(&self, room: &RoomName, control: Control) -> Result<(), BrokerError> {
        RedisBroker::control(self, room, control).await
    }

    async fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        RedisBroker::set_retained(self, room, draft).await
    }

    async fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        RedisBroker::clear_retained(self, room, topic, from, once).await
    }

    async fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, BrokerError> {
        RedisBroker::retained(self, room, filter).await
    }

    async fn history(
        &self,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        RedisBroker::history(self, room, since, limit).await
    }

    async fn join(&self, room: &RoomName, peer: PeerInfo) -> Result<Joined, BrokerError> {
        RedisBroker::join(self, room, peer).await
    }

    async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError> {
        RedisBroker::leave(self, room, peer, reason).await
    }

    async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError> {
        RedisBroker::set_state(self, room, peer, state).await
    }

    async fn snapshot(&self, room: &RoomName) -> Result<RoomSnapshot, BrokerError> {
        RedisBroker::snapshot(self, room).await
    }

    async fn peer(&self, room: &RoomName, peer: &str) -> Result<Option<PeerInfo>, BrokerError> {
        RedisBroker::peer(self, room, peer).await
    }

    async fn rooms(&self, cursor: Option<&str>, limit: usize) -> Result<RoomPage, BrokerError> {
        RedisBroker::rooms(self, cursor, limit).await
    }

    async fn watch(&self, room: &RoomName) -> Result<(), BrokerError> {
        RedisBroker::watch(self, room).await
    }

    async fn unwatch(&self, room: &RoomName) -> Result<(), BrokerError> {
        RedisBroker::unwatch(self, room).await
    }

    async fn put_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        RedisBroker::put_will(self, room, peer, will).await
    }

    async fn take_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
    ) -> Result<Option<Will>, BrokerError> {
        RedisBroker::take_will(self, room, peer).await
    }

    async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        RedisBroker::defer_will(self, room, peer, user, will).await
    }

    async fn settle_will(&self, will: &DeferredWill) -> Result<(), BrokerError> {
        RedisBroker::settle_will(self, will).await
    }

    async fn sweep(&self, now_ms: u64) -> Result<Vec<DeferredWill>, BrokerError> {
        RedisBroker::sweep(self, now_ms).await
    }

    fn is_ready(&self) -> bool {
        RedisBroker::is_ready(self)
    }
}
