//! Server-Sent Events transport: the session's events as `text/event-stream`,
//! each frame built once per event and shared. The stream starts with `retry:`,
//! carries `: ping` comments so proxies keep it open, and ends (after an
//! `error` event) on shutdown, token expiry or slow consumption. A client that
//! disconnects drops the body, which drops the session and leaves its rooms.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::clock::{Due, SessionClock};
use super::expiring_event;
use crate::error::ApiError;
use crate::hub::{Next, Session};
use crate::metrics::Metrics;
use crate::protocol::{Event, LeaveReason};

/// Reconnect delay suggested to EventSource clients, in milliseconds.
pub const RETRY_MS: u64 = 2000;
/// Most events coalesced into one body chunk.
const MAX_BATCH: usize = 64;

/// A session's event stream, polled by hand: its whole state is this struct,
/// boxed once as the response body, with no future held between events.
struct Stream {
    session: Session,
    clock: SessionClock,
    /// The one timer, armed at the clock's earliest deadline.
    timer: Pin<Box<Sleep>>,
    armed: Instant,
    /// Resolves when shutdown starts; the stream then ends at its own moment
    /// in the drain.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    close_after: Duration,
    reconnect_after: Duration,
    draining: bool,
    started: bool,
    done: bool,
    /// The rest of a batch, yielded one shared frame at a time (a batch is
    /// never copied into one buffer per subscriber).
    queued: Option<std::vec::IntoIter<Bytes>>,
    /// Set by the stream writer when it cut a client that took no bytes.
    cut: WriteCut,
    span: tracing::Span,
}

/// A flag the SSE writer raises when it cuts a client for the write timeout,
/// so that the session's peers see it leave with reason `timeout` (not
/// `closed`). Carried to the writer in the response's extensions.
#[derive(Debug, Clone, Default)]
pub struct WriteCut(Arc<AtomicBool>);

impl WriteCut {
    /// Records that the client was cut for taking no bytes.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.cut.0.load(Ordering::Relaxed) {
            self.session.set_leave_reason(LeaveReason::Timeout);
        }
    }
}

/// The SSE response for a session that has joined its room.
pub fn response(
    session: Session,
    heartbeat: Duration,
    leeway: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) -> Response {
    let clock = SessionClock::new(heartbeat, None, session.expires_at(), leeway);
    let armed = clock.next();
    let (close_after, reconnect_after) = crate::shutdown::drain_plan(grace);
    let span = tracing::debug_span!("session", transport = "sse", peer = %session.peer_id());
    span.in_scope(|| tracing::debug!("session opened"));
    let cut = WriteCut::default();
    let stream = Stream {
        session,
        clock,
        timer: Box::pin(tokio::time::sleep_until(armed)),
        armed,
        shutdown: Box::pin(shutdown.cancelled_owned()),
        close_after,
        reconnect_after,
        draining: false,
        started: false,
        done: false,
        queued: None,
        cut: cut.clone(),
        span,
    };
    let mut response = Body::new(stream).into_response();
    response.extensions_mut().insert(cut);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

impl HttpBody for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let span = this.span.clone();
        let _entered = span.enter();
        let chunk = std::task::ready!(this.poll_chunk(cx));
        if chunk.is_none() {
            tracing::debug!("session closed");
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }
}

impl Stream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(queued) = &mut self.queued {
            if let Some(frame) = queued.next() {
                return Poll::Ready(Some(frame));
            }
            self.queued = None;
        }
        if self.done {
            return Poll::Ready(None);
        }
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(Bytes::from(format!("retry: {RETRY_MS}\n\n"))));
        }
        loop {
            // A refresh (POST .../refresh) may have brought a new token.
            self.clock.token_changed(self.session.expires_at());
            let next = self.clock.next();
            if next != self.armed || self.timer.is_elapsed() {
                self.armed = next;
                self.timer.as_mut().reset(next);
            }
            if !self.draining && self.shutdown.as_mut().poll(cx).is_ready() {
                self.draining = true;
                self.clock.start_drain(self.close_after);
                continue;
            }
            match self.session.poll_next(cx) {
                Poll::Ready(Next::Event(event)) => return Poll::Ready(Some(self.batch(event, cx))),
                Poll::Ready(Next::Close(e)) => {
                    return Poll::Ready(Some(self.finish(&e, LeaveReason::Closed)));
                }
                Poll::Pending => {}
            }
            std::task::ready!(self.timer.as_mut().poll(cx));
            match self.clock.due(Instant::now()) {
                Due::Drain => return Poll::Ready(Some(self.drain())),
                Due::Expired => {
                    return Poll::Ready(Some(
                        self.finish(&ApiError::TokenExpired, LeaveReason::Expired),
                    ));
                }
                Due::Warning => {
                    if let Some(event) = expiring_event(self.clock.token_exp(), self.clock.leeway())
                    {
                        return Poll::Ready(Some(event.sse_frame()));
                    }
                }
                Due::KeepAlive => return Poll::Ready(Some(Bytes::from_static(b": ping\n\n"))),
                Due::Idle | Due::Nothing => {}
            }
        }
    }

    /// Tells EventSource when to come back (jittered), then why the stream ends.
    fn drain(&mut self) -> Bytes {
        let ms = self.reconnect_after.as_millis();
        let event = Event::error(
            "draining",
            &format!("the relay is shutting down; reconnect in {ms} ms"),
            None,
            Some(crate::shutdown::retry_after_secs(self.reconnect_after)),
        );
        self.done = true;
        self.session.set_leave_reason(LeaveReason::Closed);
        let mut chunk = BytesMut::from(format!("retry: {ms}\n\n").as_bytes());
        chunk.extend_from_slice(&event.sse_frame());
        chunk.freeze()
    }

    /// `first`, with whatever else is ready (up to a batch) queued behind it:
    /// the writer takes the queued frames as they come and sends them together.
    fn batch(&mut self, first: std::sync::Arc<Event>, cx: &mut Context<'_>) -> Bytes {
        let mut frames = Vec::new();
        while frames.len() < MAX_BATCH - 1 {
            match self.session.poll_next(cx) {
                Poll::Ready(Next::Event(event)) => frames.push(event.sse_frame()),
                Poll::Ready(Next::Close(e)) => {
                    frames.push(self.finish(&e, LeaveReason::Closed));
                    break;
                }
                Poll::Pending => break,
            }
        }
        self.session.count_out(1 + frames.len() as u64);
        if !frames.is_empty() {
            self.queued = Some(frames.into_iter());
        }
        first.sse_frame()
    }

    /// The last frame: an `error` event saying why the stream ends.
    fn finish(&mut self, error: &ApiError, reason: LeaveReason) -> Bytes {
        tracing::debug!(error = error.code(), "stream ends");
        self.done = true;
        if *error == ApiError::SlowConsumer {
            Metrics::add(&self.session_metrics().slow_consumers, 1);
        }
        self.session.set_leave_reason(reason);
        error.to_event(None).sse_frame()
    }

    fn session_metrics(&self) -> &Metrics {
        self.session.metrics()
    }
}
