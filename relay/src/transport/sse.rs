//! Server-Sent Events transport: the session's events as `text/event-stream`,
//! each frame built once per event and shared. The stream starts with `retry:`,
//! carries `: ping` comments so proxies keep it open, and ends (after an
//! `error` event) on shutdown, token expiry or slow consumption. A client that
//! disconnects drops the body, which drops the session and leaves its rooms.

use std::convert::Infallible;
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
use tokio_util::sync::CancellationToken;

use super::driver::{Driver, Ending, Step};
use crate::hub::Session;
use crate::protocol::{Event, LeaveReason};

/// Reconnect delay suggested to EventSource clients, in milliseconds.
pub const RETRY_MS: u64 = 2000;

/// A session's event stream, polled by hand: its whole state is this struct,
/// boxed once as the response body, with no future held between events.
struct Stream {
    session: Session,
    driver: Driver,
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
    let driver = Driver::new(&session, heartbeat, None, leeway, shutdown, grace);
    let span = tracing::debug_span!("session", transport = "sse", peer = %session.peer_id());
    span.in_scope(|| tracing::debug!("session opened"));
    let cut = WriteCut::default();
    let stream = Stream {
        session,
        driver,
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
        let step =
            std::task::ready!(
                self.driver
                    .poll_step(&mut self.session, cx, true, Event::sse_frame)
            );
        Poll::Ready(Some(match step {
            Step::Frames(frames) => {
                let mut frames = frames.into_iter();
                let first = frames.next().unwrap_or_default();
                if frames.len() > 0 {
                    self.queued = Some(frames);
                }
                first
            }
            Step::KeepAlive => Bytes::from_static(b": ping\n\n"),
            Step::End(ending) => self.finish(ending),
        }))
    }

    /// The last chunk: in a drain, when EventSource should come back
    /// (jittered); then the `error` event saying why the stream ends.
    fn finish(&mut self, ending: Ending) -> Bytes {
        tracing::debug!(reason = ending.close.map_or("", |(_, r)| r), "stream ends");
        self.done = true;
        self.session.set_leave_reason(ending.leave_reason);
        let mut chunk = BytesMut::new();
        if let Some(after) = ending.reconnect_after {
            chunk.extend_from_slice(format!("retry: {}\n\n", after.as_millis()).as_bytes());
        }
        if let Some(error) = ending.error {
            chunk.extend_from_slice(&error.sse_frame());
        }
        chunk.freeze()
    }
}
