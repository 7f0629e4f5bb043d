//! What a route takes from a request, checked before its handler runs: a
//! valid room (and topic), the authenticated writer counted against the
//! write rate, a stream's query, and what the client accepts.

use axum::extract::{FromRequestParts, Path};
use axum::http::{HeaderMap, Method, header};
use serde::Deserialize;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{Hub, Will};
use crate::protocol::{EventId, RoomName, payload_from_json, payload_from_text};

/// The `{room}` segment of a path, validated: a handler gets a real room name
/// or the request is refused with `400` first.
pub struct ValidRoom(pub RoomName);

impl<S: Send + Sync> FromRequestParts<S> for ValidRoom {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        let raw = params
            .get("room")
            .ok_or_else(|| ApiError::BadRequest("no room in the path".into()))?;
        Ok(ValidRoom(RoomName::parse(raw)?))
    }
}

/// The caller of a write route (message POST, topic PUT/POST/DELETE, state
/// PUT, will PUT/DELETE, refresh): authenticated, then counted against the
/// hub's one write-rate policy ([`Hub::admit_write`]) before the handler runs,
/// so no write route can skip it.
pub struct Writer(pub Principal);

impl FromRequestParts<Hub> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        hub: &Hub,
    ) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, hub).await?;
        hub.admit_write(&principal)?;
        Ok(Writer(principal))
    }
}

/// Query parameters of a room or topic GET.
#[derive(Debug, Default, Deserialize)]
pub struct StreamQuery {
    /// WebSocket resume point.
    since: Option<String>,
    /// SSE resume point, for an EventSource that cannot set `Last-Event-ID`.
    last_event_id: Option<String>,
    /// SSE will: topic to set when the stream ends without a leave.
    will_topic: Option<String>,
    /// SSE will: the value (JSON when it parses as JSON, else text).
    will_data: Option<String>,
    /// SSE will: delay in seconds.
    will_after: Option<f64>,
}

impl StreamQuery {
    /// The resume point: the `Last-Event-ID` header, else `last_event_id`, else `since`.
    pub fn resume_point(&self, headers: &HeaderMap) -> Result<Option<EventId>, ApiError> {
        let header = headers
            .get("last-event-id")
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::BadRequest("Last-Event-ID is not an event id".into()))
            })
            .transpose()?;
        // Every one given must be an event id (an empty one counts as not
        // given); the first one given is the resume point.
        let mut first = None;
        for given in [header, self.last_event_id.as_deref(), self.since.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
        {
            let id = given.parse::<EventId>().map_err(ApiError::from)?;
            first = first.or(Some(id));
        }
        Ok(first)
    }

    /// The will the stream asked for, checked.
    pub fn will(&self) -> Result<Option<Will>, ApiError> {
        let Some(topic) = &self.will_topic else {
            // No will without a topic, but a delay given is still checked.
            if let Some(after) = self.will_after {
                Will::delay(after)?;
            }
            return Ok(None);
        };
        let data = match self.will_data.as_deref() {
            None => crate::protocol::null_payload(),
            Some(text) => payload_from_json(text).unwrap_or_else(|_| payload_from_text(text)),
        };
        Ok(Some(Will::new(topic, data, self.will_after)?))
    }
}

/// A room or topic GET's method and headers, from which its transport is
/// picked: `head` for a `HEAD` (which never opens a session).
pub struct Asked {
    /// True for a `HEAD`.
    pub head: bool,
    /// The request's headers.
    pub headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for Asked {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Asked {
            head: parts.method == Method::HEAD,
            headers: parts.headers.clone(),
        })
    }
}

/// The `{room}` and `{filter...}` of a topic path, the room validated (the
/// topic or filter is parsed by the handler, which knows which it wants).
pub struct TopicRoute {
    /// The room.
    pub room: RoomName,
    /// The topic or filter, as written.
    pub topic: String,
}

impl<S: Send + Sync> FromRequestParts<S> for TopicRoute {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let ValidRoom(room) = ValidRoom::from_request_parts(parts, state).await?;
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        let topic = params
            .get("filter")
            .cloned()
            .ok_or_else(|| ApiError::BadRequest("no topic in the path".into()))?;
        Ok(TopicRoute { room, topic })
    }
}

/// True when the client asked for JSON and not for an event stream.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = accept(headers);
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

/// The request's `Accept` header, or empty.
pub fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
