//! The room hub: owns sessions, presence and rights checks, and talks to the
//! broker. Transports (WebSocket, SSE, HTTP) are thin adapters onto it.

mod fanout;
mod session;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use fanout::{Closer, DIRECT_QUEUE, Fanout};
pub use session::{MAX_ROOMS_PER_SESSION, Next, Session};

use crate::auth::{Authenticator, Principal, Rights};
use crate::broker::{Broker, BrokerError, Draft, RoomSnapshot, RoomSummary};
use crate::config::Config;
use crate::error::ApiError;
use crate::metrics::{Metrics, Transport};
use crate::protocol::{Event, Payload, PeerInfo, RoomName, check_message_type};

/// What a client asks to publish; the hub checks rights and shapes it.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Application message type.
    pub kind: String,
    /// Payload.
    pub data: Payload,
    /// Direct recipient peer id.
    pub to: Option<String>,
    /// Topic.
    pub topic: Option<String>,
    /// Store as the topic's retained value.
    pub retain: bool,
}

/// The hub, cheap to clone; the axum state.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    auth: Arc<Authenticator>,
    broker: Broker,
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

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable => ApiError::BackendUnavailable,
            BrokerError::NoSuchPeer { .. } => ApiError::NotFound(e.to_string()),
        }
    }
}

impl Hub {
    /// A hub over the in-memory broker. `shutdown` ends every session when cancelled.
    pub fn new(config: Arc<Config>, auth: Arc<Authenticator>, shutdown: CancellationToken) -> Hub {
        let fanout = Arc::new(Fanout::new(config.outbound_queue));
        let broker = Broker::memory(fanout.clone());
        Hub {
            inner: Arc::new(Inner {
                config,
                auth,
                broker,
                fanout,
                metrics: Metrics::default(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
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

    pub(crate) fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    pub(crate) fn fanout(&self) -> &Fanout {
        &self.inner.fanout
    }

    /// Renders the Prometheus metrics.
    pub fn render_metrics(&self) -> String {
        self.inner.metrics.render(self.inner.fanout.room_count())
    }

    /// Opens a session for `principal`; it joins rooms with [`Session::join`].
    pub fn open_session(&self, principal: Principal, transport: Transport) -> Session {
        Session::open(self.clone(), principal, transport)
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

    /// Publishes a message to `room` as `from` after checking the caller's rights.
    pub async fn publish(
        &self,
        principal: &Principal,
        room: &RoomName,
        from: Arc<str>,
        req: Publish,
    ) -> Result<Arc<Event>, ApiError> {
        principal.require(room, Rights::WRITE)?;
        check_message_type(&req.kind)?;
        if req.retain {
            return Err(ApiError::BadRequest(
                "retain needs a topic and the retained-topics feature, which this relay version does not serve".into(),
            ));
        }
        let draft = Draft {
            from,
            kind: Arc::from(req.kind),
            data: req.data,
            to: req.to.map(Arc::from),
            topic: req.topic.map(Arc::from),
        };
        let event = self.broker().publish(room, draft).await?;
        Metrics::add(&self.inner.metrics.messages_in, 1);
        Ok(event)
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

    /// The rooms the caller may read that have peers, with counts.
    pub async fn rooms(&self, principal: &Principal) -> Result<Vec<RoomSummary>, ApiError> {
        let rooms = self.broker().rooms().await?;
        Ok(rooms
            .into_iter()
            .filter(|r| principal.rights(&r.room).contains(Rights::READ))
            .collect())
    }
}
