//! One live connection (WebSocket or SSE) as the hub sees it: a peer id, the
//! rooms it joined, and its outbound events. Events come from three bounded
//! sources: a short startup queue (welcome, answers to ops), the peer's direct
//! queue, and each joined room's shared ring. Falling behind any of them closes
//! the session as a slow consumer; it never grows the relay's memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use futures_util::Stream;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Closer, Hub, Publish};
use crate::auth::{Principal, Rights};
use crate::error::ApiError;
use crate::metrics::{Metrics, Transport};
use crate::protocol::{
    Event, EventId, EventKind, LeaveReason, Op, PeerInfo, RoomName, null_payload,
};

/// Rooms one connection may join at once; each costs a ring subscription and a
/// presence entry.
pub const MAX_ROOMS_PER_SESSION: usize = 100;
/// Events queued for a session outside the room rings (welcomes and answers to
/// ops) before it counts as a slow consumer.
const MAX_PENDING: usize = 256;

/// What a session should do next.
#[derive(Debug)]
pub enum Next {
    /// Write this event.
    Event(Arc<Event>),
    /// Close the session, telling the client why.
    Close(ApiError),
}

/// A live connection's state in the hub.
pub struct Session {
    hub: Hub,
    me: PeerInfo,
    principal: Principal,
    transport: Transport,
    closer: Arc<Closer>,
    pending: VecDeque<Arc<Event>>,
    direct: mpsc::Receiver<Arc<Event>>,
    feeds: StreamMap<RoomName, RoomFeed>,
    leave_reason: LeaveReason,
}

impl Session {
    pub(super) fn open(hub: Hub, principal: Principal, transport: Transport) -> Session {
        let me = PeerInfo {
            id: new_peer_id(&principal.sub),
            user: principal.sub.clone(),
            meta: principal.meta.clone(),
            state: null_payload(),
        };
        let closer = Arc::new(Closer::default());
        let direct = hub.fanout().register_peer(me.id.clone(), closer.clone());
        hub.metrics()
            .sessions(transport)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Session {
            hub,
            me,
            principal,
            transport,
            closer,
            pending: VecDeque::new(),
            direct,
            feeds: StreamMap::new(),
            leave_reason: LeaveReason::Closed,
        }
    }

    /// This session's peer id.
    pub fn peer_id(&self) -> &Arc<str> {
        &self.me.id
    }

    /// Unix seconds at which the session's token expires.
    pub fn expires_at(&self) -> Option<u64> {
        self.principal.expires_at
    }

    /// Records why the session ends, for the `leave` events sent when it drops.
    pub fn set_leave_reason(&mut self, reason: LeaveReason) {
        self.leave_reason = reason;
    }

    /// Queues a `welcome` with no room, for a session that joins rooms by op.
    pub fn greet(&mut self) {
        self.push(Event::welcome(None, &self.me, &[], None));
    }

    /// Joins `room`: subscribes to its ring first, then enters presence, so no
    /// event after the snapshot can be missed; the `welcome` goes out first.
    pub async fn join(&mut self, room: RoomName) -> Result<(), ApiError> {
        self.principal.require(&room, Rights::READ)?;
        if self.feeds.contains_key(&room) {
            return Err(ApiError::BadRequest(format!("already joined room {room}")));
        }
        if self.feeds.len() >= MAX_ROOMS_PER_SESSION {
            return Err(ApiError::BadRequest(format!(
                "a connection may join at most {MAX_ROOMS_PER_SESSION} rooms"
            )));
        }
        let rx = self.hub.fanout().subscribe(&room);
        let snapshot = match self.hub.broker().join(&room, self.me.clone()).await {
            Ok(s) => s,
            Err(e) => {
                drop(rx);
                self.hub.fanout().release(&room);
                return Err(e.into());
            }
        };
        let feed = RoomFeed {
            inner: BroadcastStream::new(rx),
            skip_through: snapshot.last_id,
            me: self.me.id.clone(),
        };
        self.feeds.insert(room.clone(), feed);
        self.push(Event::welcome(
            Some(&room),
            &self.me,
            &snapshot.peers,
            snapshot.last_id,
        ));
        Ok(())
    }

    /// Leaves `room` cleanly (reason `closed`).
    pub async fn leave(&mut self, room: &RoomName) -> Result<(), ApiError> {
        if self.feeds.remove(room).is_none() {
            return Err(ApiError::BadRequest(format!("not joined to room {room}")));
        }
        self.hub.fanout().release(room);
        self.hub
            .broker()
            .leave(room, &self.me.id, LeaveReason::Closed)
            .await?;
        Ok(())
    }

    /// The next event to write, or why to close. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        if let Some(event) = self.pending.pop_front() {
            return Next::Event(event);
        }
        tokio::select! {
            biased;
            reason = self.closer.closed() => Next::Close(reason),
            Some(event) = self.direct.recv() => Next::Event(event),
            Some((_, item)) = self.feeds.next(), if !self.feeds.is_empty() => match item {
                Ok(event) => Next::Event(event),
                Err(_) => Next::Close(ApiError::SlowConsumer),
            },
        }
    }

    /// Handles one op; its answer (`ack`, `pong` or `error`) is queued as an event.
    pub async fn handle(
        &mut self,
        op: Op,
        reference: Option<Box<RawValue>>,
        default_room: Option<&RoomName>,
    ) {
        let reference = reference.as_deref();
        match self.apply(op, default_room).await {
            Ok(Answer::Pong) => self.push(Event::pong(reference)),
            Ok(Answer::Done(id)) => {
                if let Some(r) = reference {
                    self.push(Event::ack(r, id));
                }
            }
            Err(e) => self.push(e.to_event(reference)),
        }
    }

    /// Queues an event for this session alone (an error for a frame, say).
    pub fn push(&mut self, event: Arc<Event>) {
        if self.pending.len() >= MAX_PENDING {
            self.closer.close(ApiError::SlowConsumer);
            return;
        }
        self.pending.push_back(event);
    }

    async fn apply(&mut self, op: Op, default_room: Option<&RoomName>) -> Result<Answer, ApiError> {
        let room_of = |room: Option<String>| -> Result<RoomName, ApiError> {
            match room {
                Some(r) => Ok(RoomName::parse(&r)?),
                None => default_room
                    .cloned()
                    .ok_or_else(|| ApiError::BadRequest("this op needs a room".into())),
            }
        };
        match op {
            Op::Pub {
                room,
                kind,
                data,
                to,
                topic,
                retain,
            } => {
                let room = room_of(room)?;
                let req = Publish {
                    kind,
                    data,
                    to,
                    topic,
                    retain,
                };
                let event = self
                    .hub
                    .publish(&self.principal, &room, self.me.id.clone(), req)
                    .await?;
                Ok(Answer::Done(event.id()))
            }
            Op::Join { room, since: _ } => {
                let room = room_of(room)?;
                self.join(room).await?;
                Ok(Answer::Done(None))
            }
            Op::Leave { room } => {
                let room = room_of(room)?;
                self.leave(&room).await?;
                Ok(Answer::Done(None))
            }
            Op::State { room, state } => {
                let room = room_of(room)?;
                self.principal.require(&room, Rights::WRITE)?;
                if !self.feeds.contains_key(&room) {
                    return Err(ApiError::BadRequest(format!("not joined to room {room}")));
                }
                self.hub
                    .broker()
                    .set_state(&room, &self.me.id, state)
                    .await?;
                Ok(Answer::Done(None))
            }
            Op::Refresh { token } => {
                let fresh = self.hub.auth().verify(&token).await?;
                if fresh.sub != self.principal.sub {
                    return Err(ApiError::Forbidden(
                        "a refresh token must carry the same sub".into(),
                    ));
                }
                self.principal = fresh;
                Ok(Answer::Done(None))
            }
            Op::Ping => Ok(Answer::Pong),
        }
    }
}

enum Answer {
    Done(Option<EventId>),
    Pong,
}

impl Drop for Session {
    fn drop(&mut self) {
        let fanout = self.hub.fanout();
        fanout.unregister_peer(&self.me.id);
        let rooms: Vec<RoomName> = self.feeds.keys().cloned().collect();
        // Drop the ring subscriptions before releasing the rooms.
        self.feeds = StreamMap::new();
        for room in &rooms {
            fanout.release(room);
        }
        self.hub
            .metrics()
            .sessions(self.transport)
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if rooms.is_empty() {
            return;
        }
        let hub = self.hub.clone();
        let id = self.me.id.clone();
        let reason = self.leave_reason;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for room in rooms {
                    if let Err(e) = hub.broker().leave(&room, &id, reason).await {
                        tracing::warn!(%room, error = %e, "leave after close failed");
                    }
                }
            });
        }
    }
}

impl Session {
    /// The relay's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.hub.metrics()
    }

    /// Counts a written event (or batch) in the metrics.
    pub fn count_out(&self, n: u64) {
        Metrics::add(&self.hub.metrics().messages_out, n);
    }
}

/// A joined room's events for one session: the shared ring, minus what the
/// welcome snapshot already covered and the session's own `join`.
struct RoomFeed {
    inner: BroadcastStream<Arc<Event>>,
    skip_through: Option<EventId>,
    me: Arc<str>,
}

impl Stream for RoomFeed {
    type Item = Result<Arc<Event>, BroadcastStreamRecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => event,
                other => return other,
            };
            if item.kind() == EventKind::Join && item.subject() == Some(&*self.me) {
                continue;
            }
            if let (Some(skip), Some(id)) = (self.skip_through, item.id()) {
                if id <= skip {
                    continue;
                }
                self.skip_through = None;
            }
            return Poll::Ready(Some(Ok(item)));
        }
    }
}

/// `<sub>.<random>`: 9 random bytes as 12 url-safe characters.
fn new_peer_id(sub: &str) -> Arc<str> {
    let mut bytes = [0u8; 9];
    if getrandom::fill(&mut bytes).is_err() {
        // No entropy source: fall back to time and a counter, still unique per process.
        let n =
            crate::protocol::now_ms() ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
    }
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Arc::from(format!("{sub}.{random}"))
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
