//! How a WebSocket session ends: the close code and reason, the last
//! `error` event, why its peer leaves, and how the last words are sent.

use std::sync::Arc;

use bytes::Bytes;

use super::frame::{self, FrameError};
use super::socket::Socket;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::protocol::{CloseCode, Event, LeaveReason};
use crate::transport::driver::Ending;

/// How a session loop ended.
pub(super) struct End {
    pub(super) code: Option<CloseCode>,
    pub(super) reason: &'static str,
    pub(super) error: Option<Arc<Event>>,
    pub(super) leave_reason: LeaveReason,
    /// The client took no bytes for the write timeout: what waits for it is
    /// dropped and the close frame is tried once, without waiting.
    pub(super) stalled: bool,
    /// The echo of the client's close frame, sent after what is staged.
    pub(super) echo: Option<Bytes>,
}

impl From<Ending> for End {
    fn from(ending: Ending) -> End {
        End {
            code: ending.close.map(|(code, _)| code),
            reason: ending.close.map_or("", |(_, reason)| reason),
            error: ending.error,
            leave_reason: ending.leave_reason,
            stalled: false,
            echo: None,
        }
    }
}

impl End {
    /// The client closed: its close frame is echoed, and its peer leaves.
    pub(super) fn echo(frame: Bytes) -> End {
        End {
            echo: Some(frame),
            ..End::gone()
        }
    }

    pub(super) fn gone() -> End {
        End {
            code: None,
            reason: "",
            error: None,
            leave_reason: LeaveReason::Closed,
            stalled: false,
            echo: None,
        }
    }

    /// A write failed: the client went away, or took no bytes for the write
    /// timeout (then its peer leaves with reason `timeout`, as a silent one
    /// does, and a close 4508 is tried once without waiting).
    pub(super) fn write_failed(e: std::io::Error) -> End {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return End {
                code: Some(CloseCode::SlowConsumer),
                reason: "took no bytes for the write timeout",
                error: None,
                leave_reason: LeaveReason::Timeout,
                stalled: true,
                echo: None,
            };
        }
        End::gone()
    }

    /// The session could not start (its join was refused).
    pub(super) fn refused(e: ApiError, hub: &Hub) -> End {
        if e.close_code() == Some(CloseCode::Unauthorized) {
            Metrics::add(&hub.metrics().auth_failures, 1);
        }
        End {
            code: Some(e.close_code().unwrap_or(CloseCode::Protocol)),
            reason: e.code(),
            error: Some(e.to_event(None)),
            leave_reason: LeaveReason::Closed,
            stalled: false,
            echo: None,
        }
    }

    pub(super) fn error(e: ApiError, leave_reason: LeaveReason) -> End {
        End::from(Ending::error(e, leave_reason))
    }

    /// Sends the `error` event and the close frame this end carries, if any,
    /// and shuts the socket's write side.
    pub(super) async fn send(self, socket: &mut Socket) {
        let mut last = Vec::with_capacity(2);
        last.extend(self.echo);
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
    pub(super) fn bad_frames(e: FrameError) -> End {
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
            echo: None,
        }
    }
}
