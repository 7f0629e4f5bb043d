//! The WebSocket opening handshake (RFC 6455 §4.2): checks the request's
//! upgrade headers and answers `101` with `Sec-WebSocket-Accept`; the socket
//! is then handed over raw, so framing stays in [`super::frame`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

/// The GUID every accept key is derived with (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The upgraded connection's byte stream.
pub type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// A request that is a valid WebSocket handshake, ready to be answered.
#[derive(Debug)]
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotUpgrade(&'static str);

impl axum::response::IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        crate::error::ApiError::BadRequest(format!("bad WebSocket handshake: {}", self.0))
            .into_response()
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
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13"))
        {
            return Err(NotUpgrade("`Sec-WebSocket-Version` header must be `13`"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .cloned()
            .ok_or(NotUpgrade("`Sec-WebSocket-Key` header is missing"))?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotUpgrade("this connection cannot be upgraded"))?;
        Ok(WsUpgrade { key, on_upgrade })
    }
}

impl WsUpgrade {
    /// Answers `101 Switching Protocols` (naming `protocol` when given). The
    /// socket arrives through the returned [`Handover`] once hyper has sent
    /// the answer; the caller spawns the task that awaits it, so that task
    /// holds only what the caller gives it.
    pub fn accept(self, protocol: Option<&'static str>) -> (Response, Handover) {
        let handover = Handover(self.on_upgrade);
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

/// The upgraded socket, once hyper hands it over.
#[derive(Debug)]
pub struct Handover(OnUpgrade);

impl Handover {
    /// Waits for the socket; `None` when the upgrade failed (the client left).
    pub async fn socket(self) -> Option<Upgraded> {
        match self.0.await {
            Ok(upgraded) => Some(TokioIo::new(upgraded)),
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                None
            }
        }
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

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
