//! Presence coalescing: the `join`, `leave` and `state` events of a room that
//! arrive within one window go to its subscribers as one `presence` event.
//!
//! A quiet room's first change is delivered at once and opens a window;
//! changes inside the window wait for its end and go out together, and a
//! window that had changes opens another. So one change costs no added
//! latency, and a room of n peers reconnecting at once costs one frame per
//! subscriber per window instead of n: O(n) writes, not O(n²). While a room
//! stays busy (a window ends with several changes), its next window is twice
//! as long, up to [`MAX_GROWTH`] times the configured one, so a storm that
//! lasts seconds still costs each subscriber a handful of frames; one quiet
//! window brings it back. A batch that reaches [`MAX_BATCH`] events goes out
//! at once, so the wait is bounded in size as well as in time. A room with no
//! open window holds nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::protocol::{Event, RoomName};

/// Most events one `presence` event carries; more go out in the next one.
pub const MAX_BATCH: usize = 512;

/// How many times the configured window a busy room's window may grow to.
pub const MAX_GROWTH: u32 = 16;

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
    open: Mutex<HashMap<RoomName, Vec<Arc<Event>>>>,
}

impl Coalescer {
    /// A coalescer with the given window (non-zero).
    pub fn new(window: Duration) -> Coalescer {
        Coalescer {
            window,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a presence event of `room`. `Now` means deliver it (or the
    /// batch it completed) at once; when this opened a window, `flush` is
    /// scheduled to run after it, through `owner`.
    pub fn offer<O>(&self, owner: &Weak<O>, room: &RoomName, event: Arc<Event>) -> Offered
    where
        O: Flush + Send + Sync + 'static,
    {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(batch) = open.get_mut(room) {
            batch.push(event);
            if batch.len() >= MAX_BATCH {
                let full = std::mem::take(batch);
                return Offered::Now(Event::presence(room, &full));
            }
            return Offered::Held;
        }
        // A quiet room: this change goes now, and opens a window. Outside a
        // runtime (no timer to close it) no window is opened.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            open.insert(room.clone(), Vec::new());
            schedule(&runtime, owner.clone(), room.clone(), self.window);
        }
        Offered::Now(event)
    }

    /// Ends `room`'s window: returns what waited in it, as one event, and
    /// how many changes that was (zero: the window closed for good).
    pub fn close_window(&self, room: &RoomName) -> (Option<Arc<Event>>, usize) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(batch) = open.get_mut(room) else {
            return (None, 0);
        };
        if batch.is_empty() {
            open.remove(room);
            return (None, 0);
        }
        let waiting = std::mem::take(batch);
        let event = match waiting.as_slice() {
            [one] => one.clone(),
            many => Event::presence(room, many),
        };
        (Some(event), waiting.len())
    }
}

/// The owner of a coalescer: delivers what a closing window released.
pub trait Flush {
    /// Closes `room`'s window, delivering what waited; returns how many
    /// changes that was (zero: the window closed for good).
    fn flush(&self, room: &RoomName) -> usize;
}

/// Closes `room`'s window after `window`, and again after each period that
/// had changes (a longer one after several); stops when the owner is gone or
/// a period had none.
fn schedule<O>(runtime: &tokio::runtime::Handle, owner: Weak<O>, room: RoomName, window: Duration)
where
    O: Flush + Send + Sync + 'static,
{
    runtime.spawn(async move {
        let mut period = window;
        loop {
            tokio::time::sleep(period).await;
            let Some(owner) = owner.upgrade() else { return };
            period = match owner.flush(&room) {
                0 => return,
                1 => window,
                _ => (period * 2).min(window * MAX_GROWTH),
            };
        }
    });
}
