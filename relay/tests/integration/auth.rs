//! Authentication over every transport, every algorithm, JWKS, and refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use edgewire::auth::Jwks;
use edgewire::token::{SigningKey, TokenSpec, mint, parse_room_grant};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::harness::{
    Frame, Relay, Sse, TokenIn, Ws, fixtures, http, post_text, token, token_with,
};

fn spec(sub: &str, grant: &str) -> TokenSpec {
    TokenSpec {
        sub: sub.into(),
        rooms: vec![parse_room_grant(grant).unwrap()],
        ttl: Duration::from_secs(600),
        meta: None,
        audience: None,
        issuer: None,
    }
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("keys").join(name)).unwrap()
}

fn pem_key(name: &str, alg: Algorithm, kid: Option<&str>) -> SigningKey {
    SigningKey::Pem {
        pem: key_file(name),
        alg,
        kid: kid.map(str::to_owned),
    }
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// The refusals every transport must report, with the code each must carry.
fn refusals() -> Vec<(&'static str, Option<String>, &'static str)> {
    let expired = signed(
        json!({"sub": "alice", "exp": edgewire::protocol::now_ms() / 1000 - 5, "rooms": {"r": ["read", "write"]}}),
    );
    let wrong_secret = mint(
        &spec("alice", "r=read,write"),
        &SigningKey::Secret(b"not-the-secret".to_vec(), Algorithm::HS256),
    )
    .unwrap();
    vec![
        ("no token", None, "token_missing"),
        ("garbage", Some("not.a.jwt".into()), "token_invalid"),
        ("wrong secret", Some(wrong_secret), "token_invalid"),
        ("expired", Some(expired), "token_expired"),
        (
            "no right on the room",
            Some(token("alice", &["other=read,write"])),
            "forbidden",
        ),
    ]
}

/// Signs arbitrary claims with the fixture secret.
fn signed(claims: Value) -> String {
    let secret = crate::harness::secret();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn status_of(code: &str) -> u16 {
    if code == "forbidden" { 403 } else { 401 }
}

#[tokio::test]
async fn refusals_over_post() {
    let relay = Relay::start(&[("EDGEWIRE_JWT_LEEWAY", "0")]).await;
    for (what, tok, code) in refusals() {
        let mut req = http().post(relay.http("/rooms/r")).body("hi");
        if let Some(t) = &tok {
            req = req.bearer_auth(t);
        }
        let response = req.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status_of(code), "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
}

#[tokio::test]
async fn refusals_over_sse() {
    let relay = Relay::start(&[("EDGEWIRE_JWT_LEEWAY", "0")]).await;
    for (what, tok, code) in refusals() {
        let url = match &tok {
            Some(t) => relay.http(&format!("/rooms/r?token={t}")),
            None => relay.http("/rooms/r"),
        };
        let (status, body) = Sse::try_open(&url, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: stream opened"));
        assert_eq!(status, status_of(code), "{what}");
        assert_eq!(body["error"], code, "{what}: {body}");
    }
}

#[tokio::test]
async fn refusals_over_websocket_complete_the_upgrade_then_close() {
    let relay = Relay::start(&[("EDGEWIRE_JWT_LEEWAY", "0")]).await;
    for (what, tok, code) in refusals() {
        let (tok, how) = match &tok {
            Some(t) => (t.as_str(), TokenIn::Subprotocol),
            None => ("", TokenIn::None),
        };
        let mut ws = Ws::connect(&relay, "/rooms/r", tok, how).await;
        let (events, close) = ws.until_close().await;
        assert_eq!(
            events.len(),
            1,
            "{what}: exactly one event before the close: {events:?}"
        );
        assert_eq!(events[0]["kind"], "error", "{what}");
        assert_eq!(events[0]["code"], code, "{what}");
        let expected = if code == "forbidden" { 4403 } else { 4401 };
        assert_eq!(close, Some(expected), "{what}");
    }
    let metrics = http()
        .get(relay.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("edgewire_auth_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(
        failures, 4,
        "the four token refusals are counted:\n{metrics}"
    );
}

#[tokio::test]
async fn websocket_token_from_header_subprotocol_or_query() {
    let relay = Relay::start(&[]).await;
    let tok = token("alice", &["r=read"]);
    for how in [TokenIn::Header, TokenIn::Subprotocol, TokenIn::Query] {
        let mut ws = Ws::connect(&relay, "/rooms/r", &tok, how).await;
        let welcome = ws.next().await;
        assert_eq!(welcome["kind"], "welcome");
        assert_eq!(welcome["peer"]["user"], "alice");
        let offered = matches!(how, TokenIn::Subprotocol);
        assert_eq!(
            ws.protocol.as_deref(),
            offered.then_some("edgewire"),
            "subprotocol answered only when offered"
        );
    }
    // The header wins over the query: a bad query token does not matter.
    let response = http()
        .post(relay.http("/rooms/r?token=garbage"))
        .bearer_auth(token("alice", &["r=write"]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn every_hmac_algorithm_with_the_secret() {
    let relay = Relay::start(&[]).await;
    let secret = crate::harness::secret().into_bytes();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let tok = mint(
            &spec("alice", "r=write"),
            &SigningKey::Secret(secret.clone(), alg),
        )
        .unwrap();
        let (status, body) = post_text(&relay, "/rooms/r", &tok, "hi").await;
        assert_eq!(status, 202, "{alg:?}: {body}");
    }
}

#[tokio::test]
async fn every_public_key_algorithm_with_a_pem() {
    let cases = [
        ("rsa", Algorithm::RS256),
        ("rsa", Algorithm::RS384),
        ("rsa", Algorithm::RS512),
        ("ec256", Algorithm::ES256),
        ("ec384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let public = fixtures().join(format!("keys/{key}-public.pem"));
        let relay = Relay::start(&[("EDGEWIRE_JWT_PUBLIC_KEY", public.to_str().unwrap())]).await;
        let tok = mint(
            &spec("alice", "r=write"),
            &pem_key(&format!("{key}-private.pem"), alg, None),
        )
        .unwrap();
        let (status, body) = post_text(&relay, "/rooms/r", &tok, "hi").await;
        assert_eq!(status, 202, "{alg:?}: {body}");
        // The configured secret still works beside the public key, but a token
        // HMAC-signed with the public key's own bytes (algorithm confusion) does not.
        let confused = mint(
            &spec("mallory", "r=write"),
            &SigningKey::Secret(std::fs::read(&public).unwrap(), Algorithm::HS256),
        )
        .unwrap();
        let (status, body) = post_text(&relay, "/rooms/r", &confused, "hi").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_invalid")),
            "{alg:?} confusion"
        );
    }
    // A key of the right type but another pair fails the signature check.
    let public = fixtures().join("keys/ec256-public.pem");
    let relay = Relay::start(&[("EDGEWIRE_JWT_PUBLIC_KEY", public.to_str().unwrap())]).await;
    let tok = mint(
        &spec("alice", "r=write"),
        &pem_key("ec384-private.pem", Algorithm::ES384, None),
    )
    .unwrap();
    let (status, _) = post_text(&relay, "/rooms/r", &tok, "hi").await;
    assert_eq!(status, 401, "an ES384 token against a P-256 key");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let relay = Relay::start(&[]).await;
    let exp = edgewire::protocol::now_ms() / 1000 + 600;
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "None"}),
        json!({"alg": "HS256"}),
    ] {
        let claims =
            json!({"sub": "mallory", "exp": exp, "rooms": {"*": ["read", "write", "retain"]}});
        let forged = format!("{}.{}.", b64(&header), b64(&claims));
        let (status, body) = post_text(&relay, "/rooms/r", &forged, "hi").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_invalid")),
            "{header}"
        );
    }
}

#[tokio::test]
async fn claims_are_checked() {
    let relay = Relay::start(&[
        ("EDGEWIRE_JWT_AUDIENCE", "edge"),
        ("EDGEWIRE_JWT_ISSUER", "https://issuer.test"),
    ])
    .await;
    let key = SigningKey::Secret(crate::harness::secret().into_bytes(), Algorithm::HS256);
    let with = |aud: Option<&str>, iss: Option<&str>| {
        let mut s = spec("alice", "r=write");
        s.audience = aud.map(str::to_owned);
        s.issuer = iss.map(str::to_owned);
        mint(&s, &key).unwrap()
    };
    let cases = [
        (with(Some("edge"), Some("https://issuer.test")), 202),
        (with(None, Some("https://issuer.test")), 401),
        (with(Some("edge"), None), 401),
        (with(Some("other"), Some("https://issuer.test")), 401),
        (with(Some("edge"), Some("https://evil.test")), 401),
    ];
    for (i, (tok, expected)) in cases.into_iter().enumerate() {
        let (status, body) = post_text(&relay, "/rooms/r", &tok, "hi").await;
        assert_eq!(status, expected, "case {i}: {body}");
    }
    // exp is required, and a wrongly typed exp is refused.
    let relay = Relay::start(&[]).await;
    let sign = signed;
    let far = edgewire::protocol::now_ms() / 1000 + 600;
    for claims in [
        json!({"sub": "a", "rooms": {"r": ["write"]}}),
        json!({"sub": "a", "exp": far.to_string(), "rooms": {"r": ["write"]}}),
        json!({"exp": far, "rooms": {"r": ["write"]}}),
        json!({"sub": "a", "exp": far, "rooms": {"r": ["write", "admin"]}}),
        json!({"sub": "a", "exp": far, "rooms": {"r": ["write"]}, "meta": {"blob": "x".repeat(2000)}}),
        json!({"sub": "a", "exp": far, "nbf": far, "rooms": {"r": ["write"]}}),
        json!({"sub": "", "exp": far, "rooms": {"r": ["write"]}}),
    ] {
        let (status, body) = post_text(&relay, "/rooms/r", &sign(claims.clone()), "hi").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("token_invalid")),
            "{claims}: {body}"
        );
    }
}

/// Serves a JWKS document that the test can change, counting fetches.
async fn jwks_server(doc: Arc<std::sync::Mutex<Value>>, fetches: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            let fetches = fetches.clone();
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                axum::Json(doc.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks.json")
}

fn fixture_jwks() -> Value {
    serde_json::from_slice(&key_file("jwks.json")).unwrap()
}

#[tokio::test]
async fn jwks_keys_by_kid() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(
        Arc::new(std::sync::Mutex::new(fixture_jwks())),
        fetches.clone(),
    )
    .await;
    let relay = Relay::with_map(
        [
            ("EDGEWIRE_JWKS_URL", url.as_str()),
            ("EDGEWIRE_LISTEN", "127.0.0.1:0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
    .await;
    let cases = [
        ("rsa", "rsa-private.pem", Algorithm::RS256),
        ("rsa", "rsa-private.pem", Algorithm::RS512),
        ("ec256", "ec256-private.pem", Algorithm::ES256),
        ("ec384", "ec384-private.pem", Algorithm::ES384),
        ("ed25519", "ed25519-private.pem", Algorithm::EdDSA),
    ];
    for (kid, file, alg) in cases {
        let tok = mint(&spec("alice", "r=write"), &pem_key(file, alg, Some(kid))).unwrap();
        let (status, body) = post_text(&relay, "/rooms/r", &tok, "hi").await;
        assert_eq!(status, 202, "{kid} {alg:?}: {body}");
    }
    // A token whose kid names another key's entry fails.
    let tok = mint(
        &spec("alice", "r=write"),
        &pem_key("ec256-private.pem", Algorithm::ES256, Some("ec384")),
    )
    .unwrap();
    assert_eq!(post_text(&relay, "/rooms/r", &tok, "hi").await.0, 401);
    // A flood of unknown kids costs at most one refetch per minute.
    for i in 0..5 {
        let tok = mint(
            &spec("alice", "r=write"),
            &pem_key(
                "ec256-private.pem",
                Algorithm::ES256,
                Some(&format!("forged-{i}")),
            ),
        )
        .unwrap();
        assert_eq!(post_text(&relay, "/rooms/r", &tok, "hi").await.0, 401);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "only the start-up fetch within the minute"
    );
}

#[tokio::test]
async fn jwks_rotation_refetches_unknown_kids() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let mut without_ed = fixture_jwks();
    without_ed["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["kid"] != "ed25519");
    let doc = Arc::new(std::sync::Mutex::new(without_ed));
    let url = jwks_server(doc.clone(), fetches.clone()).await;

    let throttled = Jwks::new(url.clone());
    let eager = Jwks::with_refetch_interval(url, Duration::ZERO);
    throttled.prime().await;
    eager.prime().await;
    assert!(
        throttled
            .find(Some("ed25519"), Algorithm::EdDSA)
            .await
            .is_none()
    );
    assert!(
        eager
            .find(Some("ed25519"), Algorithm::EdDSA)
            .await
            .is_none()
    );
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(before, 3, "two primes and one refetch by the eager cache");

    // The key server rotates in a new key.
    *doc.lock().unwrap() = fixture_jwks();
    assert!(
        throttled
            .find(Some("ed25519"), Algorithm::EdDSA)
            .await
            .is_none(),
        "throttled: no refetch within the minute"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), before);
    assert!(
        eager
            .find(Some("ed25519"), Algorithm::EdDSA)
            .await
            .is_some(),
        "an unknown kid triggers a refetch"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn refresh_keeps_the_same_user_only() {
    let relay = Relay::start(&[]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/r",
        &token("alice", &["r=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "refresh", "token": token("bob", &["r=read,write"]), "ref": 1}))
        .await;
    let ev = ws.next().await;
    assert_eq!(
        (ev["kind"].as_str(), ev["code"].as_str(), ev["ref"].as_i64()),
        (Some("error"), Some("forbidden"), Some(1))
    );
    ws.send(json!({"op": "refresh", "token": "garbage", "ref": 2}))
        .await;
    let ev = ws.next().await;
    assert_eq!(
        (ev["code"].as_str(), ev["ref"].as_i64()),
        (Some("token_invalid"), Some(2))
    );
    ws.send(json!({"op": "refresh", "token": token("alice", &["r=read,write"]), "ref": 3}))
        .await;
    let ev = ws.next().await;
    assert_eq!(
        (ev["kind"].as_str(), ev["ref"].as_i64()),
        (Some("ack"), Some(3))
    );
}

#[tokio::test]
async fn a_session_ends_at_its_token_expiry() {
    let relay = Relay::start(&[("EDGEWIRE_JWT_LEEWAY", "0")]).await;
    // Three seconds, so a loaded machine still connects before the expiry;
    // both transports wait for it at once.
    let lifetime = Duration::from_secs(3);
    let websocket = async {
        let tok = token_with("alice", &["r=read"], lifetime, None);
        let mut ws = Ws::connect(&relay, "/rooms/r", &tok, TokenIn::Header).await;
        ws.next_kind("welcome").await;
        let (events, code) = ws.until_close().await;
        assert_eq!(
            events.last().map(|e| e["code"].clone()),
            Some(json!("token_expired"))
        );
        assert_eq!(code, Some(4401));
    };
    let sse = async {
        let tok = token_with("bob", &["r=read"], lifetime, None);
        let mut sse = Sse::open(&relay.http(&format!("/rooms/r?token={tok}")), &[]).await;
        sse.next_kind("welcome").await;
        let last = sse.next_kind("error").await;
        assert_eq!(last["code"], "token_expired");
        assert!(
            sse.next_event().await.is_none(),
            "the stream ends after the error"
        );
    };
    tokio::join!(websocket, sse);
}

#[tokio::test]
async fn public_rooms_need_no_token() {
    let relay = Relay::start(&[("EDGEWIRE_PUBLIC_ROOMS", "lobby,demo-*")]).await;
    let mut sse = Sse::open(&relay.http("/rooms/demo-1"), &[]).await;
    let welcome = sse.next().await;
    assert_eq!(welcome["peer"]["user"], "anonymous");
    let response = http()
        .post(relay.http("/rooms/demo-1"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(sse.next_kind("message").await["data"], "hello");
    let response = http()
        .post(relay.http("/rooms/private"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let mut ws = Ws::connect(&relay, "/rooms/lobby", "", TokenIn::None).await;
    assert!(matches!(ws.next_frame().await, Frame::Event(e) if e["kind"] == "welcome"));
}

fn unix_now() -> u64 {
    edgewire::protocol::now_ms() / 1000
}

#[tokio::test]
async fn expiring_warning_then_refresh_keeps_a_websocket() {
    let relay = Relay::start(&[
        ("EDGEWIRE_JWT_LEEWAY", "0"),
        ("EDGEWIRE_PING_INTERVAL", "200ms"),
        ("EDGEWIRE_IDLE_TIMEOUT", "10s"),
    ])
    .await;
    let short = token_with("alice", &["r=read"], Duration::from_secs(4), None);
    let old_exp = unix_now() + 4;
    let mut ws = Ws::connect(&relay, "/rooms/r", &short, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    let warning = ws.next_kind("expiring").await;
    assert!(
        warning["expires_at"]
            .as_u64()
            .is_some_and(|e| e.abs_diff(old_exp) <= 1),
        "{warning}"
    );
    assert!(warning["in"].as_u64().is_some_and(|s| s <= 4));
    ws.send(json!({"op": "refresh", "token": token("alice", &["r=read"]), "ref": 1}))
        .await;
    assert_eq!(ws.next_kind("ack").await["ref"], 1);
    // Read the relay's pings until well past the old expiry: still open.
    use futures_util::StreamExt;
    while unix_now() <= old_exp + 1 {
        match tokio::time::timeout(crate::harness::DEADLINE, ws.stream.next())
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                panic!("closed at the old expiry: {f:?}")
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    ws.send(json!({"op": "ping", "ref": 2})).await;
    assert_eq!(ws.next_kind("pong").await["ref"], 2);
}

#[tokio::test]
async fn an_sse_session_is_extended_by_a_refresh_post() {
    let relay = Relay::start(&[
        ("EDGEWIRE_JWT_LEEWAY", "0"),
        ("EDGEWIRE_SSE_HEARTBEAT", "200ms"),
    ])
    .await;
    let short = token_with("carol", &["r=read"], Duration::from_secs(4), None);
    let old_exp = unix_now() + 4;
    let mut sse = Sse::open(&relay.http(&format!("/rooms/r?token={short}")), &[]).await;
    let me = sse.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(sse.next_kind("expiring").await["kind"], "expiring");

    // Someone else's token cannot extend it; a missing peer is 404.
    let other = http()
        .post(relay.http(&format!("/rooms/r/refresh?conn={me}")))
        .bearer_auth(token("mallory", &["r=read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let missing = http()
        .post(relay.http("/rooms/r/refresh?conn=carol.nothere"))
        .bearer_auth(token("carol", &["r=read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let ok = http()
        .post(relay.http(&format!("/rooms/r/refresh?conn={me}")))
        .bearer_auth(token("carol", &["r=read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);

    // Heartbeats keep coming past the old expiry, with no error.
    while unix_now() <= old_exp + 1 {
        let block = sse.next_block().await.expect("the stream is still open");
        assert!(!block.contains("token_expired"), "{block}");
    }
}
