//! Server-Sent Events transport: the session's events as `text/event-stream`,
//! each frame built once per event and shared. The stream starts with `retry:`,
//! carries `: ping` comments so proxies keep it open, and ends (after an
//! `error` event) on shutdown, token expiry or slow consumption. A client that
//! disconnects drops the body, which drops the session and leaves its rooms.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame};

use super::driver::{Driver, Ending, Step};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{Hub, Session, Will};
use crate::metrics::Transport;
use crate::protocol::{Event, EventId, LeaveReason, RoomName};
use crate::topic::TopicFilter;

/// Reconnect delay suggested to EventSource clients, in milliseconds.
pub const RETRY_MS: u64 = 2000;

/// A session's event stream: the session, its driver, and where the stream
/// is. Written by the relay's own writer (`sse_direct`), which takes it from
/// the response's extensions ([`DirectStream`]), or else by hyper through the
/// response body ([`Body`]).
pub struct SseStream {
    session: Session,
    driver: Driver,
    started: bool,
    done: bool,
    /// Set by the writer when it cut a client that took no bytes: its peer
    /// then leaves with reason `timeout`.
    cut: bool,
    /// The session's span, kept only while debug logging is on: a disabled
    /// span is still 40 B in every idle stream.
    span: Option<Box<tracing::Span>>,
}

/// The slot the direct writer takes a stream from; the body finds it empty
/// then, and ends at once.
#[derive(Clone)]
pub struct DirectStream(Arc<Mutex<Option<SseStream>>>);

impl DirectStream {
    /// Takes the stream (once).
    pub fn take(&self) -> Option<SseStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The response body for hyper to write: takes the stream from its slot on
/// the first poll, then yields its frames one shared chunk at a time.
struct Body {
    slot: Option<DirectStream>,
    stream: Option<SseStream>,
    /// The rest of a batch, yielded one shared frame at a time (a batch is
    /// never copied into one buffer per subscriber).
    queued: Option<std::vec::IntoIter<Bytes>>,
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if self.cut {
            self.session.set_leave_reason(LeaveReason::Timeout);
        }
    }
}

/// `GET /rooms/{room}` as an event stream: a session that joins `room`
/// (resuming after `since`), with the stream's will if it asked for one.
pub async fn open_room(
    hub: &Hub,
    principal: Principal,
    address: IpAddr,
    room: RoomName,
    since: Option<EventId>,
    will: Option<Will>,
) -> Result<Response, ApiError> {
    let mut session = hub.open_session(principal, Transport::Sse, address)?;
    session.set_home(room.clone());
    session.join(room.clone(), since).await?;
    if let Some(will) = will {
        session.set_will(&room, will).await?;
    }
    Ok(stream(hub, session))
}

/// `GET /rooms/{room}/topics/{filter}` as an event stream: a session that
/// watches the room's topics matching `filter` (resuming after `since`).
pub async fn open_topics(
    hub: &Hub,
    principal: Principal,
    address: IpAddr,
    room: RoomName,
    filter: TopicFilter,
    since: Option<EventId>,
) -> Result<Response, ApiError> {
    let mut session = hub.open_session(principal, Transport::Sse, address)?;
    session.set_home(room.clone());
    session.watch(room, filter, since).await?;
    Ok(stream(hub, session))
}

fn stream(hub: &Hub, session: Session) -> Response {
    response(
        session,
        hub.config().sse_heartbeat,
        hub.auth().leeway(),
        hub.config().shutdown_grace,
    )
}

/// The SSE response for a session that has joined its room.
pub fn response(
    session: Session,
    heartbeat: Duration,
    leeway: Duration,
    grace: Duration,
) -> Response {
    let driver = Driver::new(&session, heartbeat, None, leeway, grace);
    let span = tracing::debug_span!("session", transport = "sse", peer = %session.peer_id());
    span.in_scope(|| tracing::debug!("session opened"));
    let stream = SseStream {
        session,
        driver,
        started: false,
        done: false,
        cut: false,
        span: (!span.is_disabled()).then(|| Box::new(span)),
    };
    let slot = DirectStream(Arc::new(Mutex::new(Some(stream))));
    let body = Body {
        slot: Some(slot.clone()),
        stream: None,
        queued: None,
    };
    let mut response = axum::body::Body::new(body).into_response();
    response.extensions_mut().insert(slot);
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

impl HttpBody for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(queued) = &mut this.queued {
            if let Some(frame) = queued.next() {
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            this.queued = None;
        }
        if let Some(slot) = this.slot.take() {
            this.stream = slot.take();
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match std::task::ready!(stream.poll_frames(cx, true)) {
            Some(frames) => {
                let mut frames = frames.into_iter();
                let first = frames.next().unwrap_or_default();
                if frames.len() > 0 {
                    this.queued = Some(frames);
                }
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            None => Poll::Ready(None),
        }
    }
}

impl SseStream {
    /// How long a client may take no bytes before it is cut.
    pub fn write_timeout(&self) -> Duration {
        self.session.config().write_timeout
    }

    /// The next frames to write: the opening `retry:`, a batch of events, a
    /// keep-alive comment, or the last words; `None` once the stream is over.
    /// `writable`: the writer can take events now. While it cannot, timers
    /// and the drain still run (a token expires, the session ends on time).
    pub fn poll_frames(
        &mut self,
        cx: &mut Context<'_>,
        writable: bool,
    ) -> Poll<Option<Vec<Bytes>>> {
        let span = self.span.as_deref().cloned();
        let _entered = span.as_ref().map(tracing::Span::enter);
        if self.done {
            return Poll::Ready(None);
        }
        if !self.started {
            self.started = true;
            return Poll::Ready(Some(vec![Bytes::from(format!("retry: {RETRY_MS}\n\n"))]));
        }
        let step = std::task::ready!(self.driver.poll_step(
            &mut self.session,
            cx,
            writable,
            Event::sse_frame
        ));
        Poll::Ready(Some(match step {
            Step::Frames(frames) => frames,
            Step::KeepAlive => vec![Bytes::from_static(b": ping\n\n")],
            Step::End(ending) => vec![self.finish(ending)],
        }))
    }

    /// True once the last words were handed out.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The writer cut the client for taking no bytes for the write timeout.
    pub fn cut_for_timeout(&mut self) {
        self.cut = true;
    }

    /// The last chunk: in a drain, when EventSource should come back
    /// (jittered); then the `error` event saying why the stream ends. The
    /// peer leaves its rooms now, not when the last bytes are out.
    fn finish(&mut self, ending: Ending) -> Bytes {
        tracing::debug!(reason = ending.close.map_or("", |(_, r)| r), "stream ends");
        self.done = true;
        self.session.set_leave_reason(ending.leave_reason);
        self.session.end();
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
