//! The one error type at the edge: every failure a client can see maps here to the
//! contract's code, HTTP status and WebSocket close code, in one place.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::protocol::{CloseCode, Event, NameError};

/// A failure reported to a client, as JSON over HTTP or an `error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed name, filter, body, query or op.
    #[error("{0}")]
    BadRequest(String),
    /// No token was presented for a route that needs one.
    #[error("a token is required (Authorization: Bearer, or ?token=)")]
    TokenMissing,
    /// The token failed verification; the text says why, without echoing it.
    #[error("invalid token: {0}")]
    TokenInvalid(String),
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    TokenExpired,
    /// A valid token without the needed right.
    #[error("{0}")]
    Forbidden(String),
    /// No such room, peer, topic or route.
    #[error("{0}")]
    NotFound(String),
    /// A body or frame over the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// An idempotency key already named a different write.
    #[error(
        "this idempotency key was already used for a different write; use a new key for a new write"
    )]
    KeyReused,
    /// A body that is neither JSON nor UTF-8 text.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// A WebSocket handshake for a protocol version other than 13: `426`
    /// with `Sec-WebSocket-Version: 13`, as RFC 6455 §4.4 asks.
    #[error("this relay speaks WebSocket version 13 only")]
    WebSocketVersion,
    /// A binary WebSocket frame.
    #[error("binary frames are not supported; send JSON text frames")]
    Unsupported,
    /// Too many requests; retry after the given seconds.
    #[error("rate limited; retry after {0} s")]
    RateLimited(u64),
    /// The client's address failed authentication too often; every request
    /// from it, valid token or not, is refused for the given seconds.
    #[error(
        "too many failed authentications from your address in the last minute \
         (EDGEWIRE_AUTH_FAILURE_LIMIT); every request from it is refused for {0} more s"
    )]
    LockedOut(u64),
    /// The relay is at its connection cap.
    #[error("the relay is at capacity; retry later")]
    OverCapacity,
    /// The relay is shutting down.
    #[error("the relay is shutting down; reconnect to another instance")]
    Draining,
    /// The shared backend (Redis) cannot be reached.
    #[error("the backend is unavailable; retry later")]
    BackendUnavailable,
    /// A write got no answer from the backend in time: it may have been
    /// stored or not, but it will not be applied after this answer.
    #[error(
        "the backend did not answer in time: the write may or may not be stored, and it will \
         not be applied later; check the room's history before retrying"
    )]
    OutcomeUnknown,
    /// A bug or unexpected condition; the details stay in the relay's log.
    #[error("internal error")]
    Internal,
    /// The session fell further behind than its outbound queue allows.
    #[error("you fell too far behind the room; reconnect and resume")]
    SlowConsumer,
}

impl ApiError {
    /// One error of each contract code, for the shared fixture test of codes
    /// and statuses.
    pub fn one_of_each() -> Vec<ApiError> {
        vec![
            ApiError::BadRequest(String::new()),
            ApiError::TokenMissing,
            ApiError::TokenInvalid(String::new()),
            ApiError::TokenExpired,
            ApiError::Forbidden(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::TooLarge(String::new()),
            ApiError::UnsupportedMedia(String::new()),
            ApiError::KeyReused,
            ApiError::Unsupported,
            // LockedOut shares `rate_limited` and its status with RateLimited.
            ApiError::RateLimited(1),
            ApiError::OverCapacity,
            ApiError::Draining,
            ApiError::BackendUnavailable,
            ApiError::OutcomeUnknown,
            ApiError::Internal,
            ApiError::SlowConsumer,
        ]
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::WebSocketVersion => "bad_request",
            ApiError::TokenMissing => "token_missing",
            ApiError::TokenInvalid(_) => "token_invalid",
            ApiError::TokenExpired => "token_expired",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "too_large",
            ApiError::UnsupportedMedia(_) => "unsupported_media",
            ApiError::KeyReused => "key_reused",
            ApiError::Unsupported => "unsupported",
            ApiError::RateLimited(_) | ApiError::LockedOut(_) => "rate_limited",
            ApiError::OverCapacity => "over_capacity",
            ApiError::Draining => "draining",
            ApiError::BackendUnavailable => "backend_unavailable",
            ApiError::OutcomeUnknown => "outcome_unknown",
            ApiError::Internal => "internal",
            ApiError::SlowConsumer => "slow_consumer",
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Unsupported => StatusCode::BAD_REQUEST,
            ApiError::WebSocketVersion => StatusCode::UPGRADE_REQUIRED,
            ApiError::TokenMissing | ApiError::TokenInvalid(_) | ApiError::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::KeyReused => StatusCode::CONFLICT,
            ApiError::RateLimited(_) | ApiError::LockedOut(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::OverCapacity
            | ApiError::Draining
            | ApiError::BackendUnavailable
            | ApiError::OutcomeUnknown
            | ApiError::SlowConsumer => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before retrying, where the contract gives one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited(s) | ApiError::LockedOut(s) => Some(*s),
            ApiError::OverCapacity
            | ApiError::Draining
            | ApiError::BackendUnavailable
            | ApiError::OutcomeUnknown => Some(1),
            _ => None,
        }
    }

    /// The close code for a WebSocket session that this error ends, if it ends one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            ApiError::TokenMissing | ApiError::TokenInvalid(_) | ApiError::TokenExpired => {
                Some(CloseCode::Unauthorized)
            }
            ApiError::Forbidden(_) => Some(CloseCode::Forbidden),
            ApiError::RateLimited(_) | ApiError::LockedOut(_) => Some(CloseCode::RateLimited),
            ApiError::TooLarge(_) => Some(CloseCode::TooBig),
            ApiError::Draining | ApiError::OverCapacity => Some(CloseCode::GoingAway),
            ApiError::Internal => Some(CloseCode::Internal),
            ApiError::SlowConsumer => Some(CloseCode::SlowConsumer),
            _ => None,
        }
    }

    /// The `error` event for this error, answering the op with `reference`.
    pub fn to_event(&self, reference: Option<&RawValue>) -> Arc<Event> {
        Event::error(
            self.code(),
            &self.to_string(),
            reference,
            self.retry_after(),
        )
    }
}

/// Broker failures, mapped to the contract's codes below. Defined here, not
/// in `broker`, so that every conversion into [`ApiError`] is in this file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The shared backend cannot be reached.
    #[error("backend unavailable")]
    Unavailable,
    /// A write got no answer in time: it may or may not have been stored
    /// (but it is never applied after the relay answers).
    #[error("the write's outcome is unknown")]
    OutcomeUnknown,
    /// A direct message or `conn` named a peer that is not in the room.
    #[error("no peer {peer} in room {room}")]
    NoSuchPeer {
        /// The room.
        room: String,
        /// The missing peer id.
        peer: String,
    },
    /// An idempotency key already named a different write.
    #[error("this idempotency key was already used for a different write")]
    KeyReused,
    /// A room-listing cursor this broker did not hand out.
    #[error("bad cursor: pass the next_cursor of the previous page")]
    BadCursor,
    /// The room already holds the most retained topics allowed.
    #[error("room {room} already holds {limit} retained topics, the most allowed")]
    TooManyTopics {
        /// The room.
        room: String,
        /// The limit.
        limit: usize,
    },
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable => ApiError::BackendUnavailable,
            BrokerError::OutcomeUnknown => ApiError::OutcomeUnknown,
            BrokerError::NoSuchPeer { .. } => ApiError::NotFound(e.to_string()),
            BrokerError::TooManyTopics { .. } => ApiError::TooLarge(e.to_string()),
            BrokerError::KeyReused => ApiError::KeyReused,
            BrokerError::BadCursor => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::BadRequest(format!("bad path: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(format!("bad query: {}", e.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
        }
        if matches!(self, ApiError::Internal) {
            tracing::error!("internal error answered to a client");
        }
        let body = Body {
            error: self.code(),
            message: self.to_string(),
        };
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::WebSocketVersion) {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}
