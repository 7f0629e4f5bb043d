//! The room hub: owns sessions, presence and rights checks, and talks to the
//! broker. Transports (WebSocket, SSE, HTTP) are thin adapters onto it.

mod session;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::broker::{MAX_WILL_DELAY_SECS, Will};
pub use crate::delivery::{DIRECT_QUEUE, Fanout, Inbox, Lagged, RingReceiver};
pub use crate::random::random_id;
pub use session::{MAX_ROOMS_PER_SESSION, Next, Session};

use crate::auth::{Authenticator, Principal, Rights};
use crate::broker::{
    Broker, Draft, History, Limits, MemoryBroker, RetainDraft, Retained, RoomPage, RoomSnapshot,
};
use crate::config::Config;
use crate::error::ApiError;
use crate::guard::{Guard, GuardLimits};
use crate::idempotency::{IdempotencyKey, Once};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{
    Control, Event, EventId, Payload, PeerInfo, Publish, RoomName, check_message_type, now_ms,
};
use crate::topic::{Topic, TopicFilter};

/// How often lapsed retained values and old history are swept.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest `ttl` accepted for a retained value: 30 days.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// The hub, cheap to clone; the axum state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    guard: Arc<Guard>,
    auth: Arc<Authenticator>,
    broker: Arc<dyn Broker>,
    fanout: Arc<Fanout>,
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl axum::extract::FromRef<Hub> for Arc<Authenticator> {
    fn from_ref(hub: &Hub) -> Self {
        hub.inner.auth.clone()
    }
}

impl Hub {
    /// A hub over the in-memory broker. `shutdown` ends every session when cancelled.
    pub fn new(config: Arc<Config>, auth: Arc<Authenticator>, shutdown: CancellationToken) -> Hub {
        let fanout = Fanout::new(config.outbound_queue, config.presence_window);
        let broker = Arc::new(MemoryBroker::new(fanout.clone(), Hub::limits(&config)));
        let tasks = fanout.tasks().clone();
        Hub::with_broker(config, auth, shutdown, broker, fanout, tasks)
    }

    /// A hub over the broker the configuration asks for: Redis when
    /// `EDGEWIRE_REDIS_URL` is set (connecting first), memory otherwise.
    pub async fn connect(
        config: Arc<Config>,
        auth: Arc<Authenticator>,
        shutdown: CancellationToken,
    ) -> Result<Hub, crate::broker::StartError> {
        let Some(url) = config.redis_url.clone() else {
            return Ok(Hub::new(config, auth, shutdown));
        };
        let fanout = Fanout::new(config.outbound_queue, config.presence_window);
        let tasks = fanout.tasks().clone();
        let settings = crate::broker::RedisSettings {
            url,
            prefix: config.redis_prefix.clone(),
            timeout: config.redis_timeout,
            instance_ttl: config.instance_ttl,
        };
        let redis = crate::broker::RedisBroker::connect(
            settings,
            Hub::limits(&config),
            fanout.clone(),
            shutdown.clone(),
            &tasks,
        )
        .await?;
        Ok(Hub::with_broker(
            config, auth, shutdown, redis, fanout, tasks,
        ))
    }

    fn limits(config: &Config) -> Limits {
        Limits {
            history_size: config.history_size,
            history_ttl: config.history_ttl,
            history_bytes: config.history_bytes,
            history_bytes_total: config.history_bytes_total,
            max_topics: config.max_topics,
        }
    }

    fn with_broker(
        config: Arc<Config>,
        auth: Arc<Authenticator>,
        shutdown: CancellationToken,
        broker: Arc<dyn Broker>,
        fanout: Arc<Fanout>,
        tasks: TaskTracker,
    ) -> Hub {
        let guard = Guard::new(GuardLimits {
            max_sessions: config.max_connections,
            max_per_address: config.max_connections_per_address,
            max_per_user: config.max_connections_per_user,
            new_per_second: config.new_connections_per_second,
            auth_failures: config.auth_failure_limit,
            publish_per_second: config.publish_rate,
        });
        Hub {
            inner: Arc::new(Inner {
                guard,
                config,
                auth,
                broker,
                fanout,
                metrics: Metrics::default(),
                shutdown,
                tasks,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Admission control.
    pub fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    /// The token verifier.
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Cancelled when the relay shuts down; every session watches it.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Tracks session tasks so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn broker(&self) -> &dyn Broker {
        &*self.inner.broker
    }

    pub(crate) fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    /// True while the relay can serve: not draining, and the broker is ready.
    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && self.inner.broker.is_ready()
    }

    /// Renders the Prometheus metrics.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render(self.inner.fanout.room_count())
    }

    /// Admits and opens a session for `principal` from `address`: refused with
    /// `503` while draining or at a connection cap. It joins rooms with
    /// [`Session::join`].
    pub fn open_session(
        &self,
        principal: Principal,
        transport: Transport,
        address: std::net::IpAddr,
    ) -> Result<Session, ApiError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ApiError::Draining);
        }
        let permit = self.inner.guard.admit(address, &principal.sub)?;
        Ok(Session::open(self.clone(), principal, transport, permit))
    }

    /// Resolves a `conn` parameter: the caller's own peer in `room`.
    pub async fn resolve_conn(
        &self,
        principal: &Principal,
        room: &RoomName,
        conn: &str,
    ) -> Result<Arc<str>, ApiError> {
        let peer: Option<PeerInfo> = self.broker().peer(room, conn).await?;
        match peer {
            Some(peer) if peer.user == principal.sub => Ok(peer.id),
            Some(_) => Err(ApiError::Forbidden(format!(
                "conn {conn} belongs to another user"
            ))),
            None => Err(ApiError::NotFound(format!("no peer {conn} in room {room}"))),
        }
    }

    /// Sets the presence state of the caller's own peer `conn` (an SSE session).
    pub async fn set_peer_state(
        &self,
        principal: &Principal,
        room: &RoomName,
        conn: &str,
        state: Payload,
    ) -> Result<(), ApiError> {
        principal.require(room, Rights::WRITE)?;
        let peer = self.resolve_conn(principal, room, conn).await?;
        Ok(self.broker().set_state(room, &peer, state).await?)
    }

    /// Sets (with `Some`) or cancels the will of the caller's own peer `conn`.
    pub async fn set_peer_will(
        &self,
        principal: &Principal,
        room: &RoomName,
        conn: &str,
        will: Option<crate::broker::Will>,
    ) -> Result<(), ApiError> {
        principal.require(room, Rights::RETAIN)?;
        let peer = self.resolve_conn(principal, room, conn).await?;
        match will {
            Some(will) => self.broker().put_will(room, &peer, will).await?,
            None => {
                self.broker().take_will(room, &peer).await?;
            }
        }
        Ok(())
    }

    /// The one write-rate policy of the HTTP routes (publish, topic PUT, POST
    /// and DELETE, state, will, refresh): each caller (`sub`) has a bucket of
    /// `EDGEWIRE_PUBLISH_RATE` per second with bursts of twice that; beyond it,
    /// `429 rate_limited` with `Retry-After`. A WebSocket session has a bucket
    /// of its own for its write ops.
    pub fn admit_write(&self, principal: &Principal) -> Result<(), ApiError> {
        self.guard().take_publish(&principal.sub)
    }

    /// Sends a new token (already verified as `principal`) to the caller's own
    /// session `conn` in `room`, on whichever instance holds it.
    pub async fn refresh_session(
        &self,
        principal: &Principal,
        room: &RoomName,
        conn: &str,
        token: &str,
    ) -> Result<(), ApiError> {
        if principal.is_anonymous() {
            return Err(ApiError::TokenMissing);
        }
        let peer = self.resolve_conn(principal, room, conn).await?;
        let token = token.to_owned();
        self.broker()
            .control(room, Control::Refresh { to: peer, token })
            .await?;
        Ok(())
    }

    /// Publishes to `room` as `from` after checking the caller's rights: a
    /// message (broadcast, direct, or to a topic), or with `retain` a topic's
    /// retained value.
    pub async fn publish(
        &self,
        principal: &Principal,
        room: &RoomName,
        from: Arc<str>,
        req: Publish,
    ) -> Result<Arc<Event>, ApiError> {
        let topic = req.topic.as_deref().map(Topic::parse).transpose()?;
        if req.retain {
            let topic = topic.ok_or_else(|| ApiError::BadRequest("retain needs a topic".into()))?;
            if req.to.is_some() {
                return Err(ApiError::BadRequest(
                    "a retained value cannot be a direct message".into(),
                ));
            }
            // As in MQTT, retaining nothing clears the topic.
            if req.data.get() == "null" {
                return self
                    .clear_retained(principal, room, topic, from, req.key.as_ref())
                    .await;
            }
            return self
                .set_retained(
                    principal,
                    room,
                    topic,
                    req.data,
                    from,
                    req.ttl,
                    req.key.as_ref(),
                )
                .await;
        }
        if req.ttl.is_some() {
            return Err(ApiError::BadRequest(
                "ttl applies only to retained values".into(),
            ));
        }
        principal.require(room, Rights::WRITE)?;
        check_message_type(&req.kind)?;
        if req.to.as_deref() == Some("") {
            return Err(ApiError::BadRequest("to must name a peer".into()));
        }
        let once = req.key.as_ref().map(|key| {
            // Whether `to` and `topic` are set is part of the write, not
            // only their text.
            let flags = match (req.to.is_some(), topic.is_some()) {
                (false, false) => "--",
                (true, false) => "t-",
                (false, true) => "-t",
                (true, true) => "tt",
            };
            Once::new(
                &principal.sub,
                key,
                &[
                    "pub",
                    flags,
                    &req.kind,
                    req.to.as_deref().unwrap_or(""),
                    topic.as_ref().map_or("", |t| t.as_str()),
                    req.data.get(),
                ],
            )
        });
        let publish = Publish {
            topic: topic.map(|t| t.as_arc().clone()),
            ..req
        };
        let draft = Draft {
            from,
            publish,
            once,
        };
        let event = self.broker().publish(room, draft).await?;
        Metrics::add(&self.inner.metrics.messages_in, 1);
        Ok(event)
    }

    /// Sets a topic's retained value (needs the `retain` right); with `key`,
    /// a retry returns the first attempt's id and does nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn set_retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        topic: Topic,
        data: Payload,
        from: Arc<str>,
        ttl: Option<u64>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Arc<Event>, ApiError> {
        principal.require(room, Rights::RETAIN)?;
        let ttl = match ttl {
            Some(0) => return Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
            Some(t) if t > MAX_TTL_SECS => {
                return Err(ApiError::BadRequest(format!(
                    "ttl may be at most {MAX_TTL_SECS} seconds"
                )));
            }
            t => t.map(std::time::Duration::from_secs),
        };
        let once = key.map(|key| {
            let ttl = ttl.map(|t| t.as_secs().to_string()).unwrap_or_default();
            Once::new(
                &principal.sub,
                key,
                &["set", topic.as_str(), data.get(), &ttl],
            )
        });
        let draft = RetainDraft {
            topic,
            data,
            from,
            ttl,
            once,
        };
        let event = self.broker().set_retained(room, draft).await?;
        Metrics::add(&self.inner.metrics.messages_in, 1);
        Ok(event)
    }

    /// Clears a topic's retained value (needs the `retain` right); `404` when
    /// it held none. With `key`, a retry of a clear that was done returns its
    /// id (not `404`) and does nothing.
    pub async fn clear_retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        topic: Topic,
        from: Arc<str>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Arc<Event>, ApiError> {
        principal.require(room, Rights::RETAIN)?;
        let once = key.map(|key| Once::new(&principal.sub, key, &["clear", topic.as_str()]));
        match self
            .broker()
            .clear_retained(room, &topic, from, once.as_ref())
            .await?
        {
            Some(event) => Ok(event),
            None => Err(ApiError::NotFound(format!(
                "topic {topic} holds no value in room {room}"
            ))),
        }
    }

    /// Retained values matching `filter`, for a reader.
    pub async fn retained(
        &self,
        principal: &Principal,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, ApiError> {
        principal.require(room, Rights::READ)?;
        Ok(self.broker().retained(room, filter).await?)
    }

    /// Stored events after `since`, for a reader.
    pub async fn history(
        &self,
        principal: &Principal,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, ApiError> {
        principal.require(room, Rights::READ)?;
        Ok(self.broker().history(room, since, limit).await?)
    }

    /// Runs the broker's sweep every [`SWEEP_INTERVAL`] until shutdown.
    pub fn start_sweeper(&self) {
        let hub = self.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = hub.shutdown().cancelled() => return,
                    _ = tick.tick() => {
                        hub.guard().sweep();
                        hub.sweep_broker().await;
                    }
                }
            }
        });
    }

    /// One broker sweep, then the deferred wills it found due.
    async fn sweep_broker(&self) {
        match self.broker().sweep(now_ms()).await {
            Ok(due) => self.fire_due_wills(due).await,
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
    }

    /// Fires each deferred will that is due, unless a session of its user is
    /// back in its room (a reload, a reconnect to another instance). The
    /// will's idempotency key makes it fire once even if two instances reach
    /// it (an instance died after firing and before settling it).
    async fn fire_due_wills(&self, due: Vec<crate::broker::DeferredWill>) {
        for deferred in due {
            let room = &deferred.room;
            let user_back = match self.broker().snapshot(room).await {
                Ok(snapshot) => snapshot.peers.iter().any(|p| p.user == deferred.user),
                Err(e) => {
                    // Left claimed: it is tried again when its lease ends.
                    tracing::warn!(%room, error = %e, "will not fired yet: presence unknown");
                    continue;
                }
            };
            if !user_back {
                let mut draft = deferred.will.clone().into_draft(deferred.peer.clone());
                draft.once = Some(Once {
                    scope: format!("will:{}", deferred.id),
                    fingerprint: "will".into(),
                });
                if let Err(e) = self.broker().set_retained(room, draft).await {
                    tracing::warn!(%room, error = %e, "will not fired yet");
                    continue;
                }
                tracing::info!(%room, peer = %deferred.peer, "fired a delayed will");
            }
            if let Err(e) = self.broker().settle_will(&deferred).await {
                tracing::warn!(%room, error = %e, "settling a will failed");
            }
        }
    }

    /// A room's presence, for a reader.
    pub async fn snapshot(
        &self,
        principal: &Principal,
        room: &RoomName,
    ) -> Result<RoomSnapshot, ApiError> {
        principal.require(room, Rights::READ)?;
        Ok(self.broker().snapshot(room).await?)
    }

    /// A page of the rooms with peers or values, those the caller may read
    /// (so a page may hold fewer than `limit`), and the next page's cursor.
    pub async fn rooms(
        &self,
        principal: &Principal,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, ApiError> {
        let mut page = self.broker().rooms(cursor, limit).await?;
        page.rooms
            .retain(|r| principal.rights(&r.room).contains(Rights::READ));
        Ok(page)
    }
}
