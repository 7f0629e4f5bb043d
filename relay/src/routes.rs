//! The router: one path per room, where method and headers pick the transport
//! (WebSocket upgrade, JSON snapshot, SSE stream, POST publish); the same for a
//! room's topics; plus `/rooms`, history and the operations endpoints.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::WithRejection;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::hub::{Hub, Session, Will};
use crate::metrics::{Metrics, Transport};
use crate::protocol::{EventId, RoomName, payload_from_json, payload_from_text};
use crate::topic::TopicFilter;
use crate::transport::http::{self, HistoryQuery, PublishQuery, TopicQuery};
use crate::transport::ws::Target;
use crate::transport::{sse, ws};

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
        .route("/rooms/{room}/history", get(history_get))
        .route("/rooms/{room}/refresh", axum::routing::post(refresh_post))
        .route("/rooms/{room}/state", axum::routing::put(state_put))
        .route(
            "/rooms/{room}/will",
            axum::routing::put(will_put).delete(will_delete),
        )
        .route(
            "/rooms/{room}/topics/{*filter}",
            get(topics_get)
                .put(topic_put)
                .delete(topic_delete)
                .post(topic_post),
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
        .layer(middleware::from_fn_with_state(hub.clone(), admission))
        .layer(cors(hub.config()))
        .with_state(hub)
}

/// CORS for browser apps on other origins: preflights for POST/PUT/DELETE with
/// `Authorization` and `Content-Type` are answered only for allowed origins
/// (any origin when `EDGEWIRE_ALLOWED_ORIGINS` is unset).
fn cors(config: &crate::config::Config) -> CorsLayer {
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
async fn admission(State(hub): State<Hub>, mut request: Request, next: Next) -> Response {
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

type Upgrade = Result<ws::WsUpgrade, ws::NotUpgrade>;

/// The `{room}` segment of a path, validated: a handler gets a real room name
/// or the request is refused with `400` first.
struct ValidRoom(RoomName);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ValidRoom {
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
struct Writer(Principal);

impl axum::extract::FromRequestParts<Hub> for Writer {
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
struct StreamQuery {
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
    fn resume_point(&self, headers: &HeaderMap) -> Result<Option<EventId>, ApiError> {
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

    fn will(&self) -> Result<Option<Will>, ApiError> {
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
struct Asked {
    head: bool,
    headers: HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Asked {
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

/// The answer to a `HEAD` on a room or topic path: the status and
/// `Content-Type` a GET would get, checked against the caller's rights, with
/// no session opened (so no peer ever sees a `join` for it).
fn head_only(
    principal: &Principal,
    room: &RoomName,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    principal.require(room, crate::auth::Rights::READ)?;
    Ok(([(header::CONTENT_TYPE, content_type)], Body::empty()).into_response())
}

/// True when the client asked for JSON and not for an event stream.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = accept(headers);
    accept.contains("application/json") && !accept.contains("text/event-stream")
}

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A request that asked to upgrade but is not a valid WebSocket handshake, or
/// that comes from a browser origin that is not allowed.
fn bad_upgrade(hub: &Hub, headers: &HeaderMap, upgrade: &Upgrade) -> Option<Response> {
    match upgrade {
        Err(rejection) if headers.contains_key(header::UPGRADE) => {
            Some(rejection.to_error().into_response())
        }
        Ok(_) => check_origin(hub, headers)
            .err()
            .map(IntoResponse::into_response),
        Err(_) => None,
    }
}

fn stream(hub: &Hub, session: Session) -> Response {
    sse::response(
        session,
        hub.config().sse_heartbeat,
        hub.auth().leeway(),
        hub.config().shutdown_grace,
    )
}

async fn room_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<StreamQuery>, ApiError>,
    upgrade: Upgrade,
    Asked { head, headers }: Asked,
    auth: Result<Principal, ApiError>,
) -> Response {
    if let Some(bad) = bad_upgrade(&hub, &headers, &upgrade) {
        return bad;
    }
    let result = async {
        let since = query.resume_point(&headers)?;
        if let Ok(upgrade) = upgrade {
            return Ok(ws::upgrade(
                upgrade,
                &headers,
                hub.clone(),
                auth,
                Target::Room(room, since),
                address,
            ));
        }
        let principal = auth?;
        // Every query parameter is checked, whichever answer it is for.
        let will = query.will()?;
        if head {
            let kind = if wants_json(&headers) {
                "application/json"
            } else {
                "text/event-stream"
            };
            return head_only(&principal, &room, kind);
        }
        if wants_json(&headers) {
            return http::snapshot(&hub, principal, room).await;
        }
        let mut session = hub.open_session(principal, Transport::Sse, address)?;
        session.set_home(room.clone());
        session.join(room.clone(), since).await?;
        if let Some(will) = will {
            session.set_will(&room, will).await?;
        }
        Ok(stream(&hub, session))
    };
    result.await.into_response()
}

async fn room_post(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PublishQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Response {
    let result = async { http::publish(&hub, principal, room, query, &headers, body).await };
    result.await.into_response()
}

/// Query of `POST /rooms/{room}/refresh`.
#[derive(Debug, Deserialize)]
struct RefreshQuery {
    /// The SSE session's peer id (from its `welcome`).
    conn: String,
}

/// `POST /rooms/{room}/refresh?conn=<peer>` with a new token: extends the
/// caller's own SSE session without reconnecting.
async fn refresh_post(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<RefreshQuery>, ApiError>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Writer(principal): Writer,
) -> Response {
    let result = async {
        let token = crate::auth::token_from(&headers, &uri)?.ok_or(ApiError::TokenMissing)?;
        hub.refresh_session(&principal, &room, &query.conn, &token)
            .await?;
        Ok::<_, ApiError>(StatusCode::ACCEPTED.into_response())
    };
    result.await.into_response()
}

/// Query of the SSE peer's own state and will.
#[derive(Debug, Deserialize)]
struct PeerQuery {
    /// The SSE session's peer id.
    conn: String,
    /// The will's topic.
    topic: Option<String>,
    /// The will's delay in seconds.
    after: Option<f64>,
}

/// `PUT /rooms/{room}/state?conn=<peer>`: the presence state of the caller's
/// own SSE peer (the `state` op of a WebSocket).
async fn state_put(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Response {
    let result = async {
        let state = http::read_payload(&headers, body, hub.config().max_message_bytes).await?;
        hub.set_peer_state(&principal, &room, &query.conn, state)
            .await?;
        Ok::<_, ApiError>(StatusCode::ACCEPTED.into_response())
    };
    result.await.into_response()
}

/// `PUT /rooms/{room}/will?conn=<peer>&topic=<t>&after=<s>`: the will of the
/// caller's own SSE peer (the `will` op of a WebSocket); the body is the value.
async fn will_put(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Response {
    let result = async {
        let topic = query
            .topic
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest("a will needs a topic".into()))?;
        let data = http::read_payload(&headers, body, hub.config().max_message_bytes).await?;
        let will = Will::new(topic, data, query.after)?;
        hub.set_peer_will(&principal, &room, &query.conn, Some(will))
            .await?;
        Ok::<_, ApiError>(StatusCode::ACCEPTED.into_response())
    };
    result.await.into_response()
}

/// `DELETE /rooms/{room}/will?conn=<peer>`: cancels the caller's own SSE peer's will.
async fn will_delete(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<PeerQuery>, ApiError>,
    Writer(principal): Writer,
) -> Response {
    let result = async {
        hub.set_peer_will(&principal, &room, &query.conn, None)
            .await?;
        Ok::<_, ApiError>(StatusCode::ACCEPTED.into_response())
    };
    result.await.into_response()
}

async fn history_get(
    State(hub): State<Hub>,
    ValidRoom(room): ValidRoom,
    WithRejection(Query(query), _): WithRejection<Query<HistoryQuery>, ApiError>,
    auth: Result<Principal, ApiError>,
) -> Response {
    let result = async { http::history(&hub, auth?, room, query).await };
    result.await.into_response()
}

/// The `{room}` and `{filter...}` of a topic path, the room validated (the
/// topic or filter is parsed by the handler, which knows which it wants).
struct TopicRoute {
    room: RoomName,
    topic: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TopicRoute {
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

async fn topics_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<StreamQuery>, ApiError>,
    upgrade: Upgrade,
    Asked { head, headers }: Asked,
    auth: Result<Principal, ApiError>,
) -> Response {
    if let Some(bad) = bad_upgrade(&hub, &headers, &upgrade) {
        return bad;
    }
    let result = async {
        let filter = TopicFilter::parse(&topic)?;
        let since = query.resume_point(&headers)?;
        if let Ok(upgrade) = upgrade {
            return Ok(ws::upgrade(
                upgrade,
                &headers,
                hub.clone(),
                auth,
                Target::Topics(room, filter, since),
                address,
            ));
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
        // A topic is a value: only an explicit event-stream request streams.
        if !streams {
            return http::get_topics(&hub, principal, room, &filter).await;
        }
        let mut session = hub.open_session(principal, Transport::Sse, address)?;
        session.set_home(room.clone());
        session.watch(room, filter, since).await?;
        Ok(stream(&hub, session))
    };
    result.await.into_response()
}

async fn topic_put(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Response {
    let result =
        async { http::put_topic(&hub, principal, room, &topic, query, &headers, body).await };
    result.await.into_response()
}

async fn topic_delete(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
) -> Response {
    let result = async { http::delete_topic(&hub, principal, room, &topic, query, &headers).await };
    result.await.into_response()
}

async fn topic_post(
    State(hub): State<Hub>,
    TopicRoute { room, topic }: TopicRoute,
    WithRejection(Query(query), _): WithRejection<Query<TopicQuery>, ApiError>,
    headers: HeaderMap,
    Writer(principal): Writer,
    body: Body,
) -> Response {
    let result =
        async { http::post_topic(&hub, principal, room, &topic, query, &headers, body).await };
    result.await.into_response()
}

async fn rooms_get(
    State(hub): State<Hub>,
    Extension(ClientAddr(address)): Extension<ClientAddr>,
    upgrade: Upgrade,
    headers: HeaderMap,
    query: Result<Query<http::RoomsQuery>, axum::extract::rejection::QueryRejection>,
    auth: Result<Principal, ApiError>,
) -> Response {
    if let Some(bad) = bad_upgrade(&hub, &headers, &upgrade) {
        return bad;
    }
    if let Ok(upgrade) = upgrade {
        return ws::upgrade(upgrade, &headers, hub, auth, Target::Bare, address);
    }
    match auth {
        // Like every other route: no token, no listing, unless the operator
        // declared public rooms (then an anonymous caller sees those alone).
        Ok(principal) if principal.is_anonymous() && principal.public.is_empty() => {
            ApiError::TokenMissing.into_response()
        }
        Ok(principal) => match query {
            Ok(Query(query)) => http::rooms(&hub, principal, query).await.into_response(),
            Err(e) => ApiError::from(e).into_response(),
        },
        Err(e) => e.into_response(),
    }
}

async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.shutdown().is_cancelled() {
        return ApiError::Draining.into_response();
    }
    if !hub.is_ready() {
        return ApiError::BackendUnavailable.into_response();
    }
    "ready".into_response()
}

/// The OpenAPI 3.1 description of every HTTP route (`relay/docs/openapi.json`,
/// compiled in; a test checks it against this router).
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

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
