//! Hostile and broken clients: oversized heads, stalled handshakes, garbage.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, Relay, TokenIn, Ws, http, token};

/// Reads until the relay closes the connection; returns what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("closed before the deadline")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let relay = Relay::start(&[]).await;
    let response = http()
        .get(relay.http("/rooms/r"))
        .header("x-padding", "a".repeat(20_000))
        .send()
        .await;
    match response {
        Ok(r) => assert!(r.status().is_client_error(), "{}", r.status()),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let long_url = relay.http(&format!("/rooms/r?x={}", "a".repeat(20_000)));
    if let Ok(r) = http().get(long_url).send().await {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    assert_eq!(
        http()
            .get(relay.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped() {
    let relay = Relay::start(&[("EDGEWIRE_HANDSHAKE_TIMEOUT", "300ms")]).await;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    // Half a request head, then nothing.
    stream
        .write_all(b"GET /rooms/r HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_dropped() {
    let relay = Relay::start(&[("EDGEWIRE_HANDSHAKE_TIMEOUT", "300ms")]).await;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    // Not a byte: the relay hangs up on its own (read_to_close fails the
    // test if it has not by the deadline).
    let answer = read_to_close(&mut stream).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

fn pseudo_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One garbage client of kind `kind`.
async fn garbage(addr: std::net::SocketAddr, kind: u64, seed: u64, token: String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut seed = seed | 1;
    let noise: Vec<u8> = (0..512).map(|_| pseudo_random(&mut seed) as u8).collect();
    let handshake = format!(
        "GET /rooms/g?token={token} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let _ = match kind % 5 {
        // Random bytes instead of HTTP.
        0 => stream.write_all(&noise).await,
        // A broken handshake: a head that is not HTTP after a valid start.
        1 => {
            stream
                .write_all(b"GET /rooms/g HTTP/1.1\r\nHost: relay\r\n\x00\x01\x02 garbage\r\n\r\n")
                .await
        }
        // A real upgrade, then random bytes as frames.
        2 => {
            let _ = stream.write_all(handshake.as_bytes()).await;
            stream.write_all(&noise).await
        }
        // A real upgrade, then a truncated frame header and a hang-up.
        3 => {
            let _ = stream.write_all(handshake.as_bytes()).await;
            stream.write_all(&[0x81, 0xFE]).await
        }
        // A real upgrade, then an unmasked frame with a huge claimed length.
        _ => {
            let _ = stream.write_all(handshake.as_bytes()).await;
            stream
                .write_all(&[0x82, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
                .await
        }
    };
    // Read whatever the relay answers for a moment, then hang up.
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
}

#[tokio::test]
async fn thousands_of_garbage_connections_leave_the_relay_healthy() {
    let relay = Relay::start(&[
        ("EDGEWIRE_HANDSHAKE_TIMEOUT", "1s"),
        ("EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS", "100000"),
        ("EDGEWIRE_NEW_CONNECTIONS_PER_SECOND", "100000"),
    ])
    .await;
    let tok = token("g", &["g=read,write"]);
    const TOTAL: u64 = 2000;
    const AT_ONCE: u64 = 200;
    for batch in 0..(TOTAL / AT_ONCE) {
        let clients: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let n = batch * AT_ONCE + i;
                tokio::spawn(garbage(
                    relay.addr,
                    n,
                    n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    tok.clone(),
                ))
            })
            .collect();
        for c in clients {
            let _ = c.await;
        }
    }
    // Healthy: answers, serves a real session, and holds no leftover sessions.
    assert_eq!(
        http()
            .get(relay.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let mut ws = Ws::connect(&relay, "/rooms/g", &tok, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    ws.send(serde_json::json!({"op": "ping", "ref": 1})).await;
    assert_eq!(ws.next_kind("pong").await["ref"], 1);
    drop(ws);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let metrics = http()
            .get(relay.http("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("edgewire_sessions{transport=\"websocket\"} 0") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sessions were left open:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads from a raw socket until `needle` has arrived; returns all bytes so far.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("bytes before the deadline")
            .expect("readable");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The data of a chunked body made of whole chunks; panics on bad framing.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while !body.is_empty() {
        let (size, rest) = body.split_once("\r\n").expect("a chunk-size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        assert!(size > 0, "no last chunk before the stream ends");
        assert_eq!(
            rest.get(size..size + 2),
            Some("\r\n"),
            "chunk of {size}: {rest:?}"
        );
        data.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    data
}

#[tokio::test]
async fn an_eventsource_request_on_a_raw_socket_gets_chunked_frames_and_a_hang_up_leaves() {
    let relay = Relay::start(&[]).await;
    let tok = token("raw", &["direct=read,write"]);
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let request = format!(
        "GET /rooms/direct?token={tok} HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read until the welcome's chunk is complete: its frame, then the CRLF
    // that closes the chunk.
    let head = read_until(&mut stream, "\"last_id\":null}\n\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/event-stream\r\n"),
        "{head}"
    );
    assert!(lower.contains("transfer-encoding: chunked\r\n"), "{head}");
    // Every chunk is its size in hex, exactly that many bytes, then CRLF; the
    // stream starts with `retry:` and then the welcome.
    let body = &head[head.find("\r\n\r\n").unwrap() + 4..];
    let data = dechunk(body);
    assert!(
        data.starts_with("retry: 2000\n\nevent: welcome\ndata: {"),
        "{data:?} from {body:?}"
    );

    // Another peer sees this one, then sees it leave when the socket closes.
    let mut ws = Ws::connect(
        &relay,
        "/rooms/direct",
        &token("w", &["direct=read"]),
        TokenIn::Query,
    )
    .await;
    let welcome = ws.next().await;
    let peers = welcome["peers"].as_array().cloned().unwrap_or_default();
    assert_eq!(peers.len(), 1, "{welcome}");
    drop(stream);
    let leave = ws.next_kind("leave").await;
    assert_eq!(leave["peer"]["id"], peers[0]["id"]);
}

#[tokio::test]
async fn an_eventsource_request_without_a_token_gets_a_whole_401_and_a_close() {
    let relay = Relay::start(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    stream
        .write_all(
            b"GET /rooms/direct HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", body.len())),
        "{head}"
    );
    assert!(body.contains("\"token_missing\""), "{body}");
}
