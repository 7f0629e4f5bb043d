//! Server-Sent Events transport: the session's events as `text/event-stream`,
//! each frame built once per event and shared. The stream starts with `retry:`,
//! carries `: ping` comments so proxies keep it open, and ends (after an
//! `error` event) on shutdown, token expiry or slow consumption. A client that
//! disconnects drops the body, which drops the session and leaves its rooms.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{expiring_event, expiry_deadline, warning_deadline};

/// A deadline, or one so far away that it never comes (a resettable sleep
/// needs an instant).
fn far_or(deadline: Option<Instant>) -> Instant {
    deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600))
}
use crate::error::ApiError;
use crate::hub::{Next, Session};
use crate::metrics::Metrics;
use crate::protocol::{Event, LeaveReason};

/// Reconnect delay suggested to EventSource clients, in milliseconds.
pub const RETRY_MS: u64 = 2000;
/// Most events coalesced into one body chunk.
const MAX_BATCH: usize = 64;

struct Stream {
    session: Session,
    heartbeat: Interval,
    /// Resolves at this session's moment in the drain after shutdown starts.
    draining: Pin<Box<dyn Future<Output = ()> + Send>>,
    reconnect_after: Duration,
    expiry: Pin<Box<tokio::time::Sleep>>,
    warning: Pin<Box<tokio::time::Sleep>>,
    expires_at: Option<u64>,
    leeway: Duration,
    started: bool,
    done: bool,
}

/// The SSE response for a session that has joined its room.
pub fn response(
    session: Session,
    heartbeat: Duration,
    leeway: Duration,
    shutdown: CancellationToken,
    grace: Duration,
) -> Response {
    let mut heartbeat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expires_at = session.expires_at();
    let expiry = Box::pin(tokio::time::sleep_until(far_or(expiry_deadline(
        expires_at, leeway,
    ))));
    let warning = Box::pin(tokio::time::sleep_until(far_or(warning_deadline(
        expires_at, leeway,
    ))));
    let (close_after, reconnect_after) = crate::shutdown::drain_plan(grace);
    let draining = Box::pin(async move {
        shutdown.cancelled().await;
        tokio::time::sleep(close_after).await;
    });
    let state = Stream {
        session,
        heartbeat,
        draining,
        reconnect_after,
        expiry,
        warning,
        expires_at,
        leeway,
        started: false,
        done: false,
    };
    let span = tracing::debug_span!("session", transport = "sse", peer = %state.session.peer_id());
    span.in_scope(|| tracing::debug!("session opened"));
    let body = futures_util::stream::unfold((state, span), |(mut s, span)| async move {
        let chunk = tracing::Instrument::instrument(s.next_chunk(), span.clone()).await;
        match chunk {
            Some(chunk) => Some((Ok::<Bytes, Infallible>(chunk), (s, span))),
            None => {
                span.in_scope(|| tracing::debug!("session closed"));
                None
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
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

impl Stream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if self.session.expires_at() != self.expires_at {
            // A refresh (POST .../refresh) brought a new token: move the timers.
            self.expires_at = self.session.expires_at();
            self.expiry
                .as_mut()
                .reset(far_or(expiry_deadline(self.expires_at, self.leeway)));
            self.warning
                .as_mut()
                .reset(far_or(warning_deadline(self.expires_at, self.leeway)));
        }
        if !self.started {
            self.started = true;
            return Some(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
        }
        tokio::select! {
            biased;
            _ = &mut self.draining => {
                // Tell EventSource when to come back (jittered), then why the stream ends.
                let ms = self.reconnect_after.as_millis();
                let event = Event::error("draining", &format!("the relay is shutting down; reconnect in {ms} ms"), None, Some(self.reconnect_after.as_secs().max(1)));
                self.done = true;
                self.session.set_leave_reason(LeaveReason::Closed);
                let mut chunk = BytesMut::from(format!("retry: {ms}\n\n").as_bytes());
                chunk.extend_from_slice(&event.sse_frame());
                Some(chunk.freeze())
            }
            next = self.session.next() => match next {
                Next::Event(event) => Some(self.batch(event)),
                Next::Close(e) => Some(self.finish(&e, LeaveReason::Closed)),
            },
            _ = self.heartbeat.tick() => Some(Bytes::from_static(b": ping\n\n")),
            _ = &mut self.expiry => Some(self.finish(&ApiError::TokenExpired, LeaveReason::Expired)),
            _ = &mut self.warning => {
                self.warning.as_mut().reset(far_or(None));
                expiring_event(self.expires_at, self.leeway).map(|e| e.sse_frame())
            }
        }
    }

    /// `first` plus whatever else is ready, as one chunk.
    fn batch(&mut self, first: std::sync::Arc<Event>) -> Bytes {
        let mut frames = vec![first.sse_frame()];
        while frames.len() < MAX_BATCH {
            match futures_util::FutureExt::now_or_never(self.session.next()) {
                Some(Next::Event(event)) => frames.push(event.sse_frame()),
                Some(Next::Close(e)) => {
                    frames.push(self.finish(&e, LeaveReason::Closed));
                    break;
                }
                None => break,
            }
        }
        self.session.count_out(frames.len() as u64);
        if frames.len() == 1 {
            return frames.swap_remove(0);
        }
        let mut chunk = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
        for frame in frames {
            chunk.extend_from_slice(&frame);
        }
        chunk.freeze()
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
