//! The session driver both streaming transports share. It owns a session's
//! one timer and its place in a shutdown drain, and decides what goes out
//! next: a batch of events (encoded by the transport), a keep-alive, or the
//! session's end and why. WebSocket and SSE only encode and write; the
//! clock, the drain, the `expiring` warning, batching and the slow-consumer
//! cut live here once.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use super::clock::{Due, SessionClock};
use super::expiring_event;
use crate::error::ApiError;
use crate::hub::{Next, Session};
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Event, LeaveReason};

/// Most events written in one batch (one `writev`).
pub const MAX_BATCH: usize = 64;

/// What a transport writes next.
pub enum Step {
    /// Encoded events, in order (one batch).
    Frames(Vec<Bytes>),
    /// A keep-alive: a WebSocket ping, an SSE comment.
    KeepAlive,
    /// The session ends.
    End(Ending),
}

/// Why and how a session ends.
#[derive(Debug)]
pub struct Ending {
    /// The `error` event to send last, if any.
    pub error: Option<Arc<Event>>,
    /// The WebSocket close code and reason, if a close frame is due.
    pub close: Option<(CloseCode, &'static str)>,
    /// How the peer leaves its rooms.
    pub leave_reason: LeaveReason,
    /// In a drain: the reconnect delay suggested to the client.
    pub reconnect_after: Option<Duration>,
}

impl Ending {
    /// The session ends on an error: its event, and the close code it maps to.
    pub fn error(e: ApiError, leave_reason: LeaveReason) -> Ending {
        Ending {
            close: Some((e.close_code().unwrap_or(CloseCode::Internal), e.code())),
            error: Some(e.to_event(None)),
            leave_reason,
            reconnect_after: None,
        }
    }

    /// The session's moment in a drain: `draining`, with a jittered delay.
    fn drain(reconnect_after: Duration) -> Ending {
        let secs = crate::shutdown::retry_after_secs(reconnect_after);
        let event = Event::error(
            "draining",
            &format!(
                "the relay is shutting down; reconnect in {} ms",
                reconnect_after.as_millis()
            ),
            None,
            Some(secs),
        );
        Ending {
            error: Some(event),
            close: Some((CloseCode::GoingAway, "draining; reconnect later")),
            leave_reason: LeaveReason::Closed,
            reconnect_after: Some(reconnect_after),
        }
    }

    /// Nothing heard from the client within the idle timeout.
    fn idle() -> Ending {
        Ending {
            error: None,
            close: Some((CloseCode::IdleTimeout, "idle timeout")),
            leave_reason: LeaveReason::Timeout,
            reconnect_after: None,
        }
    }
}

/// A session's deadlines, its drain, and what is to be written.
pub struct Driver {
    clock: SessionClock,
    /// The one timer, armed at the clock's earliest deadline.
    timer: Pin<Box<Sleep>>,
    /// An end found behind a batch: returned once the batch is out (boxed:
    /// rare, and kept out of every idle session).
    ending: Option<Box<Ending>>,
}

impl Driver {
    /// A driver for `session` with a keep-alive period, an idle timeout (the
    /// WebSocket's; an SSE client sends nothing) and the relay's shutdown
    /// grace.
    pub fn new(
        session: &Session,
        keep_alive: Duration,
        idle_timeout: Option<Duration>,
        leeway: Duration,
        grace: Duration,
    ) -> Driver {
        let clock = SessionClock::new(
            keep_alive,
            idle_timeout,
            session.expires_at(),
            leeway,
            grace,
        );
        let armed = clock.next();
        Driver {
            clock,
            timer: Box::pin(tokio::time::sleep_until(armed)),
            ending: None,
        }
    }

    /// The client was heard from: its idle timeout starts again.
    pub fn heard_from_client(&mut self) {
        self.clock.heard_from_client();
    }

    /// The next step. `writable`: the transport can take events now (a
    /// WebSocket whose last batch is out); when not, events wait in the
    /// session's bounded queues while timers and the drain go on.
    pub async fn step(
        &mut self,
        session: &mut Session,
        writable: bool,
        encode: fn(&Event) -> Bytes,
    ) -> Step {
        poll_fn(|cx| self.poll_step(session, cx, writable, encode)).await
    }

    /// [`Driver::step`] for a transport polled by hand (the SSE body).
    pub fn poll_step(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        writable: bool,
        encode: fn(&Event) -> Bytes,
    ) -> Poll<Step> {
        if let Some(ending) = self.ending.take() {
            return Poll::Ready(Step::End(*ending));
        }
        loop {
            // A refresh may have brought a new token: move the deadlines.
            self.clock.token_changed(session.expires_at());
            let next = self.clock.next();
            if next != self.timer.deadline() || self.timer.is_elapsed() {
                self.timer.as_mut().reset(next);
            }
            // The relay's drain, once seen (`Session::poll_draining`): the
            // session ends at its own moment in it.
            if !self.clock.is_draining() && session.poll_draining(cx) {
                let after = crate::shutdown::drain_spread(self.clock.grace());
                self.clock.start_drain(after);
                continue;
            }
            if writable {
                match session.poll_next(cx) {
                    Poll::Ready(Next::Event(first)) => {
                        return Poll::Ready(Step::Frames(self.batch(session, cx, &first, encode)));
                    }
                    Poll::Ready(Next::Close(e)) => {
                        return Poll::Ready(Step::End(closed_by(e, session)));
                    }
                    Poll::Pending => {}
                }
            }
            ready!(self.timer.as_mut().poll(cx));
            match self.clock.due(Instant::now()) {
                Due::Drain => {
                    let reconnect_after = crate::shutdown::reconnect_after();
                    return Poll::Ready(Step::End(Ending::drain(reconnect_after)));
                }
                Due::Expired => {
                    return Poll::Ready(Step::End(Ending::error(
                        ApiError::TokenExpired,
                        LeaveReason::Expired,
                    )));
                }
                Due::Idle => return Poll::Ready(Step::End(Ending::idle())),
                Due::Warning => {
                    if let Some(event) = expiring_event(self.clock.token_exp(), self.clock.leeway())
                    {
                        session.push(event);
                    }
                }
                Due::KeepAlive => return Poll::Ready(Step::KeepAlive),
                Due::Nothing => {}
            }
        }
    }

    /// `first` and whatever else is ready, up to a batch, encoded; a close
    /// found among them is kept for the next step.
    fn batch(
        &mut self,
        session: &mut Session,
        cx: &mut Context<'_>,
        first: &Event,
        encode: fn(&Event) -> Bytes,
    ) -> Vec<Bytes> {
        let mut frames = Vec::with_capacity(8);
        frames.push(encode(first));
        while frames.len() < MAX_BATCH {
            match session.poll_next(cx) {
                Poll::Ready(Next::Event(event)) => frames.push(encode(&event)),
                Poll::Ready(Next::Close(e)) => {
                    self.ending = Some(Box::new(closed_by(e, session)));
                    break;
                }
                Poll::Pending => break,
            }
        }
        session.count_out(frames.len() as u64);
        frames
    }
}

/// The end of a session its hub side closed (slow consumer, lost rights,
/// replaced), counted in the metrics where it is a slow consumer.
fn closed_by(e: ApiError, session: &Session) -> Ending {
    if e == ApiError::SlowConsumer {
        Metrics::add(&session.metrics().slow_consumers, 1);
    }
    Ending::error(e, LeaveReason::Closed)
}
