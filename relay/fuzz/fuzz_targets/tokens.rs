//! Any Authorization header, subprotocol header, query string or token:
//! extraction and verification never panic and never accept a token that was
//! not signed with the secret.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderValue, Uri};
use edgewire::auth::Authenticator;
use edgewire::config::Config;
use libfuzzer_sys::fuzz_target;

fn authenticator() -> &'static Arc<Authenticator> {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| {
        let mut config = Config::defaults();
        config.jwt_secret = Some("fuzz-secret".into());
        match Authenticator::from_config(&config) {
            Ok(a) => Arc::new(a),
            Err(e) => panic!("{e}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (authorization, protocol, query) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(authorization) {
        headers.insert("authorization", v);
    }
    if let Ok(v) = HeaderValue::from_str(protocol) {
        headers.insert("sec-websocket-protocol", v);
    }
    let uri: Uri = format!("/rooms/r?{query}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/rooms/r"));
    if let Ok(Some(token)) = edgewire::auth::token_from(&headers, &uri) {
        // No JWKS is configured, so verification completes without waiting.
        let verified = futures_util::FutureExt::now_or_never(authenticator().verify(&token));
        assert!(
            !matches!(verified, Some(Ok(_))),
            "a random token was accepted: {token}"
        );
    }
});
