//! Local fan-out: the events that reach this relay instance are handed to its
//! sessions here. Each room has one bounded ring shared by all its local
//! subscribers (an event is stored once, whatever the room's size); each peer
//! has a small bounded inbox for direct messages.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_util::task::TaskTracker;

use super::presence::{Closed, Coalescer, Flush, Offered};
use super::ring::{RingReceiver, RoomRing};
use crate::error::ApiError;
use crate::protocol::{Control, Envelope, Event, EventKind, Payload, RoomName};

/// Capacity of a peer's direct inbox.
pub const DIRECT_QUEUE: usize = 256;

/// A peer's mailbox: its bounded queue of direct messages and the reason it
/// was asked to close, with one waker for the session that reads both. It
/// allocates nothing until the first message (most peers never get one; a
/// channel cost 800 B per peer, a cancellation token another 100 B).
#[derive(Debug, Default)]
pub struct Inbox {
    /// The queue and the close request, under one lock (64 B an inbox).
    mail: Mutex<Mail>,
    waker: AtomicWaker,
}

/// What waits in an inbox.
#[derive(Debug, Default)]
struct Mail {
    /// Boxed while it holds messages: an empty queue inline cost each idle
    /// peer 32 B.
    #[allow(clippy::box_collection, reason = "8 B inline in every idle peer")]
    queue: Option<Box<VecDeque<Envelope>>>,
    /// Why the session was asked to close; the first reason wins. Boxed: rare.
    closed: Option<Box<ApiError>>,
}

impl Inbox {
    /// Queues a direct message or control message; false when the inbox is full.
    fn push(&self, event: Envelope) -> bool {
        {
            let mut mail = self.lock();
            let queue = mail.queue.get_or_insert_with(Box::default);
            if queue.len() >= DIRECT_QUEUE {
                return false;
            }
            queue.push_back(event);
        }
        self.waker.wake();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mail> {
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the peer's session to close with `reason`; the first reason wins.
    pub fn close(&self, reason: ApiError) {
        self.lock().closed.get_or_insert_with(|| Box::new(reason));
        self.waker.wake();
    }

    /// Why the session was asked to close, once it was; else the next direct
    /// message, once there is one. Only the peer's own session polls this (the
    /// inbox keeps one waker).
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Envelope, ApiError>> {
        // Registered before looking, so a push or close in between still wakes.
        self.waker.register(cx.waker());
        let mut mail = self.lock();
        if let Some(reason) = &mail.closed {
            return Poll::Ready(Err(ApiError::clone(reason)));
        }
        let Some(queue) = mail.queue.as_mut() else {
            return Poll::Pending;
        };
        let event = queue.pop_front();
        if queue.is_empty() {
            // Give the buffer back: an inbox is usually empty for a long time.
            mail.queue = None;
        }
        match event {
            Some(event) => Poll::Ready(Ok(event)),
            None => Poll::Pending,
        }
    }

    /// Registers the session's waker without looking at the queue: a drain
    /// (or anything else that wakes the inbox) that starts later wakes it.
    pub fn register(&self, cx: &mut Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// The next direct message, or why the session must close. Cancel-safe.
    pub async fn recv(&self) -> Result<Envelope, ApiError> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The instance's local rooms and peers.
pub struct Fanout {
    rooms: Mutex<HashMap<RoomName, Arc<RoomRing>>>,
    peers: Mutex<HashMap<Arc<str>, Arc<Inbox>>>,
    room_capacity: usize,
    /// Coalesces presence changes (none: each goes out as it comes).
    presence: Option<Coalescer>,
    /// Set when the relay starts draining; see [`Fanout::start_drain`].
    draining: AtomicBool,
    /// This fan-out, for the timers that close presence windows.
    me: Weak<Fanout>,
    /// Tracks every task the relay spawns in the background (presence
    /// timers here; the hub's sessions, sweeps and leaves share it), so
    /// shutdown waits for all of them.
    tasks: TaskTracker,
}

impl Fanout {
    /// Fan-out whose room rings hold `room_capacity` events (a subscriber that
    /// falls further behind than that is closed as a slow consumer), and that
    /// coalesces each room's presence changes within `presence_window` (zero:
    /// each change goes out alone, at once).
    pub fn new(room_capacity: usize, presence_window: Duration) -> Arc<Fanout> {
        let tasks = TaskTracker::new();
        Arc::new_cyclic(|me| Fanout {
            rooms: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            room_capacity,
            presence: (!presence_window.is_zero())
                .then(|| Coalescer::new(presence_window, tasks.clone())),
            draining: AtomicBool::new(false),
            me: me.clone(),
            tasks,
        })
    }

    /// Hands an event to this instance's recipients: the one peer of a direct
    /// message, or every local subscriber of the room (presence changes
    /// through the room's coalescing window).
    pub fn deliver(&self, room: &RoomName, event: Arc<Event>) {
        if let Some(to) = event.recipient() {
            self.direct(&to, event);
            return;
        }
        let Some(ring) = self.ring(room) else { return };
        let event = match &self.presence {
            Some(presence)
                if matches!(
                    event.kind(),
                    EventKind::Join | EventKind::Leave | EventKind::State
                ) =>
            {
                match presence.offer(&self.me, room, event) {
                    Offered::Now(event) => event,
                    Offered::Held => return,
                }
            }
            _ => event,
        };
        ring.send(event);
    }

    /// Delivers a local peer's `join` as [`Fanout::deliver`] does, and
    /// returns the peers its `welcome` shares with the window's other
    /// joiners when the join waits in the room's presence window (`peers`
    /// makes them, the room without the joiner, for the window's first).
    /// `None`: the joiner's `welcome` needs a list of its own.
    pub fn deliver_join(
        &self,
        room: &RoomName,
        join: Arc<Event>,
        peers: impl FnOnce() -> Option<Payload>,
    ) -> Option<Payload> {
        let ring = self.ring(room)?;
        let Some(presence) = &self.presence else {
            ring.send(join);
            return None;
        };
        match presence.offer_join(&self.me, room, join, peers) {
            (Offered::Now(event), _) => {
                ring.send(event);
                None
            }
            (Offered::Held, shared) => shared,
        }
    }

    /// The room's ring, when it has local subscribers. The room table is
    /// not held while the ring wakes its subscribers.
    fn ring(&self, room: &RoomName) -> Option<Arc<RoomRing>> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room)
            .cloned()
    }

    /// Queues an event for one local peer; a peer whose queue is full is closed as a
    /// slow consumer. Returns false when the peer is not on this instance.
    pub fn direct(&self, peer: &str, event: Arc<Event>) -> bool {
        self.post(peer, Envelope::Event(event))
    }

    /// Queues a control message for its local peer, as [`Fanout::direct`]
    /// queues an event; false when the peer is not on this instance.
    pub fn control(&self, control: Control) -> bool {
        let to = control.to().clone();
        self.post(&to, Envelope::Control(Box::new(control)))
    }

    fn post(&self, peer: &str, envelope: Envelope) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inbox) = peers.get(peer) else {
            return false;
        };
        if !inbox.push(envelope) {
            inbox.close(ApiError::SlowConsumer);
        }
        true
    }

    /// Subscribes to a room's local ring, creating it for the first subscriber.
    pub fn subscribe(&self, room: &RoomName) -> RingReceiver {
        self.subscribe_named(room).0
    }

    /// [`Fanout::subscribe`], with the room's name as the room table holds
    /// it: a session keeps that one, shared by every subscriber of the room,
    /// rather than its own copy (40 B in every idle session).
    pub fn subscribe_named(&self, room: &RoomName) -> (RingReceiver, RoomName) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        match rooms.get_key_value(room) {
            Some((name, ring)) => (ring.subscribe(), name.clone()),
            None => {
                let ring = RoomRing::new(self.room_capacity);
                let rx = ring.subscribe();
                rooms.insert(room.clone(), ring);
                (rx, room.clone())
            }
        }
    }

    /// Called after a subscriber dropped its receiver: forgets the room when it was
    /// the last local one, and then returns true (the broker may stop watching it).
    pub fn release(&self, room: &RoomName) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if rooms
            .get(room)
            .is_some_and(|ring| ring.receiver_count() == 0)
        {
            rooms.remove(room);
            return true;
        }
        false
    }

    /// True when the room has local subscribers.
    pub fn is_watched(&self, room: &RoomName) -> bool {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(room)
    }

    /// Every room with local subscribers.
    pub fn watched_rooms(&self) -> Vec<RoomName> {
        self.rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Tells every local session that the relay is draining: the flag is set,
    /// then each peer's inbox is woken, and each session's next poll sees it
    /// ([`Fanout::is_draining`]) and picks its own moment to close. One flag
    /// and one wake per session at shutdown, instead of a shutdown future
    /// held (and registered) by every idle session.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for inbox in peers.values() {
            inbox.waker.wake();
        }
    }

    /// True once [`Fanout::start_drain`] ran. A session registers its inbox
    /// waker before asking, so a drain that starts just after still wakes it.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Registers a local peer; returns its inbox.
    pub fn register_peer(&self, id: Arc<str>) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.insert(id, inbox.clone());
        inbox
    }

    /// Forgets a local peer.
    pub fn unregister_peer(&self, id: &str) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.remove(id);
    }

    /// The tracker of the relay's background tasks.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Local peers (live sessions) on this instance.
    pub fn peer_count(&self) -> usize {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Rooms with at least one local subscriber.
    pub fn room_count(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Flush for Fanout {
    fn flush(&self, room: &RoomName) -> Closed {
        let Some(presence) = &self.presence else {
            return Closed::Quiet;
        };
        let (waited, closed) = presence.close_window(room);
        if let (Some(event), Some(ring)) = (waited, self.ring(room)) {
            ring.send(event);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(event: Arc<Event>) -> Envelope {
        Envelope::Event(event)
    }

    fn text(envelope: &Envelope) -> String {
        match envelope {
            Envelope::Event(event) => event.json().to_owned(),
            Envelope::Control(control) => control.json(),
        }
    }

    #[tokio::test]
    async fn an_inbox_is_bounded_keeps_order_and_frees_its_buffer() {
        let inbox = Inbox::default();
        for i in 0..DIRECT_QUEUE {
            assert!(inbox.push(mail(Event::error("x", &i.to_string(), None, None))));
        }
        assert!(!inbox.push(mail(Event::error("x", "over", None, None))));
        for i in 0..DIRECT_QUEUE {
            let event = inbox.recv().await.map(|e| text(&e));
            assert!(
                matches!(&event, Ok(json) if json.contains(&format!("\"{i}\""))),
                "{event:?}"
            );
        }
        assert!(inbox.lock().queue.is_none());
        // A message pushed before anyone waits is not missed.
        assert!(inbox.push(mail(Event::error("x", "late", None, None))));
        assert!(matches!(inbox.recv().await, Ok(e) if text(&e).contains("late")));
    }

    /// How long a woken session may take to see its message.
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

    #[tokio::test]
    async fn a_waiting_session_is_woken_by_a_message_and_by_a_close() {
        let inbox = Arc::new(Inbox::default());
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.recv().await.map(|e| text(&e)) }
        });
        tokio::task::yield_now().await;
        assert!(inbox.push(mail(Event::error("x", "hello", None, None))));
        let got = tokio::time::timeout(DEADLINE, waiting).await;
        assert!(
            matches!(&got, Ok(Ok(Ok(json))) if json.contains("hello")),
            "{got:?}"
        );

        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.recv().await.map(|e| text(&e)) }
        });
        tokio::task::yield_now().await;
        inbox.close(ApiError::SlowConsumer);
        inbox.close(ApiError::Internal);
        let got = tokio::time::timeout(DEADLINE, waiting).await;
        assert!(
            matches!(got, Ok(Ok(Err(ApiError::SlowConsumer)))),
            "{got:?}"
        );
    }
}
