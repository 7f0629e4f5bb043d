//! Admission control over real sockets: caps, auth-failure lockout, publish rates.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::harness::{Frame, Relay, Sse, TokenIn, Ws, http, token};

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_connection_cap_refuses_with_503_and_recovers() {
    let relay = Relay::start(&[("EDGEWIRE_MAX_CONNECTIONS", "2")]).await;
    let tok = token("u", &["r=read"]);
    let mut first = Ws::connect(&relay, "/rooms/r", &tok, TokenIn::Header).await;
    first.next_kind("welcome").await;
    let (k, v) = ("authorization", format!("Bearer {tok}"));
    let mut second = Sse::open(&relay.http("/rooms/r"), &[(k, &v)]).await;
    second.next_kind("welcome").await;

    // The third is refused before any upgrade, with Retry-After.
    let refused =
        tokio_tungstenite::connect_async(relay.ws_url(&format!("/rooms/r?token={tok}"))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 503 before the upgrade, got {other:?}"),
    }
    let (status, body) = Sse::try_open(&relay.http("/rooms/r"), &[(k, &v)])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("over_capacity"))
    );

    // A slot frees: a new session gets in.
    drop(second);
    let deadline = tokio::time::Instant::now() + crate::harness::DEADLINE;
    loop {
        match Sse::try_open(&relay.http("/rooms/r"), &[(k, &v)]).await {
            Ok(mut s) => {
                s.next_kind("welcome").await;
                break;
            }
            Err((503, _)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never freed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_auth_failure_storm_locks_out_an_address_but_never_a_valid_token() {
    let relay = Relay::start(&[("EDGEWIRE_AUTH_FAILURE_LIMIT", "5")]).await;
    let storm = client_from([127, 0, 0, 1]);
    for _ in 0..5 {
        let r = storm
            .post(relay.http("/rooms/r"))
            .bearer_auth("bad.token.here")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Locked out: a request with no token is refused before anything else,
    // and says why and for how long.
    let r = storm
        .post(relay.http("/rooms/r"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = r.json::<Value>().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("failed authentications from your address"),
        "{message}"
    );
    assert!(
        message.contains(&format!("refused for {retry_after} more s")),
        "{message}"
    );
    let refused = tokio_tungstenite::connect_async(relay.ws_url("/rooms/r")).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 429),
        "{refused:?}"
    );

    // A colleague behind the same address with a valid token is not refused,
    // over HTTP or WebSocket.
    let good = token("u", &["r=read,write"]);
    let r = storm
        .post(relay.http("/rooms/r"))
        .bearer_auth(&good)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut ws = Ws::connect(
        &relay,
        "/rooms/r",
        &token("colleague", &["r=read"]),
        TokenIn::Query,
    )
    .await;
    assert_eq!(ws.next().await["kind"], "welcome");

    // Uncached tokens are checked within a budget per address; past it,
    // only tokens verified within the minute (cached) still pass.
    let mut checked = 0;
    loop {
        let r = storm
            .post(relay.http("/rooms/r"))
            .bearer_auth(format!("bad.token.{checked}"))
            .body("x")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break;
        }
        assert_eq!(r.status(), 401);
        checked += 1;
        assert!(checked <= 200, "the budget never ran out");
    }
    assert!(checked <= edgewire::guard::LOCKED_CHECKS_PER_WINDOW as usize);
    let r = storm
        .post(relay.http("/rooms/r"))
        .bearer_auth(&good)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "a token verified within the minute passes");
    let r = storm
        .post(relay.http("/rooms/r"))
        .bearer_auth(token("newcomer", &["r=write"]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "the budget for uncached tokens is spent");

    // Another address is unaffected.
    let other = client_from([127, 0, 0, 2]);
    let r = other
        .post(relay.http("/rooms/r"))
        .bearer_auth(token("newcomer", &["r=write"]))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Health checks are never locked out.
    assert_eq!(
        storm
            .get(relay.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn websocket_token_refusals_count_toward_the_lockout() {
    let relay = Relay::start(&[("EDGEWIRE_AUTH_FAILURE_LIMIT", "3")]).await;
    for _ in 0..3 {
        let mut ws = Ws::connect(&relay, "/rooms/r", "bad.token", TokenIn::Query).await;
        assert!(matches!(ws.until_close().await.1, Some(4401)));
    }
    let refused = tokio_tungstenite::connect_async(relay.ws_url("/rooms/r")).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 429),
        "refused before the upgrade: {refused:?}"
    );
}

#[tokio::test]
async fn fly_client_ip_is_used_only_when_trusted() {
    for (trust, expect_second) in [("true", 401), ("false", 429)] {
        let relay = Relay::start(&[
            ("EDGEWIRE_AUTH_FAILURE_LIMIT", "2"),
            ("EDGEWIRE_TRUST_PROXY", trust),
        ])
        .await;
        for _ in 0..2 {
            let r = http()
                .post(relay.http("/rooms/r"))
                .header("fly-client-ip", "203.0.113.7")
                .bearer_auth("bad")
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
        // No token: 401 from an address that is not locked out, 429 from one
        // that is (a valid token would pass either way).
        let r = http()
            .post(relay.http("/rooms/r"))
            .header("fly-client-ip", "203.0.113.8")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expect_second, "trust_proxy={trust}");
    }
}

#[tokio::test]
async fn the_per_address_and_per_user_caps() {
    let relay = Relay::start(&[
        ("EDGEWIRE_MAX_CONNECTIONS_PER_USER", "1"),
        ("EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS", "2"),
    ])
    .await;
    let alice = token("alice", &["r=read"]);
    let mut a1 = Ws::connect(&relay, "/rooms/r", &alice, TokenIn::Header).await;
    a1.next_kind("welcome").await;
    let refused =
        tokio_tungstenite::connect_async(relay.ws_url(&format!("/rooms/r?token={alice}"))).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 503),
        "per user"
    );
    let mut b1 = Ws::connect(
        &relay,
        "/rooms/r",
        &token("bob", &["r=read"]),
        TokenIn::Header,
    )
    .await;
    b1.next_kind("welcome").await;
    let carol = token("carol", &["r=read"]);
    let refused =
        tokio_tungstenite::connect_async(relay.ws_url(&format!("/rooms/r?token={carol}"))).await;
    assert!(
        matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 503),
        "per address"
    );
}

#[tokio::test]
async fn publishing_is_rate_limited() {
    let relay = Relay::start(&[("EDGEWIRE_PUBLISH_RATE", "5")]).await;
    let tok = token("u", &["r=read,write"]);
    // HTTP: at least a burst of twice the rate passes (the bucket refills while
    // the test runs), then 429 with Retry-After.
    let mut accepted = 0;
    let refused = loop {
        let r = http()
            .post(relay.http("/rooms/r"))
            .bearer_auth(&tok)
            .body("x")
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            accepted += 1;
            assert!(accepted < 100, "never limited");
            continue;
        }
        break r;
    };
    assert!(accepted >= 10, "the burst passes: {accepted}");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    // WebSocket: error rate_limited with retry_after, and the session goes on.
    let mut ws = Ws::connect(
        &relay,
        "/rooms/r",
        &token("w", &["r=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    for i in 0..40 {
        ws.send(json!({"op": "pub", "data": i, "ref": i})).await;
    }
    let error = ws.next_kind("error").await;
    assert_eq!(error["code"], "rate_limited");
    assert!(
        error["ref"].as_i64().is_some_and(|r| r >= 10),
        "the burst passes: {error}"
    );
    assert!(error["retry_after"].as_u64().is_some_and(|s| s >= 1));
    ws.send(json!({"op": "ping", "ref": "p"})).await;
    assert!(
        matches!(ws.next_frame().await, Frame::Event(_)),
        "still open"
    );
}
