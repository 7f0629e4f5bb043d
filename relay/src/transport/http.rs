//! Plain HTTP: publish with POST, the room snapshot and the room list as JSON.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{Hub, Publish};
use crate::protocol::{Payload, PeerInfo, RoomName, payload_from_json, payload_from_text};

/// Query parameters of `POST /rooms/{room}`.
#[derive(Debug, Default, Deserialize)]
pub struct PublishQuery {
    /// Message type (default `message`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Direct recipient peer id.
    pub to: Option<String>,
    /// Topic.
    pub topic: Option<String>,
    /// `true`/`1`: retain on the topic.
    pub retain: Option<String>,
    /// The caller's own SSE peer id, to publish as that peer.
    pub conn: Option<String>,
    /// A token (read by the auth extractor; listed so it is not an unknown field).
    pub token: Option<String>,
}

/// Reads a request body of at most `limit` bytes as a payload: JSON when the
/// content type says so, otherwise UTF-8 text that becomes a JSON string.
pub async fn read_payload(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Payload, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is over the {limit}-byte limit"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::UnsupportedMedia("the body must be JSON or UTF-8 text".into()))?;
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        payload_from_json(text)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
    } else {
        Ok(payload_from_text(text))
    }
}

fn parse_flag(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!(
            "retain must be true, 1, false or 0 (got {other:?})"
        ))),
    }
}

#[derive(Serialize)]
struct Published {
    id: String,
}

/// `POST /rooms/{room}`: publish the body; `202 {"id"}`.
pub async fn publish(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    query: PublishQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let data = read_payload(headers, body, hub.config().max_message_bytes).await?;
    let from: Arc<str> = match query.conn.as_deref() {
        Some(conn) => hub.resolve_conn(&principal, &room, conn).await?,
        None => principal.sub.clone(),
    };
    let req = Publish {
        kind: query.kind.unwrap_or_else(|| "message".into()),
        data,
        to: query.to,
        topic: query.topic,
        retain: parse_flag(query.retain.as_deref())?,
    };
    let event = hub.publish(&principal, &room, from, req).await?;
    let id = event.id().map(|id| id.to_string()).unwrap_or_default();
    Ok((StatusCode::ACCEPTED, Json(Published { id })).into_response())
}

#[derive(Serialize)]
struct Snapshot<'a> {
    room: &'a RoomName,
    peers: &'a [PeerInfo],
    topics: serde_json::Map<String, serde_json::Value>,
}

/// `GET /rooms/{room}` with `Accept: application/json`: the room's presence.
pub async fn snapshot(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
) -> Result<Response, ApiError> {
    let snap = hub.snapshot(&principal, &room).await?;
    let body = Snapshot {
        room: &room,
        peers: &snap.peers,
        topics: serde_json::Map::new(),
    };
    Ok(Json(body).into_response())
}

/// `GET /rooms`: the rooms this caller may read that have peers.
pub async fn rooms(hub: &Hub, principal: Principal) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Body {
        rooms: Vec<crate::broker::RoomSummary>,
    }
    let rooms = hub.rooms(&principal).await?;
    Ok(Json(Body { rooms }).into_response())
}
