//! WebSocket transport: one task per connection reads ops and writes events.
//! Auth failures still complete the upgrade (a browser cannot read a failed
//! handshake's status), send one `error` event and close with 4401/4403.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::SinkExt;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::{Instant, MissedTickBehavior};

use super::{expiring_event, expiry_deadline, sleep_until_opt, warning_deadline};
use crate::auth::{Principal, SUBPROTOCOL};
use crate::error::ApiError;
use crate::hub::{Hub, Next, Session};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{CloseCode, Event, EventId, LeaveReason, RoomName, parse_op};
use crate::topic::TopicFilter;

/// Bytes tungstenite reads from the socket at a time; small, because idle
/// connections are the common case (clients send few, small ops; a larger
/// frame still arrives whole). 8 KiB cost 7 KiB of RSS per idle socket.
const READ_BUFFER: usize = 1024;
/// Bytes gathered before a write is flushed. tungstenite keeps its write
/// buffer's capacity for the connection's life, so this is held per socket:
/// 16 KiB measured 24 KB of RSS per idle socket, 4 KiB 17 KB, with the same
/// fan-out CPU (1.25 us per delivery into a room of 1000).
const WRITE_BUFFER: usize = 4 * 1024;
/// Most events written in one batch before a flush.
const MAX_BATCH: usize = 64;

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
    ws: WebSocketUpgrade,
    headers: &HeaderMap,
    hub: Hub,
    auth: Result<Principal, ApiError>,
    target: Target,
    address: IpAddr,
) -> Response {
    let max = hub.config().max_message_bytes;
    let mut ws = ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Room for one outgoing event (payload plus envelope) beyond the batch buffer.
        .max_write_buffer_size(WRITE_BUFFER + 2 * max + 4096)
        .max_message_size(max)
        .max_frame_size(max);
    let offers_subprotocol = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if offers_subprotocol {
        ws = ws.protocols([SUBPROTOCOL]);
    }
    let session = match auth {
        Ok(principal) => match hub.open_session(principal, Transport::WebSocket, address) {
            Ok(session) => Ok(session),
            Err(e) => return e.into_response(),
        },
        Err(e) => Err(e),
    };
    let guard = hub.tasks().token();
    ws.on_upgrade(move |socket| async move {
        let _guard = guard;
        match session {
            Ok(session) => run(socket, hub, session, target).await,
            Err(e) => {
                if e.close_code() == Some(CloseCode::Unauthorized) {
                    hub.guard().record_failure(address);
                }
                refuse(socket, &hub, &e).await;
            }
        }
    })
}

async fn run(socket: WebSocket, hub: Hub, session: Session, target: Target) {
    let span = tracing::debug_span!(
        "session",
        transport = "websocket",
        peer = %session.peer_id(),
        room = tracing::field::Empty,
        close_code = tracing::field::Empty,
    );
    tracing::Instrument::instrument(serve_session(socket, hub, session, target), span).await;
}

async fn serve_session(mut socket: WebSocket, hub: Hub, mut session: Session, target: Target) {
    let (room, started) = match target {
        Target::Bare => {
            session.greet();
            (None, Ok(()))
        }
        Target::Room(room, since) => (Some(room.clone()), session.join(room, since).await),
        Target::Topics(room, filter, since) => {
            (Some(room.clone()), session.watch(room, filter, since).await)
        }
    };
    if let Some(room) = &room {
        tracing::Span::current().record("room", tracing::field::display(room));
    }
    if let Err(e) = started {
        tracing::debug!(error = e.code(), "session refused");
        return refuse(socket, &hub, &e).await;
    }
    tracing::debug!("session opened");
    let end = drive(&mut socket, &mut session, &hub, room.as_ref()).await;
    let code = end.code.map(CloseCode::code);
    // 0 in the span: the client went away before the relay sent a close frame.
    tracing::Span::current().record("close_code", code.unwrap_or(0));
    tracing::debug!(close_code = code, reason = end.reason, "session closed");
    session.set_leave_reason(end.leave_reason);
    if let Some(error) = end.error {
        let _ = socket.send(Message::Text(error.json().clone())).await;
    }
    if let Some(code) = end.code {
        let _ = socket.send(close_frame(code, end.reason)).await;
    }
    let _ = socket.close().await;
}

/// Sends one `error` event and the matching close frame.
async fn refuse(mut socket: WebSocket, hub: &Hub, error: &ApiError) {
    if error.close_code() == Some(CloseCode::Unauthorized) {
        Metrics::add(&hub.metrics().auth_failures, 1);
    }
    let _ = socket
        .send(Message::Text(error.to_event(None).json().clone()))
        .await;
    let code = error.close_code().unwrap_or(CloseCode::Protocol);
    let _ = socket.send(close_frame(code, error.code())).await;
    let _ = socket.close().await;
}

fn close_frame(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.code(),
        reason: reason.into(),
    }))
}

/// How a session loop ended.
struct End {
    code: Option<CloseCode>,
    reason: &'static str,
    error: Option<Arc<Event>>,
    leave_reason: LeaveReason,
}

impl End {
    fn gone() -> End {
        End {
            code: None,
            reason: "",
            error: None,
            leave_reason: LeaveReason::Closed,
        }
    }

    fn error(e: ApiError, leave_reason: LeaveReason) -> End {
        End {
            code: Some(e.close_code().unwrap_or(CloseCode::Internal)),
            reason: e.code(),
            error: Some(e.to_event(None)),
            leave_reason,
        }
    }
}

async fn drive(
    socket: &mut WebSocket,
    session: &mut Session,
    hub: &Hub,
    room: Option<&RoomName>,
) -> End {
    let config = hub.config();
    let ping_every = config.ping_interval;
    let idle_timeout = config.idle_timeout;
    let leeway = hub.auth().leeway();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Timers live across iterations and are reset, not rebuilt per event.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut expires_at = session.expires_at();
    let expiry = sleep_until_opt(expiry_deadline(expires_at, leeway));
    tokio::pin!(expiry);
    let warning = sleep_until_opt(warning_deadline(expires_at, leeway));
    tokio::pin!(warning);
    let shutdown = hub.shutdown().clone();
    // On shutdown the session keeps serving until its own random moment in the
    // drain, then closes with a suggested reconnect delay.
    let (close_after, reconnect_after) = crate::shutdown::drain_plan(hub.config().shutdown_grace);
    let draining = async {
        shutdown.cancelled().await;
        tokio::time::sleep(close_after).await;
    };
    tokio::pin!(draining);
    loop {
        // Not biased: reading the client (ops, pongs) must not starve behind a
        // busy room, or a live client would look idle.
        tokio::select! {
            _ = &mut draining => {
                let secs = reconnect_after.as_secs().max(1);
                let event = Event::error("draining", &format!("the relay is shutting down; reconnect in {} ms", reconnect_after.as_millis()), None, Some(secs));
                return End { code: Some(CloseCode::GoingAway), reason: "draining; reconnect later", error: Some(event), leave_reason: LeaveReason::Closed };
            }
            next = session.next() => match next {
                Next::Event(event) => {
                    if let Err(end) = write_batch(socket, session, event).await {
                        return end;
                    }
                }
                Next::Close(e) => {
                    if e == ApiError::SlowConsumer {
                        Metrics::add(&hub.metrics().slow_consumers, 1);
                    }
                    return End::error(e, LeaveReason::Closed);
                }
            },
            frame = socket.recv() => {
                idle.as_mut().reset(Instant::now() + idle_timeout);
                match frame {
                    None => return End::gone(),
                    Some(Err(e)) => return read_error(e),
                    Some(Ok(Message::Text(text))) => match parse_op(&text) {
                        Ok((op, reference)) => {
                            session.handle(op, reference, room).await;
                        }
                        Err(e) => session.push(ApiError::BadRequest(e.message).to_event(e.reference.as_deref())),
                    },
                    Some(Ok(Message::Binary(_))) => session.push(ApiError::Unsupported.to_event(None)),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) => return End::gone(),
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return End::gone();
                }
            }
            _ = &mut idle => {
                return End { code: Some(CloseCode::IdleTimeout), reason: "idle timeout", error: None, leave_reason: LeaveReason::Timeout };
            }
            _ = &mut expiry => {
                return End::error(ApiError::TokenExpired, LeaveReason::Expired);
            }
            _ = &mut warning => {
                if let Some(event) = expiring_event(expires_at, leeway) {
                    session.push(event);
                }
                warning.set(sleep_until_opt(None));
            }
        }
        if session.expires_at() != expires_at {
            // A refresh brought a new token: move the deadline and the warning.
            expires_at = session.expires_at();
            expiry.set(sleep_until_opt(expiry_deadline(expires_at, leeway)));
            warning.set(sleep_until_opt(warning_deadline(expires_at, leeway)));
        }
    }
}

/// Writes `first` and whatever else is ready (up to a batch), then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    session: &mut Session,
    first: Arc<Event>,
) -> Result<(), End> {
    let mut written = 1;
    socket
        .feed(Message::Text(first.json().clone()))
        .await
        .map_err(|_| End::gone())?;
    while written < MAX_BATCH {
        let next = futures_util::FutureExt::now_or_never(session.next());
        match next {
            Some(Next::Event(event)) => {
                socket
                    .feed(Message::Text(event.json().clone()))
                    .await
                    .map_err(|_| End::gone())?;
                written += 1;
            }
            Some(Next::Close(e)) => {
                let _ = socket.flush().await;
                return Err(End::error(e, LeaveReason::Closed));
            }
            None => break,
        }
    }
    socket.flush().await.map_err(|_| End::gone())?;
    session.count_out(written as u64);
    Ok(())
}

fn read_error(e: axum::Error) -> End {
    let too_big = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<tungstenite::Error>())
        .is_some_and(|t| matches!(t, tungstenite::Error::Capacity(_)));
    if too_big {
        return End::error(
            ApiError::TooLarge("frame over the message size limit".into()),
            LeaveReason::Closed,
        );
    }
    End::gone()
}
