//! The room routes: `/rooms/{room}` (WebSocket, SSE, JSON snapshot or
//! publish, picked by method and headers), its history, the SSE peer's own
//! refresh, state and will, and the `/rooms` listing. Each handler checks
//! what it was given and hands the work to one transport.

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::WithRejection;

use super::extract::{Asked, StreamQuery, ValidRoom, Writer, wants_json};
use super::middleware::{ClientAddr, Upgrade, check_upgrade};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::protocol::RoomName;
use crate::transport::http::{self, HistoryQuery, PeerQuery, PublishQuery, RoomsQuery};
use crate::transport::sse;
use crate::transport::ws::{self, Target};

/// The answer to a `HEAD` on a room or topic path: the status and
/// `Content-Type` a GET would get, checked against the caller's rights, with
/// no session opened (so no peer ever sees a `join` for it).
pub(super) fn head_only(
    principal: &Principal,
    room: &RoomName,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    principal.require(room, crate::auth::Rights::READ)?;
    Ok(([(header::CONTENT_TYPE, content_type)], Body::empty()).into_response())
}

/// `GET /rooms/{room}`: a WebSocket upgrade, a JSON snapshot
/// (`Accept: application/json`), or else an SSE stream.
pub(super) async fn room_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<StreamQuery>, ApiError>,
    upgrade: Upgrade,
    Asked { head, headers }: Asked,
    auth: Result<Principal, ApiError>,
) -> Result<Response, ApiError> {
    check_upgrade(&hub, &headers, &upgrade)?;
    let since = query.resume_point(&headers)?;
    if let Ok(upgrade) = upgrade {
        let target = Target::Room(room, since);
        return Ok(ws::upgrade(upgrade, &headers, hub, auth, target, address));
    }
    let principal = auth?;
    // Every query parameter is checked, whichever answer it is for.
    let will = query.will()?;
    let json = wants_json(&headers);
    if head {
        let kind = if json {
            "application/json"
        } else {
            "text/event-stream"
        };
        return head_only(&principal, &room, kind);
    }
    if json {
        return http::snapshot(&hub, principal, room).await;
    }
    sse::open_room(&hub, principal, address, room, since, will).await
}

/// `POST /rooms/{room}`: publish the body.
pub(super) async fn room_post(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PublishQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Result<Response, ApiError> {
    http::publish(&hub, principal, room, query, &headers, body).await
}

/// `POST /rooms/{room}/refresh?conn=<peer>` with a new token.
pub(super) async fn refresh_post(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    headers: HeaderMap,
    uri: Uri,
    Writer(principal): Writer,
) -> Result<Response, ApiError> {
    http::refresh(&hub, principal, room, query, &headers, &uri).await
}

/// `PUT /rooms/{room}/state?conn=<peer>`.
pub(super) async fn state_put(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Result<Response, ApiError> {
    http::put_state(&hub, principal, room, query, &headers, body).await
}

/// `PUT /rooms/{room}/will?conn=<peer>&topic=<t>&after=<s>`.
pub(super) async fn will_put(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Result<Response, ApiError> {
    http::set_will(&hub, principal, room, query, Some((&headers, body))).await
}

/// `DELETE /rooms/{room}/will?conn=<peer>`.
pub(super) async fn will_delete(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    Writer(principal): Writer,
) -> Result<Response, ApiError> {
    http::set_will(&hub, principal, room, query, None).await
}

/// `GET /rooms/{room}/history`.
pub(super) async fn history_get(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<HistoryQuery>, ApiError>,
    auth: Result<Principal, ApiError>,
) -> Result<Response, ApiError> {
    http::history(&hub, auth?, room, query).await
}

/// `GET /rooms`: a WebSocket with no room yet, or the rooms the caller may read.
pub(super) async fn rooms_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    upgrade: Upgrade,
    headers: HeaderMap,
    query: Result<Query<RoomsQuery>, axum::extract::rejection::QueryRejection>,
    auth: Result<Principal, ApiError>,
) -> Result<Response, ApiError> {
    check_upgrade(&hub, &headers, &upgrade)?;
    if let Ok(upgrade) = upgrade {
        return Ok(ws::upgrade(
            upgrade,
            &headers,
            hub,
            auth,
            Target::Bare,
            address,
        ));
    }
    let principal = auth?;
    // Like every other route: no token, no listing, unless the operator
    // declared public rooms (then an anonymous caller sees those alone).
    if principal.is_anonymous() && principal.public.is_empty() {
        return Err(ApiError::TokenMissing);
    }
    let Query(query) = query?;
    http::rooms(&hub, principal, query).await
}
