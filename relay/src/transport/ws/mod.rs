//! WebSocket transport: one task per connection reads ops and writes events.
//! Events go out as frames built once per event and shared by every socket
//! ([`Event::ws_frame`]), gathered into one `writev` per batch. Auth failures
//! still complete the upgrade (a browser cannot read a failed handshake's
//! status), send one `error` event and close with 4401/4403.

pub mod direct;
mod end;
pub mod frame;
pub mod handshake;
mod socket;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use self::end::End;
use self::frame::Incoming;
use self::socket::{Socket, SocketIo};
use super::driver::{Driver, Step};
use crate::auth::{Principal, SUBPROTOCOL};
use crate::error::ApiError;
use crate::hub::{Hub, Session};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{CloseCode, Event, EventId, LeaveReason, RoomName, parse_op};
use crate::topic::TopicFilter;
use handshake::Handover;
pub use handshake::{NotUpgrade, WsUpgrade};

/// What a new WebSocket session starts on.
#[derive(Debug)]
pub enum Target {
    /// Joined to no room (`/rooms`); rooms are joined with ops.
    Bare,
    /// Joined to a room, resuming after `since` when given.
    Room(RoomName, Option<EventId>),
    /// Watching a room's topics that match a filter.
    Topics(RoomName, TopicFilter, Option<EventId>),
}

/// Upgrades a request to a WebSocket session on `target`. A caller whose token
/// was accepted is admitted first (a refusal is a plain `503`, before any
/// upgrade); a token refusal completes the upgrade so a browser can read why.
pub fn upgrade(
    ws: WsUpgrade,
    headers: &HeaderMap,
    hub: Hub,
    auth: Result<Principal, ApiError>,
    target: Target,
    address: IpAddr,
) -> Response {
    let offers_subprotocol = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    let session = match auth {
        Ok(principal) => match hub.open_session(principal, Transport::WebSocket, address) {
            Ok(session) => Ok(session),
            Err(e) => return e.into_response(),
        },
        // A locked-out address without a token that verifies is refused
        // before the upgrade, as cheaply as admission would have.
        Err(e @ ApiError::LockedOut(_)) => return e.into_response(),
        Err(e) => Err(e),
    };
    let guard = hub.tasks().token();
    let (response, handover) = ws.accept(offers_subprotocol.then_some(SUBPROTOCOL));
    match session {
        Ok(session) => {
            let span = tracing::debug_span!(
                "session",
                transport = "websocket",
                peer = %session.peer_id(),
                room = tracing::field::Empty,
                close_code = tracing::field::Empty,
            );
            // Kept only when it records something: a disabled span is 40 B
            // in every idle session.
            let span = (!span.is_disabled()).then(|| Box::new(span));
            tokio::spawn(Connection {
                phase: Phase::Upgrading(handover, Box::new(target)),
                span,
                socket: None,
                driver: None,
                session: Some(session),
                _guard: guard,
            });
        }
        Err(e) => {
            tokio::spawn(async move {
                let _guard = guard;
                if e.close_code() == Some(CloseCode::Unauthorized) {
                    hub.guard().record_failure(address);
                }
                if let Some((io, preamble)) = handover.socket().await {
                    let mut socket = Socket::new(io, hub.config().max_message_bytes, preamble);
                    End::refused(e, &hub).send(&mut socket).await;
                }
            });
        }
    }
    response
}

/// One accepted WebSocket session, and the task that runs it: its socket,
/// its hub session and driver, the room it was opened on, and the step it
/// is at. A future written by hand, spawned as it is: an idle session is
/// this one allocation (the task), where an `async fn` over a boxed state
/// took two. What only some steps need (a join, an op, the last writes) is
/// boxed while they run.
struct Connection {
    phase: Phase,
    /// The session's span (when it is enabled), entered on every poll.
    span: Option<Box<tracing::Span>>,
    /// Set once the upgrade hands the socket over.
    socket: Option<Socket>,
    /// Set when the session loop starts.
    driver: Option<Driver>,
    /// Lent to the steps that await the hub (a join, an op) while they run;
    /// it holds the hub and the room the session was opened on.
    session: Option<Session>,
    /// Holds the relay's shutdown open until the session ends.
    _guard: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// Where a WebSocket session is.
enum Phase {
    /// Waiting for the upgraded socket; then it starts on the target.
    Upgrading(Handover, Box<Target>),
    /// Joining the room (or topic watch) it was opened on.
    Starting(Pin<Box<dyn Future<Output = Started> + Send>>),
    /// The session loop; `client_first` says which source it polls first
    /// next: the client and the driver take turns.
    Driving { client_first: bool },
    /// Handling an op of the client's.
    Handling(Pin<Box<dyn Future<Output = Session> + Send>>),
    /// Its last writes, then the socket is shut.
    Finishing(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Over.
    Done,
}

/// A session back from its start, with the room it was opened on.
struct Started {
    session: Session,
    room: Option<RoomName>,
    result: Result<(), ApiError>,
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Out of the session while it is entered, and put back after.
        let span = this.span.take();
        let entered = span.as_deref().map(tracing::Span::enter);
        let polled = this.poll_phases(cx);
        drop(entered);
        this.span = span;
        polled
    }
}

impl Connection {
    /// Runs the session's steps in turn until one waits.
    fn poll_phases(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let this = self;
        loop {
            match &mut this.phase {
                Phase::Upgrading(handover, target) => {
                    let Some((io, preamble)) = ready!(handover.poll_socket(cx)) else {
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    };
                    let target = std::mem::replace(&mut **target, Target::Bare);
                    let Some(session) = this.session.take() else {
                        this.phase = Phase::Done;
                        return Poll::Ready(());
                    };
                    let max = session.hub().config().max_message_bytes;
                    this.socket = Some(Socket::new(io, max, preamble));
                    this.phase = Phase::Starting(Box::pin(start(session, target)));
                }
                Phase::Starting(starting) => {
                    let started = ready!(starting.as_mut().poll(cx));
                    if let Some(room) = &started.room {
                        tracing::Span::current().record("room", tracing::field::display(room));
                    }
                    let session = this.session.insert(started.session);
                    match started.result {
                        Ok(()) => {
                            tracing::debug!("session opened");
                            if let Some(end) = this.begin_loop(cx) {
                                this.finish(end);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = e.code(), "session refused");
                            let end = End::refused(e, session.hub());
                            this.finish(end);
                        }
                    }
                }
                Phase::Driving { client_first } => {
                    let mut first = *client_first;
                    let turn = this.poll_loop(cx, &mut first);
                    if let Phase::Driving { client_first } = &mut this.phase {
                        *client_first = first;
                    }
                    match ready!(turn) {
                        Turn::Op(text) => {
                            let Some(session) = this.session.take() else {
                                this.finish(End::gone());
                                continue;
                            };
                            let room = session.home().cloned();
                            // Boxed, parsing included: the op takes memory
                            // only while it is handled.
                            this.phase =
                                Phase::Handling(Box::pin(handle_text(session, text, room)));
                        }
                        Turn::End(end) => this.finish(end),
                    }
                }
                Phase::Handling(handling) => {
                    let session = ready!(handling.as_mut().poll(cx));
                    // A client that sends ops but does not read their
                    // answers fills its queue: cut it as a slow consumer
                    // rather than read on while it is behind.
                    let backlogged = session.is_backlogged();
                    if backlogged {
                        Metrics::add(&session.hub().metrics().slow_consumers, 1);
                    }
                    this.session = Some(session);
                    this.phase = Phase::Driving {
                        client_first: false,
                    };
                    if backlogged {
                        this.finish(End::error(ApiError::SlowConsumer, LeaveReason::Closed));
                    }
                }
                Phase::Finishing(finishing) => {
                    ready!(finishing.as_mut().poll(cx));
                    this.phase = Phase::Done;
                    return Poll::Ready(());
                }
                Phase::Done => return Poll::Ready(()),
            }
        }
    }
}

/// What a turn of the session loop asks for.
enum Turn {
    /// An op to handle.
    Op(String),
    /// The session ends.
    End(End),
}

/// Joins the room or topic watch the session was opened on, and gives the
/// session back.
async fn start(mut session: Session, target: Target) -> Started {
    let (room, result) = match target {
        Target::Bare => {
            session.greet();
            (None, Ok(()))
        }
        Target::Room(room, since) => {
            session.set_home(room.clone());
            let result = session.join(room.clone(), since).await;
            (Some(room), result)
        }
        Target::Topics(room, filter, since) => {
            session.set_home(room.clone());
            let result = session.watch(room.clone(), filter, since).await;
            (Some(room), result)
        }
    };
    // The room's name as the session holds it (shared with the room's
    // other subscribers), not the copy parsed from the URL.
    let room = session.home().cloned().or(room);
    Started {
        session,
        room,
        result,
    }
}

impl Connection {
    /// Starts the session loop: its driver, and what is ready at once (the
    /// welcome) staged before the socket is first written, so a handshake
    /// answered on the socket sends its `101` and the welcome in one write.
    fn begin_loop(&mut self, cx: &mut Context<'_>) -> Option<End> {
        let (Some(socket), Some(session)) = (self.socket.as_mut(), self.session.as_mut()) else {
            return Some(End::gone());
        };
        let hub = session.hub().clone();
        let config = hub.config();
        let driver = self.driver.insert(Driver::new(
            session,
            config.ping_interval,
            Some(config.idle_timeout),
            hub.auth().leeway(),
            config.shutdown_grace,
        ));
        if let Poll::Ready(step) = driver.poll_step(session, cx, true, Event::ws_frame)
            && let Some(end) = stage_step(socket, step)
        {
            return Some(end);
        }
        self.phase = Phase::Driving {
            client_first: false,
        };
        None
    }

    /// One turn of the session loop: the driver says what goes out (events,
    /// pings, the end), the socket writes it while reading ops in. Reading
    /// the client (ops, pongs) must not starve behind a busy room, or a live
    /// client would look idle: the two sources take turns at being polled
    /// first. While a write is pending, the session's events wait in its
    /// bounded queues (a client that stays behind is cut: write timeout,
    /// slow consumer) and everything else goes on: reads, timers, the drain.
    fn poll_loop(&mut self, cx: &mut Context<'_>, client_first: &mut bool) -> Poll<Turn> {
        let (Some(socket), Some(driver), Some(session)) = (
            self.socket.as_mut(),
            self.driver.as_mut(),
            self.session.as_mut(),
        ) else {
            return Poll::Ready(Turn::End(End::gone()));
        };
        loop {
            let writable = !socket.is_writing();
            *client_first = !*client_first;
            let io = if *client_first && let Poll::Ready(io) = socket.poll_next(cx) {
                io
            } else if let Poll::Ready(step) =
                driver.poll_step(session, cx, writable, Event::ws_frame)
            {
                if let Some(end) = stage_step(socket, step) {
                    return Poll::Ready(Turn::End(end));
                }
                continue;
            } else if !*client_first && let Poll::Ready(io) = socket.poll_next(cx) {
                io
            } else {
                return Poll::Pending;
            };
            match io {
                SocketIo::Flushed => {}
                SocketIo::WriteFailed(e) => return Poll::Ready(Turn::End(End::write_failed(e))),
                SocketIo::Closed => return Poll::Ready(Turn::End(End::gone())),
                SocketIo::Message(incoming) => {
                    driver.heard_from_client();
                    match incoming {
                        Err(e) => return Poll::Ready(Turn::End(End::bad_frames(e))),
                        Ok(Incoming::Text(text)) => return Poll::Ready(Turn::Op(text)),
                        Ok(Incoming::Binary) => session.push(ApiError::Unsupported.to_event(None)),
                        Ok(Incoming::Ping(payload)) => socket.stage(vec![frame::pong(&payload)]),
                        Ok(Incoming::Pong) => {}
                        Ok(Incoming::Close(code)) => {
                            // Answer the client's close by echoing its code
                            // (RFC 6455 §5.5.1); its session ends normally.
                            let echo = match code {
                                Some(code) => frame::close(code, ""),
                                None => frame::close_empty(),
                            };
                            return Poll::Ready(Turn::End(End::echo(echo)));
                        }
                    }
                    if session.is_backlogged() {
                        Metrics::add(&session.hub().metrics().slow_consumers, 1);
                        return Poll::Ready(Turn::End(End::error(
                            ApiError::SlowConsumer,
                            LeaveReason::Closed,
                        )));
                    }
                }
            }
        }
    }

    /// Ends the session: the peer leaves its rooms at once (its `leave` and
    /// wills go out without waiting for the client), then the staged events,
    /// the last `error` event and the close frame go out, as far as the
    /// client takes them within the write timeout, and the socket is shut.
    /// The last writes are boxed: they take memory only while the session
    /// ends.
    fn finish(&mut self, end: End) {
        let code = end.code.map(CloseCode::code);
        // 0 in the span: the client went away before the relay sent a close frame.
        tracing::Span::current().record("close_code", code.unwrap_or(0));
        tracing::debug!(close_code = code, reason = end.reason, "session closed");
        if let Some(session) = self.session.as_mut() {
            session.set_leave_reason(end.leave_reason);
            session.end();
        }
        self.phase = match self.socket.take() {
            Some(mut socket) => {
                Phase::Finishing(Box::pin(async move { end.send(&mut socket).await }))
            }
            None => Phase::Done,
        };
    }
}

/// Parses and handles one op the client sent (its answer is queued), and
/// gives the session back.
async fn handle_text(mut session: Session, text: String, room: Option<RoomName>) -> Session {
    match parse_op(&text) {
        Ok((op, reference)) => session.handle(op, reference, room.as_ref()).await,
        Err(e) => session.push(ApiError::BadRequest(e.message).to_event(e.reference.as_deref())),
    }
    session
}

/// Stages what the driver says goes out next; the session's end when that
/// is what it says.
fn stage_step(socket: &mut Socket, step: Step) -> Option<End> {
    match step {
        Step::Frames(frames) => socket.stage(frames),
        Step::KeepAlive => socket.stage(vec![frame::ping()]),
        Step::End(ending) => return Some(End::from(ending)),
    }
    None
}
