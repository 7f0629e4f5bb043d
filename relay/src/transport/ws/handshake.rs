//! The WebSocket opening handshake (RFC 6455 §4.2): checks the request's
//! upgrade headers and answers `101` with `Sec-WebSocket-Accept`; the socket
//! is then handed over raw, so framing stays in [`super::frame`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::transport::conn_io::ConnIo;

/// The GUID every accept key is derived with (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The upgraded connection's byte stream: hyper's, or the socket itself
/// when the handshake was answered on it (`super::direct`).
pub enum Upgraded {
    /// Upgraded by hyper.
    Hyper(TokioIo<hyper::upgrade::Upgraded>),
    /// The connection's own socket (with its write deadline).
    Direct(ConnIo),
}

/// Where the socket of a handshake answered on the socket comes from: the
/// direct path puts a receiver in the request's extensions, and sends the
/// socket, with the `101` head still to write, once the route has answered.
#[derive(Clone)]
pub struct DirectUpgrade(Arc<Mutex<Option<SocketReceiver>>>);

/// Receives a handshake's socket and the `101` head still to write on it.
type SocketReceiver = oneshot::Receiver<(ConnIo, Bytes)>;

impl DirectUpgrade {
    /// A slot and the sender that fills it.
    pub fn new() -> (DirectUpgrade, oneshot::Sender<(ConnIo, Bytes)>) {
        let (tx, rx) = oneshot::channel();
        (DirectUpgrade(Arc::new(Mutex::new(Some(rx)))), tx)
    }

    fn take(&self) -> Option<SocketReceiver> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// How the socket will arrive.
enum Arrival {
    Hyper(OnUpgrade),
    Direct(SocketReceiver),
}

/// A request that is a valid WebSocket handshake, ready to be answered.
pub struct WsUpgrade {
    key: HeaderValue,
    arrival: Arrival,
}

/// Why a request is not a WebSocket handshake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotUpgrade(&'static str);

/// The message of a handshake refused for its `Sec-WebSocket-Version`.
const WRONG_VERSION: &str = "`Sec-WebSocket-Version` header must be `13`";

impl NotUpgrade {
    /// The answer to a request that asked to upgrade and could not: `426`
    /// naming version 13 for another version, `400` for the rest.
    pub fn to_error(&self) -> crate::error::ApiError {
        if self.0 == WRONG_VERSION {
            crate::error::ApiError::WebSocketVersion
        } else {
            crate::error::ApiError::BadRequest(format!("bad WebSocket handshake: {}", self.0))
        }
    }
}

impl axum::response::IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        self.to_error().into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotUpgrade> {
        if parts.method != Method::GET {
            return Err(NotUpgrade("a WebSocket handshake must be a GET"));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(NotUpgrade("`Connection` header must contain `upgrade`"));
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(NotUpgrade("`Upgrade` header must be `websocket`"));
        }
        if !parts.headers.contains_key(header::HOST) && parts.uri.authority().is_none() {
            return Err(NotUpgrade("a WebSocket handshake needs a `Host` header"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(NotUpgrade(WRONG_VERSION));
        }
        let mut keys = parts.headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
        let key = match (keys.next(), keys.next()) {
            (Some(key), None) => key.clone(),
            (None, _) => return Err(NotUpgrade("`Sec-WebSocket-Key` header is missing")),
            (Some(_), Some(_)) => {
                return Err(NotUpgrade("more than one `Sec-WebSocket-Key` header"));
            }
        };
        // RFC 6455 §4.1: a random 16-byte value, base64-encoded (24 characters).
        let decoded = base64::engine::general_purpose::STANDARD.decode(key.as_bytes());
        if !decoded.is_ok_and(|k| k.len() == 16) {
            return Err(NotUpgrade(
                "`Sec-WebSocket-Key` must be 16 bytes, base64-encoded",
            ));
        }
        let direct = parts
            .extensions
            .remove::<DirectUpgrade>()
            .and_then(|d| d.take());
        let arrival = match direct {
            Some(receiver) => Arrival::Direct(receiver),
            None => Arrival::Hyper(
                parts
                    .extensions
                    .remove::<OnUpgrade>()
                    .ok_or(NotUpgrade("this connection cannot be upgraded"))?,
            ),
        };
        Ok(WsUpgrade { key, arrival })
    }
}

impl WsUpgrade {
    /// Answers `101 Switching Protocols` (naming `protocol` when given). The
    /// socket arrives through the returned [`Handover`] once hyper has sent
    /// the answer; the caller spawns the task that awaits it, so that task
    /// holds only what the caller gives it.
    pub fn accept(self, protocol: Option<&'static str>) -> (Response, Handover) {
        let handover = Handover(self.arrival);
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        (response, handover)
    }
}

/// The upgraded socket, once hyper (or the direct path) hands it over.
pub struct Handover(Arrival);

impl Handover {
    /// Waits for the socket; `None` when the upgrade failed (the client
    /// left). A socket from the direct path comes with the `101` head, which
    /// the session writes with its first events.
    pub async fn socket(mut self) -> Option<(Upgraded, Option<Bytes>)> {
        std::future::poll_fn(|cx| self.poll_socket(cx)).await
    }

    /// [`Handover::socket`] for a task polled by hand: it holds the handover,
    /// not a future of it.
    pub fn poll_socket(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(Upgraded, Option<Bytes>)>> {
        use std::future::Future;
        use std::task::Poll;
        match &mut self.0 {
            Arrival::Hyper(on_upgrade) => match std::pin::Pin::new(on_upgrade).poll(cx) {
                Poll::Ready(Ok(upgraded)) => {
                    Poll::Ready(Some((Upgraded::Hyper(TokioIo::new(upgraded)), None)))
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Arrival::Direct(receiver) => match std::pin::Pin::new(receiver).poll(cx) {
                Poll::Ready(Ok((io, head))) => {
                    Poll::Ready(Some((Upgraded::Direct(io), Some(head))))
                }
                Poll::Ready(Err(_)) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// `Upgraded` reads and writes through whichever stream it holds.
macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Upgraded::Hyper($io) => $call,
            Upgraded::Direct($io) => $call,
        }
    };
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        delegate!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upgraded::Hyper(io) => io.is_write_vectored(),
            Upgraded::Direct(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        delegate!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// True when a comma-separated header holds `token` (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    async fn parse(headers: &[(&str, &str)]) -> Result<WsUpgrade, NotUpgrade> {
        let mut request = axum::http::Request::builder()
            .method(Method::GET)
            .uri("/rooms/r");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let (mut parts, ()) = request.body(()).unwrap_or_default().into_parts();
        // Any OnUpgrade will do: the checks come first.
        parts
            .extensions
            .insert(hyper::upgrade::on(axum::http::Request::new(())));
        WsUpgrade::from_request_parts(&mut parts, &()).await
    }

    const GOOD: [(&str, &str); 5] = [
        ("host", "relay.example"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        GOOD.iter().copied().filter(|(k, _)| *k != name).collect()
    }

    #[tokio::test]
    async fn handshakes_are_checked_as_rfc_6455_says() {
        assert!(parse(&GOOD).await.is_ok());
        let mut cases: Vec<(Vec<(&str, &str)>, &str)> = Vec::new();
        for bad_key in ["", "x", "not base64!!", "dGhlIHNhbXBsZQ=="] {
            let mut h = without("sec-websocket-key");
            h.push(("sec-websocket-key", bad_key));
            cases.push((h, "16 bytes"));
        }
        let mut two = GOOD.to_vec();
        two.push(("sec-websocket-key", "AAAAAAAAAAAAAAAAAAAAAA=="));
        cases.push((two, "more than one"));
        cases.push((without("host"), "Host"));
        let mut v8 = without("sec-websocket-version");
        v8.push(("sec-websocket-version", "8"));
        cases.push((v8, "13"));
        for (headers, expected) in cases {
            let err = parse(&headers).await.err();
            assert!(
                err.as_ref().is_some_and(|e| e.0.contains(expected)),
                "{headers:?}: {err:?}"
            );
        }
        let mut v8 = without("sec-websocket-version");
        v8.push(("sec-websocket-version", "8"));
        let response = parse(&v8).await.err().map(|e| e.into_response());
        let response = response.unwrap_or_default();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
