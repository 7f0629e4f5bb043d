//! The router: one path per room, where method and headers pick the transport
//! (WebSocket upgrade, JSON snapshot, SSE stream, POST publish); the same for a
//! room's topics; plus `/rooms`, history and the operations endpoints. What
//! runs around every route is in `middleware`, what a route takes from a
//! request in `extract`, and the handlers in `rooms` and `topics`: each checks
//! its input and hands the work to one transport.

mod extract;
mod middleware;
mod rooms;
mod topics;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

use crate::error::ApiError;
use crate::hub::Hub;

pub use middleware::ClientAddr;

/// The relay's routes over `hub`.
pub fn router(hub: Hub) -> Router {
    Router::new()
        .route("/rooms", get(rooms::rooms_get))
        .route("/rooms/{room}", get(rooms::room_get).post(rooms::room_post))
        .route("/rooms/{room}/history", get(rooms::history_get))
        .route("/rooms/{room}/refresh", post(rooms::refresh_post))
        .route("/rooms/{room}/state", put(rooms::state_put))
        .route(
            "/rooms/{room}/will",
            put(rooms::will_put).delete(rooms::will_delete),
        )
        .route(
            "/rooms/{room}/topics/{*filter}",
            get(topics::topics_get)
                .put(topics::topic_put)
                .delete(topics::topic_delete)
                .post(topics::topic_post),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                ApiError::BadRequest("method not allowed on this path".into()),
            )
                .into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            hub.clone(),
            middleware::admission,
        ))
        .layer(middleware::cors(hub.config()))
        .with_state(hub)
}

/// `GET /readyz`: `200` while the relay takes sessions and its broker
/// answers; `503` while draining or while Redis is out of reach.
async fn readyz(State(hub): State<Hub>) -> Result<&'static str, ApiError> {
    if hub.shutdown().is_cancelled() {
        return Err(ApiError::Draining);
    }
    if !hub.is_ready() {
        return Err(ApiError::BackendUnavailable);
    }
    Ok("ready")
}

/// The OpenAPI 3.1 description of every HTTP route (`relay/docs/openapi.json`,
/// compiled in; a test checks it against this router).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(hub): State<Hub>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        hub.render_metrics(),
    )
        .into_response()
}
