//! One live connection (WebSocket or SSE) as the hub sees it: a peer id, the
//! rooms it joined, and its outbound events. Events come from three bounded
//! sources: a short startup queue (welcome, answers to ops), the peer's direct
//! queue, and each joined room's shared ring. Falling behind any of them closes
//! the session as a slow consumer; it never grows the relay's memory.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;

use tokio_stream::StreamMap;

use super::Hub;
use crate::auth::Principal;
use crate::broker::Will;
use crate::delivery::{Inbox, Lagged, RingReceiver};
use crate::error::ApiError;
use crate::guard::{PublishBucket, SessionPermit};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{
    Control, Envelope, Event, LeaveReason, PeerInfo, PeerList, RoomName, null_payload,
};

mod feeds;
mod ops;

use self::feeds::RoomFeed;

/// Rooms one connection may join at once; each costs a ring subscription and a
/// presence entry.
pub const MAX_ROOMS_PER_SESSION: usize = 100;
/// Answers to ops queued for a session before it counts as a slow consumer. A
/// join's burst (welcome, retained values, replay) is bounded by the topic and
/// history limits instead.
const MAX_PENDING: usize = 256;
/// What a session should do next.
#[derive(Debug)]
pub enum Next {
    /// Write this event.
    Event(Arc<Event>),
    /// Close the session, telling the client why.
    Close(ApiError),
}

/// A token being verified for a session's refresh.
type Refreshing = Pin<Box<dyn Future<Output = Result<Principal, ApiError>> + Send + Sync>>;

/// A live connection's state in the hub.
pub struct Session {
    hub: Hub,
    /// The session's peer id; its user and meta are the principal's.
    id: Arc<str>,
    principal: Principal,
    transport: Transport,
    pending: Pending,
    /// Direct messages, and the reason when something outside asks the
    /// session to close.
    direct: Arc<Inbox>,
    /// A token refresh being verified (SSE); events wait until it is applied.
    /// Boxed: verifying may fetch keys, a large future that would otherwise
    /// sit in every idle session.
    refreshing: Option<Box<Refreshing>>,
    feeds: StreamMap<RoomName, RoomFeed>,
    /// Rooms joined as a peer (a topic watch is in `feeds` but not here).
    /// A short list: most sessions are in one room, and a set cost 84 B.
    present: Vec<RoomName>,
    /// The room of the URL the session was opened on (an SSE stream, or a
    /// WebSocket on `/rooms/{room}`): losing the right to read it ends the
    /// session; other rooms (joined by op) are left one by one.
    home: Option<RoomName>,
    leave_reason: LeaveReason,
    /// Set when `push` found the queue full: the client is not reading.
    overflowed: bool,
    /// Set once `end` ran.
    ended: bool,
    publishes: PublishBucket,
    /// Holds the session's place under the connection caps until it drops.
    _permit: Option<SessionPermit>,
}

impl Session {
    pub(super) fn open(
        hub: Hub,
        principal: Principal,
        transport: Transport,
        permit: SessionPermit,
    ) -> Session {
        let id = new_peer_id(&principal.sub);
        let direct = hub.fanout().register_peer(id.clone());
        let hub_bucket = hub.guard().session_bucket();
        hub.metrics()
            .sessions(transport)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Session {
            hub,
            id,
            principal,
            transport,
            pending: Pending::default(),
            direct,
            refreshing: None,
            // Room for the one room most sessions join (StreamMap grows to 4).
            feeds: StreamMap::with_capacity(1),
            present: Vec::new(),
            home: None,
            leave_reason: LeaveReason::Closed,
            overflowed: false,
            ended: false,
            publishes: hub_bucket,
            _permit: Some(permit),
        }
    }

    /// The hub this session belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// This session's peer id.
    pub fn peer_id(&self) -> &Arc<str> {
        &self.id
    }

    /// This session's peer, as it joins a room: its id, and its principal's
    /// user and meta.
    fn me(&self) -> PeerInfo {
        PeerInfo {
            id: self.id.clone(),
            user: self.principal.sub.clone(),
            meta: self.principal.meta.clone(),
            state: null_payload(),
        }
    }

    /// True once the relay drains; the session is woken when it starts (its
    /// waker is registered before the look).
    pub fn poll_draining(&self, cx: &mut Context<'_>) -> bool {
        self.direct.register(cx);
        self.hub.fanout().is_draining()
    }

    /// Unix seconds at which the session's token expires.
    pub fn expires_at(&self) -> Option<u64> {
        self.principal.expires_at
    }

    /// Marks `room` as the room of the URL this session was opened on: if a
    /// refreshed token no longer grants it, the whole session ends.
    pub fn set_home(&mut self, room: RoomName) {
        self.home = Some(room);
    }

    /// The room of the URL this session was opened on, if any.
    pub fn home(&self) -> Option<&RoomName> {
        self.home.as_ref()
    }

    /// Subscribes to `room`'s local ring; returns the receiver and the
    /// room's name as the room table holds it, which the session keeps
    /// (for its home room too) instead of its own copy.
    fn subscribe(&mut self, room: &RoomName) -> (RingReceiver, RoomName) {
        let (rx, shared) = self.hub.fanout().subscribe_named(room);
        if self.home.as_ref() == Some(&shared) {
            self.home = Some(shared.clone());
        }
        (rx, shared)
    }

    /// Records why the session ends, for the `leave` events sent when it drops.
    pub fn set_leave_reason(&mut self, reason: LeaveReason) {
        self.leave_reason = reason;
    }

    /// Queues a `welcome` with no room, for a session that joins rooms by op.
    pub fn greet(&mut self) {
        self.push(Event::welcome(
            None,
            &self.me(),
            &PeerList::Own(Vec::new()),
            None,
        ));
    }

    /// The next event to write, or why to close. Cancel-safe.
    pub async fn next(&mut self) -> Next {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next event to write, or why to close: the session's own
    /// queue first, then a close request, direct messages and the rooms. A
    /// session loop written by hand polls this instead of holding a future.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        loop {
            if let Some(refreshing) = &mut self.refreshing {
                let verified = std::task::ready!(refreshing.as_mut().as_mut().poll(cx));
                self.refreshing = None;
                if let Err(e) = self.apply_refresh(verified) {
                    self.push(e.to_event(None));
                }
            }
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(Next::Event(event));
            }
            let event = match self.direct.poll_next(cx) {
                Poll::Ready(Ok(Envelope::Event(event))) => event,
                // A new token sent to this session (SSE refresh): applied
                // here; a control message has no frame to write.
                Poll::Ready(Ok(Envelope::Control(control))) => {
                    let Control::Refresh { token, .. } = *control;
                    let hub = self.hub.clone();
                    self.refreshing = Some(Box::new(Box::pin(async move {
                        hub.auth().verify(&token).await
                    })));
                    continue;
                }
                Poll::Ready(Err(reason)) => return Poll::Ready(Next::Close(reason)),
                Poll::Pending if self.feeds.is_empty() => return Poll::Pending,
                Poll::Pending => match Pin::new(&mut self.feeds).poll_next(cx) {
                    Poll::Ready(Some((_, Ok(event)))) => event,
                    Poll::Ready(Some((_, Err(Lagged)))) => {
                        return Poll::Ready(Next::Close(ApiError::SlowConsumer));
                    }
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                },
            };
            return Poll::Ready(Next::Event(event));
        }
    }

    /// True when the session's own queue (answers to ops, warnings) is full:
    /// its client is not reading.
    pub fn is_backlogged(&self) -> bool {
        self.overflowed
    }

    /// Queues an event for this session alone (an error for a frame, say);
    /// past `MAX_PENDING` the session is closed as a slow consumer.
    pub fn push(&mut self, event: Arc<Event>) {
        if self.pending.len() >= MAX_PENDING {
            self.overflowed = true;
            self.direct.close(ApiError::SlowConsumer);
            return;
        }
        self.pending.push_back(event);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

impl Session {
    /// Ends the session now, as dropping it would: its feeds stop, and its
    /// peer leaves its rooms (with `leave` and its wills, in the background).
    /// A transport calls it to let peers know at once, before its last
    /// frames have gone out to a slow client. Only the first call acts.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let fanout = self.hub.fanout();
        fanout.unregister_peer(&self.id);
        let rooms: Vec<RoomName> = self.feeds.keys().cloned().collect();
        // Drop the ring subscriptions before releasing the rooms.
        self.feeds = StreamMap::new();
        let unwatched: Vec<RoomName> = rooms.into_iter().filter(|r| fanout.release(r)).collect();
        self.hub
            .metrics()
            .sessions(self.transport)
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let present = std::mem::take(&mut self.present);
        if present.is_empty() && unwatched.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.hub.clone();
        let id = self.id.clone();
        let user = self.principal.sub.clone();
        let reason = self.leave_reason;
        let tasks = self.hub.tasks().clone();
        let leaving = async move {
            let broker = hub.broker();
            for room in &present {
                // Rooms still joined were not left with `leave`: their wills fire.
                // Immediate wills go out before the leave, so a watcher sees the
                // will's value before the peer disappears; delayed ones wait apart.
                match broker.take_will(room, &id).await {
                    Ok(Some(will)) if will.after.is_none() => {
                        fire_will(&hub, room, will, id.clone()).await;
                    }
                    Ok(Some(will)) => {
                        // Its delay counts from now, and it waits in the
                        // broker, so any instance alive when it falls due
                        // fires it (see `Hub::fire_due_wills`).
                        if let Err(e) = broker.defer_will(room, &id, &user, will).await {
                            tracing::warn!(%room, error = %e, "delayed will lost: could not store it");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%room, error = %e, "will lookup after close failed"),
                }
                if let Err(e) = broker.leave(room, &id, reason).await {
                    tracing::warn!(%room, error = %e, "leave after close failed");
                }
            }
            for room in &unwatched {
                if !hub.fanout().is_watched(room)
                    && let Err(e) = broker.unwatch(room).await
                {
                    tracing::warn!(%room, error = %e, "unwatch failed");
                }
            }
        };
        tasks.spawn_on(leaving, &handle);
    }
}

/// Releases a room's local subscription; when it was the last one, the broker
/// stops watching the room (in the background).
fn release_room(hub: &Hub, room: &RoomName) {
    if hub.fanout().release(room) {
        let hub = hub.clone();
        let room = room.clone();
        hub.tasks().clone().spawn(async move {
            if !hub.fanout().is_watched(&room)
                && let Err(e) = hub.broker().unwatch(&room).await
            {
                tracing::warn!(%room, error = %e, "unwatch failed");
            }
        });
    }
}

/// Makes a will's retained publish now (an immediate will at its
/// connection's end).
async fn fire_will(hub: &Hub, room: &RoomName, will: Will, from: Arc<str>) {
    if let Err(e) = hub.broker().set_retained(room, will.into_draft(from)).await {
        tracing::warn!(%room, error = %e, "will not fired");
    }
}

impl Session {
    /// The relay's settings.
    pub fn config(&self) -> &crate::config::Config {
        self.hub.config()
    }

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
/// The session's own short queue (its `welcome`, retained values, replays,
/// answers to ops): boxed while it holds something, as it is busy only
/// around a join or an op, and an empty one inline cost every idle session
/// 32 B.
#[derive(Default)]
#[allow(clippy::box_collection, reason = "8 B inline in every idle session")]
struct Pending(Option<Box<VecDeque<Arc<Event>>>>);

impl Pending {
    fn queue(&mut self) -> &mut VecDeque<Arc<Event>> {
        self.0.get_or_insert_with(Box::default)
    }

    fn push_back(&mut self, event: Arc<Event>) {
        self.queue().push_back(event);
    }

    fn extend(&mut self, events: impl IntoIterator<Item = Arc<Event>>) {
        let mut events = events.into_iter().peekable();
        if events.peek().is_some() {
            self.queue().extend(events);
        }
    }

    /// The next event; the buffer is given back once the queue is empty.
    fn pop_front(&mut self) -> Option<Arc<Event>> {
        let queue = self.0.as_mut()?;
        let event = queue.pop_front();
        if queue.is_empty() {
            self.0 = None;
        }
        event
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }
}

/// `<sub>.<random>`: 9 random bytes as 12 url-safe characters.
fn new_peer_id(sub: &str) -> Arc<str> {
    Arc::from(format!("{sub}.{}", crate::random::random_id(9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use crate::auth::Rights;
    use crate::config::Config;
    use crate::protocol::{EventId, EventKind, Publish, payload_from_text};
    use tokio_util::sync::CancellationToken;

    fn hub() -> Hub {
        let mut config = Config::defaults();
        config.jwt_secret = Some("test".into());
        let auth = match Authenticator::from_config(&config) {
            Ok(a) => Arc::new(a),
            Err(e) => panic!("{e}"),
        };
        Hub::new(Arc::new(config), auth, CancellationToken::new())
    }

    fn principal(hub: &Hub) -> Principal {
        let mut p = hub.auth().anonymous();
        p.grants = Arc::new(crate::auth::Grants::new(vec![(
            crate::pattern::RoomPattern::Any,
            Rights::ALL,
        )]));
        p
    }

    async fn publish(hub: &Hub, p: &Principal, room: &RoomName, text: &str) -> EventId {
        let req = Publish {
            kind: "m".into(),
            ..Publish::data(payload_from_text(text))
        };
        match hub.publish(p, room, Arc::from("pub"), req).await {
            Ok(e) => e.id().unwrap_or_default(),
            Err(e) => panic!("{e}"),
        }
    }

    async fn drain(session: &mut Session) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Next::Event(e)) = futures_util::FutureExt::now_or_never(session.next()) {
            if e.kind() == EventKind::Message {
                out.push(e.json().to_string());
            }
        }
        out
    }

    /// A message published after the ring subscription but before the history
    /// read is in both: the resumed session must see it exactly once.
    #[tokio::test]
    async fn replay_and_live_overlap_is_delivered_once() {
        let hub = hub();
        let p = principal(&hub);
        let room = RoomName::parse("overlap").unwrap_or_else(|e| panic!("{e}"));
        let first = publish(&hub, &p, &room, "before-1").await;
        publish(&hub, &p, &room, "before-2").await;

        let mut session =
            match hub.open_session(p.clone(), Transport::WebSocket, [127, 0, 0, 1].into()) {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
        // join(), step by step, with a publish between subscribing and reading history.
        let rx = hub.fanout().subscribe(&room);
        let snapshot = match hub.broker().join(&room, session.me()).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        publish(&hub, &p, &room, "overlap").await;
        let start = match session
            .start_of(&room, None, Some(first), snapshot.last_id)
            .await
        {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        session.start_feed(rx, room.clone(), None, start);
        publish(&hub, &p, &room, "after").await;

        let messages = drain(&mut session).await;
        let order: Vec<&str> = ["before-2", "overlap", "after"].to_vec();
        assert_eq!(messages.len(), order.len(), "{messages:#?}");
        for (json, want) in messages.iter().zip(order) {
            assert!(
                json.contains(&format!("\"data\":\"{want}\"")),
                "{json} should carry {want}"
            );
        }
    }
}
