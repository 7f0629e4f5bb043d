//! The topic routes: `/rooms/{room}/topics/{filter}` read as JSON, watched
//! over WebSocket or SSE, and set, cleared or published to over HTTP.

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum_extra::extract::WithRejection;

use super::extract::{Asked, StreamQuery, TopicRoute, Writer, accept};
use super::middleware::{ClientAddr, Upgrade, check_upgrade};
use super::rooms::head_only;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::topic::TopicFilter;
use crate::transport::http::{self, TopicQuery};
use crate::transport::sse;
use crate::transport::ws::{self, Target};

/// `GET /rooms/{room}/topics/{filter}`: a WebSocket upgrade, an SSE stream
/// (`Accept: text/event-stream` only: a topic is a value), or else the
/// matching values as JSON.
pub(super) async fn topics_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<StreamQuery>, ApiError>,
    upgrade: Upgrade,
    Asked { head, headers }: Asked,
    auth: Result<Principal, ApiError>,
) -> Result<Response, ApiError> {
    check_upgrade(&hub, &headers, &upgrade)?;
    let filter = TopicFilter::parse(&topic)?;
    let since = query.resume_point(&headers)?;
    if let Ok(upgrade) = upgrade {
        let target = Target::Topics(room, filter, since);
        return Ok(ws::upgrade(upgrade, &headers, hub, auth, target, address));
    }
    let principal = auth?;
    let streams = accept(&headers).contains("text/event-stream");
    if head {
        let kind = if streams {
            "text/event-stream"
        } else {
            "application/json"
        };
        return head_only(&principal, &room, kind);
    }
    if !streams {
        return http::get_topics(&hub, principal, room, &filter).await;
    }
    sse::open_topics(&hub, principal, address, room, filter, since).await
}

/// `PUT /rooms/{room}/topics/{topic}`: set the retained value.
pub(super) async fn topic_put(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Result<Response, ApiError> {
    http::put_topic(&hub, principal, room, &topic, query, &headers, body).await
}

/// `DELETE /rooms/{room}/topics/{topic}`: clear the retained value.
pub(super) async fn topic_delete(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
) -> Result<Response, ApiError> {
    http::delete_topic(&hub, principal, room, &topic, query, &headers).await
}

/// `POST /rooms/{room}/topics/{topic}`: publish a message on the topic.
pub(super) async fn topic_post(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Result<Response, ApiError> {
    http::post_topic(&hub, principal, room, &topic, query, &headers, body).await
}
