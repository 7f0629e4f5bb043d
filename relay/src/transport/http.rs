//! Plain HTTP: publish with POST, topics, history, the room snapshot and
//! the room list as JSON, and the SSE peer's own refresh, state and will.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::broker::Retained;
use crate::error::ApiError;
use crate::hub::{Hub, Will};
use crate::idempotency::IdempotencyKey;
use crate::protocol::{
    EventId, Payload, PeerInfo, Publish, RoomName, payload_from_json, payload_from_text,
};
use crate::topic::{Topic, TopicFilter};

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
    /// Lifetime in seconds of a retained value.
    pub ttl: Option<u64>,
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

/// Query of the endpoints that act for the caller's own SSE peer (refresh,
/// state, will).
#[derive(Debug, Deserialize)]
pub struct PeerQuery {
    /// The SSE session's peer id (from its `welcome`).
    pub conn: String,
    /// The will's topic.
    pub topic: Option<String>,
    /// The will's delay in seconds.
    pub after: Option<f64>,
}

/// `POST /rooms/{room}/refresh?conn=<peer>` with a new token: extends the
/// caller's own SSE session without reconnecting; `202`.
pub async fn refresh(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    query: PeerQuery,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let token = crate::auth::token_from(headers, uri)?.ok_or(ApiError::TokenMissing)?;
    hub.refresh_session(&principal, &room, &query.conn, &token)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `PUT /rooms/{room}/state?conn=<peer>`: the presence state of the caller's
/// own SSE peer (the `state` op of a WebSocket); `202`.
pub async fn put_state(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    query: PeerQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let state = read_payload(headers, body, hub.config().max_message_bytes).await?;
    hub.set_peer_state(&principal, &room, &query.conn, state)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `PUT /rooms/{room}/will?conn=<peer>&topic=<t>&after=<s>`: the will of the
/// caller's own SSE peer (the `will` op of a WebSocket), the body its value;
/// `DELETE` (no body) cancels it. `202`.
pub async fn set_will(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    query: PeerQuery,
    value: Option<(&HeaderMap, Body)>,
) -> Result<Response, ApiError> {
    let will = match value {
        None => None,
        Some((headers, body)) => {
            let topic = query
                .topic
                .as_deref()
                .ok_or_else(|| ApiError::BadRequest("a will needs a topic".into()))?;
            let data = read_payload(headers, body, hub.config().max_message_bytes).await?;
            Some(Will::new(topic, data, query.after)?)
        }
    };
    hub.set_peer_will(&principal, &room, &query.conn, will)
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Parses a query flag: `true`/`1` or `false`/`0`.
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

/// The `Idempotency-Key` header, checked: a retry carrying the same key as
/// an earlier write gets that write's id and changes nothing.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::BadRequest("the Idempotency-Key header must be visible ASCII".into())
    })?;
    Ok(Some(IdempotencyKey::parse(text)?))
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
    let key = idempotency_key(headers)?;
    let data = read_payload(headers, body, hub.config().max_message_bytes).await?;
    let from = sender(hub, &principal, &room, query.conn.as_deref()).await?;
    let req = Publish {
        kind: query.kind.map_or_else(|| "message".into(), Arc::from),
        data,
        to: query.to.map(Arc::from),
        topic: query.topic.map(Arc::from),
        retain: parse_flag(query.retain.as_deref())?,
        ttl: query.ttl,
        key,
    };
    let event = hub.publish(&principal, &room, from, req).await?;
    Ok(accepted(event.id()))
}

/// Who a write comes from: the caller's own peer named by `conn`, else its `sub`.
async fn sender(
    hub: &Hub,
    principal: &Principal,
    room: &RoomName,
    conn: Option<&str>,
) -> Result<Arc<str>, ApiError> {
    match conn {
        Some(conn) => hub.resolve_conn(principal, room, conn).await,
        None => Ok(principal.sub.clone()),
    }
}

fn accepted(id: Option<EventId>) -> Response {
    let id = id.map(|id| id.to_string()).unwrap_or_default();
    (StatusCode::ACCEPTED, Json(Published { id })).into_response()
}

/// Query parameters of the topic writes.
#[derive(Debug, Default, Deserialize)]
pub struct TopicQuery {
    /// Lifetime in seconds of a retained value (`PUT`).
    pub ttl: Option<u64>,
    /// Message type (`POST`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The caller's own SSE peer id, to write as that peer.
    pub conn: Option<String>,
}

/// `PUT /rooms/{room}/topics/{topic}`: set the retained value.
pub async fn put_topic(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    topic: &str,
    query: TopicQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let topic = Topic::parse(topic)?;
    let key = idempotency_key(headers)?;
    let data = read_payload(headers, body, hub.config().max_message_bytes).await?;
    let from = sender(hub, &principal, &room, query.conn.as_deref()).await?;
    let event = hub
        .set_retained(
            &principal,
            &room,
            topic,
            data,
            from,
            query.ttl,
            key.as_ref(),
        )
        .await?;
    Ok(accepted(event.id()))
}

/// `DELETE /rooms/{room}/topics/{topic}`: clear the retained value.
pub async fn delete_topic(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    topic: &str,
    query: TopicQuery,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let topic = Topic::parse(topic)?;
    let key = idempotency_key(headers)?;
    let from = sender(hub, &principal, &room, query.conn.as_deref()).await?;
    let event = hub
        .clear_retained(&principal, &room, topic, from, key.as_ref())
        .await?;
    Ok(accepted(event.id()))
}

/// `POST /rooms/{room}/topics/{topic}`: publish to the topic without retaining.
pub async fn post_topic(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    topic: &str,
    query: TopicQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    let data = read_payload(headers, body, hub.config().max_message_bytes).await?;
    let from = sender(hub, &principal, &room, query.conn.as_deref()).await?;
    let req = Publish {
        kind: query.kind.map_or_else(|| "message".into(), Arc::from),
        topic: Some(Arc::from(topic)),
        key,
        ..Publish::data(data)
    };
    let event = hub.publish(&principal, &room, from, req).await?;
    Ok(accepted(event.id()))
}

#[derive(Serialize)]
struct TopicValue<'a> {
    topic: &'a str,
    data: &'a serde_json::value::RawValue,
    ts: u64,
    from: &'a str,
}

impl<'a> From<&'a Retained> for TopicValue<'a> {
    fn from(r: &'a Retained) -> Self {
        TopicValue {
            topic: r.topic.as_str(),
            data: &r.data,
            ts: r.ts,
            from: &r.from,
        }
    }
}

/// `GET /rooms/{room}/topics/{filter}` as JSON: an exact topic's value (404 when
/// none), or the list of values matching a filter.
pub async fn get_topics(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    filter: &TopicFilter,
) -> Result<Response, ApiError> {
    let values = hub.retained(&principal, &room, Some(filter)).await?;
    if filter.is_exact() {
        return match values.first() {
            Some(value) => Ok(Json(TopicValue::from(value)).into_response()),
            None => Err(ApiError::NotFound(format!(
                "topic {} holds no value in room {room}",
                filter.as_str()
            ))),
        };
    }
    let list: Vec<TopicValue<'_>> = values.iter().map(TopicValue::from).collect();
    Ok(Json(list).into_response())
}

/// Query parameters of `GET /rooms/{room}/history`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// Events after this id (all kept without it).
    pub since: Option<String>,
    /// Most events returned (default 100, at most the history size).
    pub limit: Option<u32>,
}

/// `GET /rooms/{room}/history`: kept events, oldest first (after `since`, or
/// the newest without it), and whether they are all that happened (`complete`).
pub async fn history(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
    query: HistoryQuery,
) -> Result<Response, ApiError> {
    // An empty `since` means none, as on the stream routes.
    let since = query
        .since
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<EventId>)
        .transpose()?;
    let max = hub.config().history_size.max(1);
    let limit = query.limit.map_or(100, |l| l as usize).clamp(1, max);
    let history = hub.history(&principal, &room, since, limit).await?;
    // The events are already serialized: splice their bytes in.
    let mut body = String::with_capacity(
        64 + history
            .events
            .iter()
            .map(|e| e.json().len() + 1)
            .sum::<usize>(),
    );
    body.push_str("{\"room\":");
    body.push_str(&serde_json::to_string(&room).unwrap_or_default());
    body.push_str(",\"complete\":");
    body.push_str(if history.complete { "true" } else { "false" });
    body.push_str(",\"events\":[");
    for (i, event) in history.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.json());
    }
    body.push_str("]}");
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

#[derive(Serialize)]
struct Snapshot<'a> {
    room: &'a RoomName,
    peers: &'a [PeerInfo],
    topics: std::collections::BTreeMap<&'a str, TopicValue<'a>>,
}

/// `GET /rooms/{room}` with `Accept: application/json`: the room's presence.
pub async fn snapshot(
    hub: &Hub,
    principal: Principal,
    room: RoomName,
) -> Result<Response, ApiError> {
    let snap = hub.snapshot(&principal, &room).await?;
    let retained = hub.retained(&principal, &room, None).await?;
    let body = Snapshot {
        room: &room,
        peers: &snap.peers,
        topics: retained
            .iter()
            .map(|r| (r.topic.as_str(), TopicValue::from(r)))
            .collect(),
    };
    Ok(Json(body).into_response())
}

/// Query parameters of `GET /rooms`.
#[derive(Debug, Default, Deserialize)]
pub struct RoomsQuery {
    /// Where to continue: the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Rooms per page (1 to 1000, default 100).
    pub limit: Option<u64>,
}

/// Rooms per page of `GET /rooms` unless the caller asks.
pub const ROOMS_PAGE: usize = 100;
/// Most rooms per page of `GET /rooms`.
pub const MAX_ROOMS_PAGE: usize = 1000;

/// `GET /rooms`: a page of the rooms this caller may read that have peers
/// or values, and `next_cursor` while more pages follow.
pub async fn rooms(
    hub: &Hub,
    principal: Principal,
    query: RoomsQuery,
) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Body {
        rooms: Vec<crate::broker::RoomSummary>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    }
    let limit = match query.limit {
        None => ROOMS_PAGE,
        Some(l) if (1..=MAX_ROOMS_PAGE as u64).contains(&l) => l as usize,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "limit must be 1 to {MAX_ROOMS_PAGE}"
            )));
        }
    };
    let cursor = query.cursor.as_deref().filter(|c| !c.is_empty());
    let page = hub.rooms(&principal, cursor, limit).await?;
    Ok(Json(Body {
        rooms: page.rooms,
        next_cursor: page.next,
    })
    .into_response())
}
