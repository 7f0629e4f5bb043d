//! The router: one path per room, where method and headers pick the transport
//! (WebSocket upgrade, JSON snapshot, SSE stream, POST publish), plus `/rooms`
//! and the operations endpoints.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::WithRejection;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::Hub;
use crate::metrics::{Metrics, Transport};
use crate::protocol::RoomName;
use crate::transport::{http, sse, ws};

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(format!("bad path: {}", e.body_text()))
    }
}

/// The relay's routes over `hub`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/rooms", get(rooms_get))
        .route("/rooms/{room}", get(room_get).post(room_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                ApiError::BadRequest("method not allowed on this path".into()),
            )
                .into_response()
        })
        .layer(middleware::map_response_with_state(
            hub.clone(),
            count_auth_failures,
        ))
        .with_state(hub)
}

/// Counts every HTTP answer that refused a token (WebSocket refusals are counted
/// where the close is sent).
async fn count_auth_failures(State(hub): State<Hub>, response: Response) -> Response {
    if response.status() == StatusCode::UNAUTHORIZED {
        Metrics::add(&hub.metrics().auth_failures, 1);
    }
    response
}

type Upgrade = Result<WebSocketUpgrade, WebSocketUpgradeRejection>;

/// True when the client asked for JSON and not for an event stream.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

/// A request that asked to upgrade but is not a valid WebSocket handshake.
fn bad_upgrade(headers: &HeaderMap, upgrade: &Upgrade) -> Option<Response> {
    match upgrade {
        Err(rejection) if headers.contains_key(header::UPGRADE) => Some(
            ApiError::BadRequest(format!(
                "bad WebSocket handshake: {}",
                rejection.body_text()
            ))
            .into_response(),
        ),
        _ => None,
    }
}

async fn room_get(
    State(hub): State<Hub>,
    WithRejection(Path(room), _): WithRejection<Path<String>, ApiError>,
    upgrade: Upgrade,
    headers: HeaderMap,
    auth: Result<Principal, ApiError>,
) -> Response {
    let room = match RoomName::parse(&room) {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if let Some(bad) = bad_upgrade(&headers, &upgrade) {
        return bad;
    }
    if let Ok(upgrade) = upgrade {
        return ws::upgrade(upgrade, &headers, hub, auth, Some(room));
    }
    let principal = match auth {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if wants_json(&headers) {
        return http::snapshot(&hub, principal, room).await.into_response();
    }
    let mut session = hub.open_session(principal, Transport::Sse);
    if let Err(e) = session.join(room).await {
        return e.into_response();
    }
    let config = hub.config();
    sse::response(
        session,
        config.sse_heartbeat,
        hub.auth().leeway(),
        hub.shutdown().clone(),
    )
}

async fn room_post(
    State(hub): State<Hub>,
    WithRejection(Path(room), _): WithRejection<Path<String>, ApiError>,
    WithRejection(Query(query), _): WithRejection<Query<http::PublishQuery>, ApiError>,
    headers: HeaderMap,
    auth: Result<Principal, ApiError>,
    body: Body,
) -> Response {
    let result = async {
        let room = RoomName::parse(&room)?;
        http::publish(&hub, auth?, room, query, &headers, body).await
    };
    result.await.into_response()
}

async fn rooms_get(
    State(hub): State<Hub>,
    upgrade: Upgrade,
    headers: HeaderMap,
    auth: Result<Principal, ApiError>,
) -> Response {
    if let Some(bad) = bad_upgrade(&headers, &upgrade) {
        return bad;
    }
    if let Ok(upgrade) = upgrade {
        return ws::upgrade(upgrade, &headers, hub, auth, None);
    }
    match auth {
        Ok(principal) => http::rooms(&hub, principal).await.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.shutdown().is_cancelled() {
        return ApiError::Draining.into_response();
    }
    "ready".into_response()
}

async fn metrics(State(hub): State<Hub>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.render_metrics(),
    )
        .into_response()
}
