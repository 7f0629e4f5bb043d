//! The room hub: owns sessions, presence and rights checks, and talks to the
//! broker. Transports (WebSocket, SSE, HTTP) are thin adapters onto it.

mod publish;
mod session;
mod sweeper;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::broker::{MAX_WILL_DELAY_SECS, Will};
pub use crate::delivery::{DIRECT_QUEUE, Fanout, Inbox, Lagged, RingReceiver};
pub use crate::random::random_id;
pub use session::{MAX_ROOMS_PER_SESSION, Next, Session};

use crate::auth::{Authenticator, Principal, Rights};
use crate::broker::{Broker, Limits, MemoryBroker, RoomPage, RoomSnapshot};
use crate::config::Config;
use crate::error::ApiError;
use crate::guard::{Guard, GuardLimits};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{Control, Payload, PeerInfo, RoomName};

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
        Hub::with_broker(config, auth, shutdown, broker, fanout)
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
        )
        .await?;
        Ok(Hub::with_broker(config, auth, shutdown, redis, fanout))
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

    /// Tracks the relay's tasks (sessions, timers, sweeps) so shutdown can
    /// wait for them: the fan-out's one tracker.
    pub fn tasks(&self) -> &TaskTracker {
        self.inner.fanout.tasks()
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
