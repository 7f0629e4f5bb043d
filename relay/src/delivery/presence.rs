//! Presence coalescing: the `join`, `leave` and `state` events of a room that
//! arrive within one window go to its subscribers as one `presence` event.
//!
//! A quiet room's first change is delivered at once and opens a window;
//! changes inside the window wait for its end and go out together, and a
//! window that had changes opens another. So one change costs no added
//! latency, and a room of n peers reconnecting at once costs one frame per
//! subscriber per window instead of n: O(n) writes, not O(n²). While peers
//! keep arriving or going (a window ends with several joins and leaves), the
//! next window is twice as long, up to [`MAX_GROWTH`] times the configured
//! one, so a storm that lasts seconds still costs each subscriber a handful
//! of frames; a window without that brings it back. State changes alone
//! never lengthen it: peers moving their cursors at 20 Hz keep the short
//! window. A batch that reaches [`MAX_BATCH`] events goes out
//! at once, so the wait is bounded in size as well as in time. A room with no
//! open window holds nothing.
//!
//! The `welcome` of a peer that joins while its join waits is built from a
//! snapshot of the room's peers shared by every such joiner of the window:
//! made by the first (as it found the room) and dropped when the window
//! releases its changes. A later joiner of the window misses in it only
//! changes that wait in the window, and so reach it in the `presence` event
//! that ends it: a room of n joining at once encodes its peer list once per
//! window, not n times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::protocol::{Event, EventKind, Payload, RoomName};

/// Most events one `presence` event carries; more go out in the next one.
pub const MAX_BATCH: usize = 512;

/// How many times the configured window a busy room's window may grow to.
pub const MAX_GROWTH: u32 = 8;

/// What `offer` tells the caller to deliver now.
#[derive(Debug)]
pub enum Offered {
    /// Deliver this event now (a quiet room's first change, or a full batch).
    Now(Arc<Event>),
    /// The event waits for the end of the room's window.
    Held,
}

/// The rooms with an open window and the changes waiting in each.
pub struct Coalescer {
    window: Duration,
    open: Mutex<HashMap<RoomName, Window>>,
    /// Tracks the timers that close windows, so shutdown waits for them.
    tasks: TaskTracker,
}

/// A room's open window.
#[derive(Default)]
struct Window {
    /// The changes waiting for the window's end.
    held: Vec<Arc<Event>>,
    /// The room's peers as the window's first waiting joiner found them,
    /// shared by the window's joiners; dropped whenever changes go out.
    peers: Option<Payload>,
}

impl Coalescer {
    /// A coalescer with the given window (non-zero), whose timers `tasks`
    /// tracks.
    pub fn new(window: Duration, tasks: TaskTracker) -> Coalescer {
        Coalescer {
            window,
            open: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// Takes a presence event of `room`. `Now` means deliver it (or the
    /// batch it completed) at once; when this opened a window, `flush` is
    /// scheduled to run after it, through `owner`.
    pub fn offer<O>(&self, owner: &Weak<O>, room: &RoomName, event: Arc<Event>) -> Offered
    where
        O: Flush + Send + Sync + 'static,
    {
        self.offer_join(owner, room, event, || None).0
    }

    /// Takes a `join` of `room`, as [`Coalescer::offer`] does. When the join
    /// waits, also returns the window's shared snapshot of the room's
    /// peers for the joiner's `welcome`, made with `peers` (the room without
    /// the joiner) if this is the window's first waiting joiner. `None`: the
    /// join went out (or `peers` gave nothing), and the joiner's `welcome`
    /// needs a list of its own.
    pub fn offer_join<O>(
        &self,
        owner: &Weak<O>,
        room: &RoomName,
        event: Arc<Event>,
        peers: impl FnOnce() -> Option<Payload>,
    ) -> (Offered, Option<Payload>)
    where
        O: Flush + Send + Sync + 'static,
    {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(window) = open.get_mut(room) {
            window.held.push(event);
            if window.held.len() >= MAX_BATCH {
                let full = std::mem::take(&mut window.held);
                window.peers = None;
                return (Offered::Now(Event::presence(room, &full)), None);
            }
            if window.peers.is_none() {
                window.peers = peers();
            }
            return (Offered::Held, window.peers.clone());
        }
        // A quiet room: this change goes now, and opens a window. Outside a
        // runtime (no timer to close it) no window is opened.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            open.insert(room.clone(), Window::default());
            schedule(
                &self.tasks,
                &runtime,
                owner.clone(),
                room.clone(),
                self.window,
            );
        }
        (Offered::Now(event), None)
    }

    /// Ends `room`'s window: returns what waited in it, as one event, and
    /// what kind of window it was.
    pub fn close_window(&self, room: &RoomName) -> (Option<Arc<Event>>, Closed) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(window) = open.get_mut(room) else {
            return (None, Closed::Quiet);
        };
        if window.held.is_empty() {
            open.remove(room);
            return (None, Closed::Quiet);
        }
        window.peers = None;
        let waiting = std::mem::take(&mut window.held);
        let arrivals = waiting
            .iter()
            .filter(|e| matches!(e.kind(), EventKind::Join | EventKind::Leave))
            .count();
        let event = match waiting.as_slice() {
            [one] => one.clone(),
            many => Event::presence(room, many),
        };
        let closed = if arrivals > 1 {
            Closed::Busy
        } else {
            Closed::Active
        };
        (Some(event), closed)
    }
}

/// How a window ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Nothing came in it: the room's window is closed for good.
    Quiet,
    /// Changes came, but at most one join or leave: another window, as long
    /// as the configured one.
    Active,
    /// Several joins and leaves came: another window, twice as long.
    Busy,
}

/// The owner of a coalescer: delivers what a closing window released.
pub trait Flush {
    /// Closes `room`'s window, delivering what waited.
    fn flush(&self, room: &RoomName) -> Closed;
}

/// Closes `room`'s window after `window`, and again after each period that
/// had changes (a longer one after several joins and leaves); stops when the
/// owner is gone or a period had none.
fn schedule<O>(
    tasks: &TaskTracker,
    runtime: &tokio::runtime::Handle,
    owner: Weak<O>,
    room: RoomName,
    window: Duration,
) where
    O: Flush + Send + Sync + 'static,
{
    let timer = async move {
        let mut period = window;
        loop {
            tokio::time::sleep(period).await;
            let Some(owner) = owner.upgrade() else { return };
            period = match owner.flush(&room) {
                Closed::Quiet => return,
                Closed::Active => window,
                Closed::Busy => (period * 2).min(window * MAX_GROWTH),
            };
        }
    };
    tasks.spawn_on(timer, runtime);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{LeaveReason, PeerInfo};

    /// An owner whose windows never close during a test (the window is long).
    struct Owner;

    impl Flush for Owner {
        fn flush(&self, _room: &RoomName) -> Closed {
            Closed::Quiet
        }
    }

    /// A coalescer for room `r` whose windows stay open during a test.
    struct Fixture {
        owner: Arc<Owner>,
        coalescer: Coalescer,
        room: RoomName,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                owner: Arc::new(Owner),
                coalescer: Coalescer::new(Duration::from_secs(3600), TaskTracker::new()),
                room: RoomName::parse("r").unwrap_or_else(|e| panic!("{e}")),
            }
        }

        fn offer(&self, event: Arc<Event>) -> Offered {
            self.coalescer
                .offer(&Arc::downgrade(&self.owner), &self.room, event)
        }

        fn join(&self, id: &str) -> Arc<Event> {
            Event::join(&self.room, &peer(id))
        }
    }

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            id: Arc::from(id),
            user: Arc::from(id),
            meta: crate::protocol::null_payload(),
            state: crate::protocol::null_payload(),
        }
    }

    #[tokio::test]
    async fn a_quiet_room_goes_at_once_and_joins_not_states_lengthen_a_window() {
        let f = Fixture::new();
        let one = crate::protocol::payload_from_json("1").unwrap_or_else(|e| panic!("{e}"));
        let state = |id: &str| Event::state(&f.room, &Arc::from(id), &one);

        assert!(matches!(f.offer(f.join("a")), Offered::Now(_)));
        assert!(matches!(f.offer(state("a")), Offered::Held));
        assert!(matches!(f.offer(state("b")), Offered::Held));
        let (event, closed) = f.coalescer.close_window(&f.room);
        assert_eq!(
            closed,
            Closed::Active,
            "state changes keep the short window"
        );
        let json = event.map(|e| e.json().to_owned()).unwrap_or_default();
        assert!(
            json.starts_with(r#"{"kind":"presence","room":"r","events":[{"kind":"state""#),
            "{json}"
        );

        assert!(matches!(f.offer(f.join("b")), Offered::Held));
        let leave = Event::leave(&f.room, &Arc::from("a"), LeaveReason::Closed);
        assert!(matches!(f.offer(leave), Offered::Held));
        assert_eq!(
            f.coalescer.close_window(&f.room).1,
            Closed::Busy,
            "arrivals lengthen it"
        );

        let (nothing, closed) = f.coalescer.close_window(&f.room);
        assert!(nothing.is_none());
        assert_eq!(closed, Closed::Quiet);
        // The window closed: the next change goes at once again.
        assert!(matches!(f.offer(f.join("c")), Offered::Now(_)));
    }

    #[tokio::test]
    async fn the_joiners_of_a_window_share_one_snapshot_until_it_releases_them() {
        let f = Fixture::new();
        let owner = Arc::downgrade(&f.owner);
        let built = std::cell::Cell::new(0);
        let snapshot = |json: &str| {
            built.set(built.get() + 1);
            crate::protocol::payload_from_json(json).ok()
        };
        let (first, shared) = f
            .coalescer
            .offer_join(&owner, &f.room, f.join("a"), || snapshot(r#"["x"]"#));
        assert!(matches!(first, Offered::Now(_)) && shared.is_none());
        assert_eq!(
            built.get(),
            0,
            "a join that goes at once needs no shared snapshot"
        );

        let (held, b) = f
            .coalescer
            .offer_join(&owner, &f.room, f.join("b"), || snapshot(r#"["a"]"#));
        let (_, c) = f
            .coalescer
            .offer_join(&owner, &f.room, f.join("c"), || snapshot(r#"["a","b"]"#));
        assert!(matches!(held, Offered::Held));
        assert_eq!(built.get(), 1, "built once for the window");
        let (Some(b), Some(c)) = (b, c) else {
            panic!("waiting joiners get the shared snapshot");
        };
        assert!(Arc::ptr_eq(&b, &c), "one snapshot, shared");
        assert_eq!(c.get(), r#"["a"]"#);

        // Once the window releases its changes, the next joiner's snapshot
        // is made anew.
        let _ = f.coalescer.close_window(&f.room);
        let (_, d) = f.coalescer.offer_join(&owner, &f.room, f.join("d"), || {
            snapshot(r#"["a","b","c"]"#)
        });
        assert_eq!(built.get(), 2);
        assert_eq!(
            d.map(|d| d.get().to_owned()).as_deref(),
            Some(r#"["a","b","c"]"#)
        );
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once() {
        let f = Fixture::new();
        let _first = f.offer(f.join("first"));
        for i in 0..MAX_BATCH - 1 {
            assert!(
                matches!(f.offer(f.join(&format!("p{i}"))), Offered::Held),
                "{i}"
            );
        }
        let Offered::Now(batch) = f.offer(f.join("last")) else {
            panic!("a full batch waited");
        };
        assert_eq!(batch.json().matches(r#"{"kind":"join""#).count(), MAX_BATCH);
    }
}
