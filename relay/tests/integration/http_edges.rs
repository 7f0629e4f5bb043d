//! HTTP edges as the contract says: HEAD opens no session, a write with
//! upgrade headers is refused, and every write route shares one rate policy.

use serde_json::{Value, json};

use crate::harness::{Relay, Sse, TokenIn, Ws, http, token};

#[tokio::test]
async fn head_on_a_room_opens_no_session() {
    let relay = Relay::start(&[]).await;
    let tok = token("peeker", &["quiet=read,write"]);
    let mut watcher = Sse::open(
        &relay.http(&format!(
            "/rooms/quiet?token={}",
            token("w", &["quiet=read"])
        )),
        &[],
    )
    .await;
    watcher.next_kind("welcome").await;
    let head = http()
        .head(relay.http("/rooms/quiet"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], "text/event-stream");
    let head = http()
        .head(relay.http("/rooms/quiet/topics/a/+"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // Rights are checked as for a GET.
    let refused = http()
        .head(relay.http("/rooms/other"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    // The next thing the watcher sees is this message, not a join or leave.
    let r = http()
        .post(relay.http("/rooms/quiet"))
        .bearer_auth(&tok)
        .body("marker")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let next = watcher.next().await;
    assert_eq!(
        (next["kind"].as_str(), next["data"].as_str()),
        (Some("message"), Some("marker")),
        "{next}"
    );
    let snapshot = crate::harness::get_json(&relay, "/rooms/quiet", &tok).await;
    assert_eq!(
        snapshot["peers"].as_array().map(Vec::len),
        Some(1),
        "{snapshot}"
    );
}

#[tokio::test]
async fn a_post_with_upgrade_headers_is_refused_and_publishes_nothing() {
    let relay = Relay::start(&[]).await;
    let tok = token("u", &["smuggle=read,write"]);
    for path in ["/rooms/smuggle", "/rooms/smuggle/topics/t"] {
        let r = http()
            .post(relay.http(path))
            .bearer_auth(&tok)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body("hidden")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_request");
    }
    let history: Value = crate::harness::get_json(&relay, "/rooms/smuggle/history", &tok).await;
    assert_eq!(history["events"], json!([]), "{history}");
}

/// Sends `request` until it is refused; returns how many passed and the refusal.
async fn until_limited(
    mut request: impl FnMut() -> reqwest::RequestBuilder,
) -> (usize, reqwest::Response) {
    let mut passed = 0;
    loop {
        let r = request().send().await.unwrap();
        if r.status() != 429 {
            passed += 1;
            assert!(passed < 50, "never limited (last status {})", r.status());
            continue;
        }
        return (passed, r);
    }
}

#[tokio::test]
async fn every_http_write_route_shares_the_write_rate_policy() {
    let relay = Relay::start(&[("EDGEWIRE_PUBLISH_RATE", "1")]).await;
    let grants = ["w=read,write,retain"];
    // Each route with its own user, so each has a fresh bucket of 2 (twice the rate).
    let routes: [(&str, &str, &str); 7] = [
        ("POST", "/rooms/w/topics/a", "topic-post"),
        ("PUT", "/rooms/w/topics/a", "topic-put"),
        ("DELETE", "/rooms/w/topics/a", "topic-delete"),
        ("PUT", "/rooms/w/state?conn=nobody.x", "state-put"),
        ("PUT", "/rooms/w/will?conn=nobody.x&topic=a", "will-put"),
        ("DELETE", "/rooms/w/will?conn=nobody.x", "will-delete"),
        ("POST", "/rooms/w/refresh?conn=nobody.x", "refresh"),
    ];
    for (method, path, user) in routes {
        let tok = token(user, &grants);
        let url = relay.http(path);
        let method: reqwest::Method = method.parse().unwrap();
        let (passed, refused) = until_limited(|| {
            http()
                .request(method.clone(), &url)
                .bearer_auth(&tok)
                .body("v")
        })
        .await;
        assert!(
            passed <= 3,
            "{method} {path}: {passed} passed a bucket of 2"
        );
        assert_eq!(refused.status(), 429, "{method} {path}");
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "rate_limited", "{method} {path}");
    }
}

#[tokio::test]
async fn websocket_write_ops_share_the_session_budget() {
    let relay = Relay::start(&[("EDGEWIRE_PUBLISH_RATE", "1")]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/s",
        &token("u", &["s=read,write,retain"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    let mut limited = false;
    for i in 0..10 {
        ws.send(json!({"op": "state", "state": {"n": i}, "ref": i}))
            .await;
        loop {
            let ev = ws.next().await;
            if ev["ref"] == i {
                if ev["kind"] == "error" {
                    assert_eq!(ev["code"], "rate_limited", "{ev}");
                    limited = true;
                }
                break;
            }
        }
        if limited {
            break;
        }
    }
    assert!(limited, "state ops were never limited");
    // The session goes on (a ping is not a write).
    ws.send(json!({"op": "ping", "ref": "p"})).await;
    ws.next_kind("pong").await;
}

/// Sends a raw request head and returns the status line and headers.
async fn raw_head(relay: &Relay, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(crate::harness::DEADLINE, stream.read(&mut chunk))
            .await
            .expect("an answer before the deadline")
            .unwrap();
        answer.extend_from_slice(&chunk[..n]);
        if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn handshake(tok: &str, host: bool, key: &str, version: &str) -> String {
    format!(
        "GET /rooms/hs?token={tok} HTTP/1.1\r\n{}Connection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: {version}\r\n{key}\r\n",
        if host { "Host: relay\r\n" } else { "" },
    )
}

#[tokio::test]
async fn websocket_handshakes_are_checked_as_rfc_6455_says() {
    let relay = Relay::start(&[]).await;
    let tok = token("u", &["hs=read"]);
    let good_key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let answer = raw_head(&relay, &handshake(&tok, true, good_key, "13")).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    for key in [
        "Sec-WebSocket-Key: \r\n",
        "Sec-WebSocket-Key: x\r\n",
        "Sec-WebSocket-Key: not base64 at all!\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
    ] {
        let answer = raw_head(&relay, &handshake(&tok, true, key, "13")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{key:?}: {answer}");
    }
    let answer = raw_head(&relay, &handshake(&tok, true, good_key, "8")).await;
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{answer}"
    );
    let answer = raw_head(&relay, &handshake(&tok, false, good_key, "13")).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "no Host: {answer}");
    let answer = raw_head(&relay, "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "no Host: {answer}");
}

/// The handshake timeout is one deadline for the whole request head: a first
/// byte sent late does not earn a second full timeout.
#[tokio::test]
async fn the_handshake_timeout_is_one_deadline_for_the_whole_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = Relay::start(&[("EDGEWIRE_HANDSHAKE_TIMEOUT", "2s")]).await;
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    // A slow client: its first byte comes 1.5 s in, then nothing more.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stream.write_all(b"G").await.unwrap();
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(crate::harness::DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was never closed");
    let elapsed = started.elapsed();
    // 2 s after the accept; a second timeout would have ended it at 3.5 s.
    assert!(
        elapsed < std::time::Duration::from_millis(3000),
        "closed after {elapsed:?}"
    );
}
