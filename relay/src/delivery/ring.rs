//! A room's ring of recent events, shared by its local subscribers: an event is
//! stored once and handed to each subscriber by reference. The ring holds only
//! what some subscriber has not read yet, so a quiet room costs a few hundred
//! bytes (tokio's broadcast channel allocated all its slots up front: 40 KB a
//! room). A subscriber that falls more than `capacity` events behind loses the
//! oldest and is told it lagged; the session closes it as a slow consumer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;

use crate::protocol::Event;

/// A subscriber fell further behind than the ring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber lagged behind its room")]
pub struct Lagged;

/// One stored event and how many subscribers have yet to read it.
struct Slot {
    event: Arc<Event>,
    unread: usize,
}

struct State {
    /// Events some subscriber has not read, oldest first.
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`; the sequence only grows.
    head: u64,
    /// Live subscribers.
    receivers: usize,
    /// Each subscriber's place for its waker while it waits for the next
    /// event, by the slot it was given (a map took 116 B for one).
    waiting: Vec<Option<Waker>>,
    /// Slots of subscribers gone, for the next ones.
    free: Vec<usize>,
}

impl State {
    fn tail(&self) -> u64 {
        self.head + self.slots.len() as u64
    }

    /// Drops the leading events everyone has read, and the buffer once empty.
    fn trim(&mut self) {
        while self.slots.front().is_some_and(|s| s.unread == 0) {
            self.slots.pop_front();
            self.head += 1;
        }
        if self.slots.is_empty() && self.slots.capacity() > 0 {
            self.slots = VecDeque::new();
        }
    }
}

/// The sending side of a room's ring.
pub struct RoomRing {
    state: Mutex<State>,
    capacity: usize,
}

impl RoomRing {
    /// A ring that lets a subscriber fall at most `capacity` events behind.
    pub fn new(capacity: usize) -> Arc<RoomRing> {
        Arc::new(RoomRing {
            state: Mutex::new(State {
                slots: VecDeque::new(),
                head: 0,
                receivers: 0,
                waiting: Vec::new(),
                free: Vec::new(),
            }),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `event` to every current subscriber and wakes those waiting.
    pub fn send(&self, event: Arc<Event>) {
        let woken = {
            let mut state = self.lock();
            if state.receivers == 0 {
                return;
            }
            let unread = state.receivers;
            state.slots.push_back(Slot { event, unread });
            if state.slots.len() > self.capacity {
                // The slowest subscribers lose the oldest event and lag.
                state.slots.pop_front();
                state.head += 1;
            }
            // Taken out of their slots, which stay for the same subscribers
            // to wait again after this event.
            state
                .waiting
                .iter_mut()
                .filter_map(Option::take)
                .collect::<Vec<_>>()
        };
        for waker in woken {
            waker.wake();
        }
    }

    /// A new subscriber, which receives the events sent from now on.
    pub fn subscribe(self: &Arc<Self>) -> RingReceiver {
        let mut state = self.lock();
        state.receivers += 1;
        let slot = match state.free.pop() {
            Some(slot) => slot,
            None => {
                // A room of a few holds a few slots; a large one grows by
                // doubling.
                if state.waiting.len() < 4 {
                    state.waiting.reserve_exact(1);
                }
                state.waiting.push(None);
                state.waiting.len() - 1
            }
        };
        RingReceiver {
            slot,
            next: state.tail(),
            ring: self.clone(),
        }
    }

    /// Live subscribers.
    pub fn receiver_count(&self) -> usize {
        self.lock().receivers
    }
}

/// One subscriber's position in a room's ring.
pub struct RingReceiver {
    ring: Arc<RoomRing>,
    /// Its place in the ring's waiting list.
    slot: usize,
    /// Sequence number of the next event to read.
    next: u64,
}

impl RingReceiver {
    /// The next event if one is ready: `Ok(None)` when there is none yet.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Event>>, Lagged> {
        let mut state = self.ring.lock();
        take(&mut self.next, &mut state)
    }

    /// The next event, waiting for it.
    pub async fn recv(&mut self) -> Result<Arc<Event>, Lagged> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next event, registering to be woken when there is none.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Event>, Lagged>> {
        let mut state = self.ring.lock();
        match take(&mut self.next, &mut state) {
            Ok(Some(event)) => Poll::Ready(Ok(event)),
            Err(lagged) => Poll::Ready(Err(lagged)),
            Ok(None) => {
                if let Some(waiting) = state.waiting.get_mut(self.slot) {
                    match waiting {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => *waiting = Some(cx.waker().clone()),
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// Reads the event at `next` for one subscriber.
fn take(next: &mut u64, state: &mut State) -> Result<Option<Arc<Event>>, Lagged> {
    if *next < state.head {
        // What it missed is gone; it resumes at the oldest event kept.
        *next = state.head;
        return Err(Lagged);
    }
    let index = (*next - state.head) as usize;
    let Some(slot) = state.slots.get_mut(index) else {
        return Ok(None);
    };
    slot.unread = slot.unread.saturating_sub(1);
    let event = slot.event.clone();
    *next += 1;
    if index == 0 {
        state.trim();
    }
    Ok(Some(event))
}

impl Stream for RingReceiver {
    type Item = Result<Arc<Event>, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx).map(Some)
    }
}

impl Drop for RingReceiver {
    fn drop(&mut self) {
        let mut state = self.ring.lock();
        state.receivers = state.receivers.saturating_sub(1);
        if state.receivers == 0 {
            state.waiting = Vec::new();
            state.free = Vec::new();
        } else if let Some(waiting) = state.waiting.get_mut(self.slot) {
            *waiting = None;
            state.free.push(self.slot);
        }
        // Release the events this subscriber will never read.
        let from = self.next.saturating_sub(state.head) as usize;
        for slot in state.slots.iter_mut().skip(from) {
            slot.unread = slot.unread.saturating_sub(1);
        }
        state.trim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Arc<Event> {
        Event::error("x", &n.to_string(), None, None)
    }

    fn text(e: &Arc<Event>) -> String {
        e.json().to_owned()
    }

    /// The next ready event's text; panics when none is ready or it lagged.
    fn next(rx: &mut RingReceiver) -> String {
        match rx.try_recv() {
            Ok(Some(e)) => text(&e),
            other => panic!("expected an event, got {:?}", other.map(|o| o.is_some())),
        }
    }

    #[test]
    fn every_subscriber_gets_every_event_in_order_and_read_events_are_freed() {
        let ring = RoomRing::new(8);
        let mut a = ring.subscribe();
        let mut b = ring.subscribe();
        for n in 0..5 {
            ring.send(event(n));
        }
        for n in 0..5 {
            assert!(next(&mut a).contains(&format!("\"{n}\"")));
        }
        assert!(matches!(a.try_recv(), Ok(None)));
        assert_eq!(ring.lock().slots.len(), 5, "b has not read them");
        for _ in 0..5 {
            next(&mut b);
        }
        let state = ring.lock();
        assert_eq!((state.slots.len(), state.slots.capacity()), (0, 0));
    }

    #[test]
    fn a_late_subscriber_starts_at_the_tail_and_a_dropped_one_frees_its_share() {
        let ring = RoomRing::new(8);
        let mut a = ring.subscribe();
        ring.send(event(0));
        let mut late = ring.subscribe();
        assert!(matches!(late.try_recv(), Ok(None)));
        let gone = ring.subscribe();
        ring.send(event(1));
        drop(gone);
        assert_eq!(ring.receiver_count(), 2);
        next(&mut a);
        next(&mut a);
        next(&mut late);
        assert!(ring.lock().slots.is_empty());
    }

    #[test]
    fn a_subscriber_behind_by_more_than_the_capacity_lags() {
        let ring = RoomRing::new(4);
        let mut slow = ring.subscribe();
        let mut fast = ring.subscribe();
        for n in 0..6 {
            ring.send(event(n));
            next(&mut fast);
        }
        assert!(ring.lock().slots.len() <= 4, "bounded by the capacity");
        assert!(matches!(slow.try_recv(), Err(Lagged)));
        // After the lag it reads on from the oldest event kept.
        assert!(next(&mut slow).contains("\"2\""));
    }

    #[tokio::test]
    async fn a_waiting_subscriber_is_woken() {
        let ring = RoomRing::new(4);
        let mut rx = ring.subscribe();
        let sender = ring.clone();
        let task = tokio::spawn(async move { rx.recv().await.map(|e| text(&e)) });
        tokio::task::yield_now().await;
        sender.send(event(7));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        assert!(matches!(got, Ok(Ok(Ok(t))) if t.contains("\"7\"")));
    }
}
