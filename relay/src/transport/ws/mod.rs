//! WebSocket transport: one task per connection reads ops and writes events.
//! Events go out as frames built once per event and shared by every socket
//! ([`Event::ws_frame`]), gathered into one `writev` per batch. Auth failures
//! still complete the upgrade (a browser cannot read a failed handshake's
//! status), send one `error` event and close with 4401/4403.

pub mod direct;
pub mod frame;
pub mod handshake;
mod socket;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Poll;

use futures_util::FutureExt;

use self::frame::{FrameError, Incoming};
use self::socket::{Socket, SocketIo};
use super::driver::{Driver, Ending, Step};
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
            // The session's whole state goes into one box before the task is
            // spawned; the task holds only the box and its current step, not
            // copies of what it captured (which cost 3.1 KB per idle socket).
            let connection = Box::new(Connection {
                socket: None,
                driver: None,
                target: Some(target),
                session,
                hub,
                room: None,
                _guard: guard,
            });
            let span = tracing::debug_span!(
                "session",
                transport = "websocket",
                peer = %connection.session.peer_id(),
                room = tracing::field::Empty,
                close_code = tracing::field::Empty,
            );
            tokio::spawn(tracing::Instrument::instrument(
                serve(handover, connection),
                span,
            ));
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

/// Runs a session once its socket arrives: start, loop, finish, each awaited
/// here in turn so the task is no larger than its largest step. The caller
/// wraps it in the session's span once (a span is 40 B: a copy per step
/// would sit in every idle session's task).
async fn serve(handover: Handover, mut connection: Box<Connection>) {
    let Some((io, preamble)) = handover.socket().await else {
        return;
    };
    let max = connection.hub.config().max_message_bytes;
    connection.socket = Some(Socket::new(io, max, preamble));
    let end = match connection.start().await {
        Ok(()) => connection.drive().await,
        Err(e) => End::refused(e, &connection.hub),
    };
    // Boxed: the end's writes take memory only while the session ends.
    Box::pin(connection.finish(end)).await;
}

/// One accepted WebSocket session: its socket, its hub session and the room
/// it was opened on.
struct Connection {
    /// Set once the upgrade hands the socket over.
    socket: Option<Socket>,
    /// Set when the session loop starts. Kept here, in the box, rather than
    /// in the loop's future: the task of an idle session stays small.
    driver: Option<Driver>,
    /// What the session was opened on, until it starts. Here rather than an
    /// argument of the task's future, where it would stay for the session's
    /// life (an async fn keeps its arguments apart from its steps).
    target: Option<Target>,
    session: Session,
    hub: Hub,
    room: Option<RoomName>,
    /// Holds the relay's shutdown open until the session ends.
    _guard: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Connection {
    /// Joins the room or topic watch the session was opened on.
    async fn start(&mut self) -> Result<(), ApiError> {
        let target = self.target.take().unwrap_or(Target::Bare);
        // Joining awaits the broker: boxed, so its future takes memory only
        // while it runs, not in every idle session's task.
        let started = match target {
            Target::Bare => {
                self.session.greet();
                Ok(())
            }
            Target::Room(room, since) => {
                self.room = Some(room.clone());
                self.session.set_home(room.clone());
                Box::pin(self.session.join(room, since)).await
            }
            Target::Topics(room, filter, since) => {
                self.room = Some(room.clone());
                self.session.set_home(room.clone());
                Box::pin(self.session.watch(room, filter, since)).await
            }
        };
        if let Some(room) = &self.room {
            tracing::Span::current().record("room", tracing::field::display(room));
        }
        match &started {
            Ok(()) => tracing::debug!("session opened"),
            Err(e) => tracing::debug!(error = e.code(), "session refused"),
        }
        started
    }

    /// Ends the session: the peer leaves its rooms at once (its `leave` and
    /// wills go out without waiting for the client), then the staged events,
    /// the last `error` event and the close frame go out, as far as the
    /// client takes them within the write timeout, and the socket is shut.
    async fn finish(&mut self, end: End) {
        let code = end.code.map(CloseCode::code);
        // 0 in the span: the client went away before the relay sent a close frame.
        tracing::Span::current().record("close_code", code.unwrap_or(0));
        tracing::debug!(close_code = code, reason = end.reason, "session closed");
        self.session.set_leave_reason(end.leave_reason);
        self.session.end();
        if let Some(socket) = self.socket.as_mut() {
            end.send(socket).await;
        }
    }

    /// The session loop: the driver says what goes out (events, pings, the
    /// end), the socket writes it while reading ops in.
    async fn drive(&mut self) -> End {
        let Connection {
            socket,
            driver,
            session,
            hub,
            room,
            ..
        } = self;
        let Some(socket) = socket.as_mut() else {
            return End::gone();
        };
        let room = room.as_ref();
        let config = hub.config();
        let driver = driver.insert(Driver::new(
            session,
            config.ping_interval,
            Some(config.idle_timeout),
            hub.auth().leeway(),
            config.shutdown_grace,
        ));
        // What is ready at once (the welcome) is staged before the socket is
        // first written, so a handshake answered on the socket sends its
        // `101` and the welcome in one write.
        if let Some(step) = driver.step(session, true, Event::ws_frame).now_or_never()
            && let Some(end) = stage_step(socket, step)
        {
            return end;
        }
        // Reading the client (ops, pongs) must not starve behind a busy room,
        // or a live client would look idle: the two sources take turns at
        // being polled first. While a write is pending, the session's events
        // wait in its bounded queues (a client that stays behind is cut:
        // write timeout, slow consumer) and everything else goes on: reads,
        // timers, the drain. Polled by hand, not with `select!` over two
        // futures, so an idle session's task holds no future state.
        let mut client_first = false;
        loop {
            client_first = !client_first;
            let writable = !socket.is_writing();
            let wake = poll_fn(|cx| {
                if client_first && let Poll::Ready(io) = socket.poll_next(cx) {
                    return Poll::Ready(Wake::Socket(io));
                }
                if let Poll::Ready(step) = driver.poll_step(session, cx, writable, Event::ws_frame)
                {
                    return Poll::Ready(Wake::Driver(step));
                }
                if !client_first && let Poll::Ready(io) = socket.poll_next(cx) {
                    return Poll::Ready(Wake::Socket(io));
                }
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Driver(step) => {
                    if let Some(end) = stage_step(socket, step) {
                        return end;
                    }
                }
                Wake::Socket(io) => match io {
                    SocketIo::Flushed => {}
                    SocketIo::WriteFailed(e) => return End::write_failed(e),
                    SocketIo::Closed => return End::gone(),
                    SocketIo::Message(incoming) => {
                        driver.heard_from_client();
                        match incoming {
                            Err(e) => return End::bad_frames(e),
                            // Boxed, parsing included: the op takes memory
                            // only while it is handled.
                            Ok(Incoming::Text(text)) => {
                                Box::pin(handle_text(session, &text, room)).await
                            }
                            Ok(Incoming::Binary) => {
                                session.push(ApiError::Unsupported.to_event(None))
                            }
                            Ok(Incoming::Ping(payload)) => {
                                socket.stage(vec![frame::pong(&payload)])
                            }
                            Ok(Incoming::Pong) => {}
                            Ok(Incoming::Close(code)) => {
                                // Answer the client's close by echoing its code
                                // (RFC 6455 §5.5.1); its session ends normally.
                                let echo = match code {
                                    Some(code) => frame::close(code, ""),
                                    None => frame::close_empty(),
                                };
                                // Boxed: rare, kept out of every idle session's task.
                                let _ =
                                    Box::pin(socket.flush_then_send(std::slice::from_ref(&echo)))
                                        .await;
                                // finish() shuts the socket down after this.
                                return End::gone();
                            }
                        }
                        // A client that sends ops but does not read their
                        // answers fills its queue: cut it as a slow consumer
                        // rather than read on while it is behind.
                        if session.is_backlogged() {
                            Metrics::add(&hub.metrics().slow_consumers, 1);
                            return End::error(ApiError::SlowConsumer, LeaveReason::Closed);
                        }
                    }
                },
            }
        }
    }
}

/// Parses and handles one op the client sent; its answer is queued.
async fn handle_text(session: &mut Session, text: &str, room: Option<&RoomName>) {
    match parse_op(text) {
        Ok((op, reference)) => session.handle(op, reference, room).await,
        Err(e) => session.push(ApiError::BadRequest(e.message).to_event(e.reference.as_deref())),
    }
}

/// What woke the session loop.
enum Wake {
    Driver(Step),
    Socket(SocketIo),
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

/// How a session loop ended.
struct End {
    code: Option<CloseCode>,
    reason: &'static str,
    error: Option<Arc<Event>>,
    leave_reason: LeaveReason,
    /// The client took no bytes for the write timeout: what waits for it is
    /// dropped and the close frame is tried once, without waiting.
    stalled: bool,
}

impl From<Ending> for End {
    fn from(ending: Ending) -> End {
        End {
            code: ending.close.map(|(code, _)| code),
            reason: ending.close.map_or("", |(_, reason)| reason),
            error: ending.error,
            leave_reason: ending.leave_reason,
            stalled: false,
        }
    }
}

impl End {
    fn gone() -> End {
        End {
            code: None,
            reason: "",
            error: None,
            leave_reason: LeaveReason::Closed,
            stalled: false,
        }
    }

    /// A write failed: the client went away, or took no bytes for the write
    /// timeout (then its peer leaves with reason `timeout`, as a silent one
    /// does, and a close 4508 is tried once without waiting).
    fn write_failed(e: std::io::Error) -> End {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return End {
                code: Some(CloseCode::SlowConsumer),
                reason: "took no bytes for the write timeout",
                error: None,
                leave_reason: LeaveReason::Timeout,
                stalled: true,
            };
        }
        End::gone()
    }

    /// The session could not start (its join was refused).
    fn refused(e: ApiError, hub: &Hub) -> End {
        if e.close_code() == Some(CloseCode::Unauthorized) {
            Metrics::add(&hub.metrics().auth_failures, 1);
        }
        End {
            code: Some(e.close_code().unwrap_or(CloseCode::Protocol)),
            reason: e.code(),
            error: Some(e.to_event(None)),
            leave_reason: LeaveReason::Closed,
            stalled: false,
        }
    }

    fn error(e: ApiError, leave_reason: LeaveReason) -> End {
        End::from(Ending::error(e, leave_reason))
    }

    /// Sends the `error` event and the close frame this end carries, if any,
    /// and shuts the socket's write side.
    async fn send(self, socket: &mut Socket) {
        let mut last = Vec::with_capacity(2);
        if let Some(error) = self.error {
            last.push(error.ws_frame());
        }
        if let Some(code) = self.code {
            last.push(frame::close(code.code(), self.reason));
        }
        if self.stalled {
            // Nothing more is waited for: one try, then the TCP connection goes.
            socket.discard_staged();
            let _ = futures_util::FutureExt::now_or_never(socket.send(&last));
        } else {
            // What was staged goes first (the events before the end), then the
            // last words; a client that takes nothing is cut by the write timeout.
            let _ = socket.flush_then_send(&last).await;
        }
        socket.shutdown().await;
    }

    /// The client's frames broke the protocol: close 1002 for framing, 1007
    /// for a payload that is not UTF-8, 1009 for size.
    fn bad_frames(e: FrameError) -> End {
        let (code, reason) = match e {
            FrameError::TooLarge => {
                return End::error(
                    ApiError::TooLarge("frame over the message size limit".into()),
                    LeaveReason::Closed,
                );
            }
            FrameError::Protocol(why) => (CloseCode::ProtocolError, why),
            FrameError::InvalidUtf8(why) => (CloseCode::InvalidPayload, why),
        };
        End {
            code: Some(code),
            reason,
            error: None,
            leave_reason: LeaveReason::Closed,
            stalled: false,
        }
    }
}
