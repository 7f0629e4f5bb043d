//! What runs around every route: admission (Host, smuggled upgrades,
//! locked-out addresses, counting refused tokens), CORS, the WebSocket
//! origin check, and the client's address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::transport::ws;

/// CORS for browser apps on other origins: preflights for POST/PUT/DELETE with
/// `Authorization` and `Content-Type` are answered only for allowed origins
/// (any origin when `EDGEWIRE_ALLOWED_ORIGINS` is unset).
pub fn cors(config: &crate::config::Config) -> CorsLayer {
    let origins = match &config.allowed_origins {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600))
}

/// Refuses a WebSocket upgrade whose `Origin` is not allowed (a browser on
/// another site); requests without `Origin` (non-browser clients) pass.
fn check_origin(hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
    let (Some(allowed), Some(origin)) =
        (&hub.config().allowed_origins, headers.get(header::ORIGIN))
    else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a == origin) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "origin {origin} is not allowed"
    )))
}

/// A WebSocket handshake, or why a request is not one.
pub type Upgrade = Result<ws::WsUpgrade, ws::NotUpgrade>;

/// Refuses a request that asked to upgrade but is not a valid WebSocket
/// handshake, or that comes from a browser origin that is not allowed.
pub fn check_upgrade(hub: &Hub, headers: &HeaderMap, upgrade: &Upgrade) -> Result<(), ApiError> {
    match upgrade {
        Err(rejection) if headers.contains_key(header::UPGRADE) => Err(rejection.to_error()),
        Ok(_) => check_origin(hub, headers),
        Err(_) => Ok(()),
    }
}

/// The client's address: the socket peer, or `Fly-Client-IP` when the relay is
/// configured to trust its proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

fn client_addr(hub: &Hub, request: &Request) -> IpAddr {
    if hub.config().trust_proxy
        && let Some(ip) = request
            .headers()
            .get("fly-client-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip;
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Runs before every route: refuses an address locked out for failed
/// authentications (before any token is parsed), and records the failures of
/// the answers that refuse a token (WebSocket refusals are recorded where the
/// close is sent).
pub async fn admission(State(hub): State<Hub>, mut request: Request, next: Next) -> Response {
    let address = client_addr(&hub, &request);
    // HTTP/1.1 requires Host (RFC 9112 §3.2); a request without one is 400.
    if request.version() == axum::http::Version::HTTP_11
        && !request.headers().contains_key(header::HOST)
    {
        return ApiError::BadRequest("an HTTP/1.1 request needs a Host header".into())
            .into_response();
    }
    // Only a GET can be a WebSocket handshake; a write that carries upgrade
    // headers is a confused client or a smuggling attempt, never a publish.
    if request.method() != Method::GET && request.headers().contains_key(header::UPGRADE) {
        return ApiError::BadRequest(format!(
            "a {} request cannot carry Upgrade; a WebSocket handshake is a GET",
            request.method()
        ))
        .into_response();
    }
    let operational = matches!(
        request.uri().path(),
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
    );
    // An address locked out for failed authentications is refused before any
    // token is parsed, unless its request carries a token that verifies: one
    // verified within the minute (free), or, within a small budget per
    // address, one checked against the keys already held (never a JWKS fetch).
    // So one bad client behind a NAT does not lock its office out.
    if !operational && let Err(locked) = hub.guard().check_address(address) {
        let token = crate::auth::token_from(request.headers(), request.uri());
        match token {
            Ok(Some(token))
                if hub.auth().is_cached(&token) || hub.guard().take_locked_check(address) => {}
            _ => return locked.into_response(),
        }
        if let ApiError::LockedOut(seconds) = locked {
            request
                .extensions_mut()
                .insert(crate::auth::LockedOut { seconds });
        }
    }
    request.extensions_mut().insert(ClientAddr(address));
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        Metrics::add(&hub.metrics().auth_failures, 1);
        hub.guard().record_failure(address);
    }
    response
}
