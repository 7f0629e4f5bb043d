//! Liveness and slow consumers over real sockets.

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DEADLINE, Relay, RelayProcess, TokenIn, Ws, http, token};

/// Completes a WebSocket handshake by hand on a raw TCP socket, and returns it.
async fn raw_websocket(addr: &str, path_and_query: &str) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads one server frame, failing the test if none arrives by the deadline;
/// returns its first byte (FIN and opcode) and payload.
async fn read_frame(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    tokio::time::timeout(DEADLINE, read_frame_unbounded(stream))
        .await
        .expect("a frame before the deadline")
}

async fn read_frame_unbounded(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(header[1] & 0x80, 0, "server frames are not masked");
    let mut len = u64::from(header[1] & 0x7f);
    if len == 126 {
        let mut ext = [0u8; 2];
        stream.read_exact(&mut ext).await.unwrap();
        len = u64::from(u16::from_be_bytes(ext));
    } else if len == 127 {
        let mut ext = [0u8; 8];
        stream.read_exact(&mut ext).await.unwrap();
        len = u64::from_be_bytes(ext);
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).await.unwrap();
    (header[0], payload)
}

/// A client frame with FIN and opcode in `first`, masked as RFC 6455 requires.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0xa1, 0x02, 0x5c, 0xe3];
    let mut out = vec![first, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Reads frames until one whose text holds `needle`, by the deadline;
/// returns that text.
async fn read_text_with(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let found = async {
        loop {
            let (first, payload) = read_frame(stream).await;
            let text = String::from_utf8_lossy(&payload).into_owned();
            if first == 0x81 && text.contains(needle) {
                return text;
            }
        }
    };
    tokio::time::timeout(DEADLINE, found)
        .await
        .unwrap_or_else(|_| panic!("a text frame with {needle:?} before the deadline"))
}

#[tokio::test]
async fn pings_are_echoed_and_fragmented_ops_are_gathered() {
    let relay = Relay::start(&[]).await;
    let tok = token("raw", &["r=read,write"]);
    let mut stream = raw_websocket(&relay.addr.to_string(), &format!("/rooms/r?token={tok}")).await;
    let welcome = read_text_with(&mut stream, "welcome").await;
    assert!(welcome.contains("\"kind\":\"welcome\""), "{welcome}");
    // A ping op in two fragments, with a client ping between them.
    let mut wire = client_frame(0x01, br#"{"op":"ping","#);
    wire.extend(client_frame(0x89, b"are you there"));
    wire.extend(client_frame(0x80, br#""ref":7}"#));
    stream.write_all(&wire).await.unwrap();
    let (first, payload) = read_frame(&mut stream).await;
    assert_eq!((first, payload.as_slice()), (0x8A, &b"are you there"[..]));
    let pong = read_text_with(&mut stream, "pong").await;
    assert!(pong.contains("\"ref\":7"), "{pong}");
    // A close from the client is answered with a close.
    stream
        .write_all(&client_frame(0x88, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let code = tokio::time::timeout(DEADLINE, read_until_close(&mut stream))
        .await
        .unwrap();
    assert_eq!(code, 1000);
}

#[tokio::test]
async fn frames_that_break_rfc_6455_close_with_its_codes() {
    let relay = Relay::start(&[]).await;
    let tok = token("raw", &["r=read,write"]);
    let cases: [(&str, Vec<u8>, u16); 7] = [
        ("unmasked", b"\x81\x02hi".to_vec(), 1002),
        ("reserved bits", client_frame(0xC1, b"hi"), 1002),
        ("1-byte close", client_frame(0x88, &[0x03]), 1002),
        (
            "close code 1005",
            client_frame(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        ("bad UTF-8", client_frame(0x81, &[0xff, 0xfe]), 1007),
        (
            "bad UTF-8 in a first fragment",
            client_frame(0x01, &[b'a', 0xff]),
            1007,
        ),
        (
            "bad close reason",
            client_frame(0x88, &[0x03, 0xe8, 0xff]),
            1007,
        ),
    ];
    for (what, wire, expected) in cases {
        let mut stream =
            raw_websocket(&relay.addr.to_string(), &format!("/rooms/r?token={tok}")).await;
        read_text_with(&mut stream, "welcome").await;
        stream.write_all(&wire).await.unwrap();
        let code = tokio::time::timeout(DEADLINE, read_until_close(&mut stream))
            .await
            .unwrap();
        assert_eq!(code, expected, "{what}");
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_own_code() {
    let relay = Relay::start(&[]).await;
    let tok = token("raw", &["r=read,write"]);
    for code in [1000u16, 1001, 3000, 4999] {
        let mut stream =
            raw_websocket(&relay.addr.to_string(), &format!("/rooms/r?token={tok}")).await;
        read_text_with(&mut stream, "welcome").await;
        stream
            .write_all(&client_frame(0x88, &code.to_be_bytes()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(DEADLINE, read_until_close(&mut stream))
            .await
            .unwrap();
        assert_eq!(echoed, code);
    }
}

/// Reads server frames (unmasked) until a close frame; returns its code.
async fn read_until_close(stream: &mut tokio::net::TcpStream) -> u16 {
    loop {
        let (first, payload) = read_frame(stream).await;
        if first & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4408() {
    let relay = Relay::start(&[
        ("EDGEWIRE_PING_INTERVAL", "100ms"),
        ("EDGEWIRE_IDLE_TIMEOUT", "400ms"),
    ])
    .await;
    let tok = token("quiet", &["r=read"]);
    let mut silent = raw_websocket(&relay.addr.to_string(), &format!("/rooms/r?token={tok}")).await;
    // It never sends a frame, not even a pong: the relay pings, then gives up.
    let code = tokio::time::timeout(DEADLINE, read_until_close(&mut silent))
        .await
        .expect("closed before the deadline");
    assert_eq!(code, 4408);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    use futures_util::StreamExt;
    // A pong late by up to 750 ms on a loaded machine is still in time.
    let relay = Relay::start(&[
        ("EDGEWIRE_PING_INTERVAL", "250ms"),
        ("EDGEWIRE_IDLE_TIMEOUT", "1s"),
    ])
    .await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/r",
        &token("alive", &["r=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    // Reading lets tungstenite answer each ping. Ten pings span more than twice
    // the idle timeout; a client that answers them is still there.
    let mut pings = 0;
    while pings < 10 {
        match tokio::time::timeout(DEADLINE, ws.stream.next())
            .await
            .expect("a frame before the deadline")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                panic!("closed: {frame:?}")
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    ws.send(serde_json::json!({"op": "ping", "ref": 1})).await;
    assert_eq!(ws.next_kind("pong").await["ref"], 1);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_closed_with_4508() {
    // A relay process of its own, so its memory can be measured alone.
    // History is kept small so that what is measured is the stuck client alone
    // (history holds up to EDGEWIRE_HISTORY_SIZE messages per room, by design).
    let relay = RelayProcess::start(&[
        ("EDGEWIRE_OUTBOUND_QUEUE", "64"),
        ("EDGEWIRE_PUBLISH_RATE", "1000000"),
        ("EDGEWIRE_HISTORY_SIZE", "10"),
        // This test is about the lag bound (4508): the write timeout must
        // not cut the stuck client first.
        ("EDGEWIRE_WRITE_TIMEOUT", "60s"),
    ])
    .await;
    let tok = token("sub", &["flood=read,write"]);
    let mut healthy = Ws::connect_url(
        &format!("ws://{}/rooms/flood", relay.base),
        &tok,
        TokenIn::Header,
    )
    .await;
    healthy.next_kind("welcome").await;
    let mut stuck = raw_websocket(&relay.base, &format!("/rooms/flood?token={tok}")).await;
    // The stuck client reads nothing from here on; the publisher floods large messages.
    const N: usize = 1500;
    let body = "x".repeat(32 * 1024);
    let before = relay.rss_kib();
    let publisher = {
        let url = format!("http://{}/rooms/flood", relay.base);
        let tok = tok.clone();
        tokio::spawn(async move {
            let client = http();
            for i in 0..N {
                let r = client
                    .post(&url)
                    .bearer_auth(&tok)
                    .body(format!("{i}:{body}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    let mut received = 0;
    let mut peak = before;
    while received < N {
        let ev = healthy.next_kind("message").await;
        assert!(
            ev["data"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{received}:")),
            "in order, none lost"
        );
        received += 1;
        if received % 100 == 0 {
            peak = peak.max(relay.rss_kib());
        }
    }
    publisher.await.unwrap();
    let grown = peak.saturating_sub(before);
    // 1500 x 32 KiB = 47 MiB went through; the stuck client's ring holds 64
    // events (about 2 MiB) and its socket buffer a little more.
    assert!(grown < 24 * 1024, "relay RSS grew by {grown} KiB");
    // Now the stuck client reads: what was buffered in the socket, then 4508.
    let code = tokio::time::timeout(DEADLINE, read_until_close(&mut stuck))
        .await
        .expect("closed before the deadline");
    assert_eq!(code, 4508);
    let metrics = http()
        .get(format!("http://{}/metrics", relay.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "edgewire_slow_consumers_total 1"),
        "{metrics}"
    );
}

/// A relay with a 1 s write timeout, a token for room `stall`, and a
/// watcher of that room, welcomed.
async fn stall_room() -> (Relay, String, crate::harness::Sse) {
    stall_room_with(&[("EDGEWIRE_WRITE_TIMEOUT", "1s")]).await
}

/// The same with the relay's settings `extra` (the write timeout among them).
async fn stall_room_with(extra: &[(&str, &str)]) -> (Relay, String, crate::harness::Sse) {
    let mut settings = vec![
        ("EDGEWIRE_PUBLISH_RATE", "1000000"),
        ("EDGEWIRE_HISTORY_SIZE", "10"),
    ];
    settings.extend_from_slice(extra);
    let relay = Relay::start(&settings).await;
    let tok = token("stall", &["stall=read,write"]);
    let mut watcher = crate::harness::Sse::open(
        &relay.http(&format!("/rooms/stall?token={tok}")),
        &[("accept", "text/event-stream")],
    )
    .await;
    watcher.next_kind("welcome").await;
    (relay, tok, watcher)
}

/// Floods `room` with large messages until the watcher sees `peer` leave;
/// returns the leave event.
async fn flood_until_leave(
    relay: &Relay,
    tok: &str,
    room: &str,
    watcher: &mut crate::harness::Sse,
    peer: &str,
) -> serde_json::Value {
    let url = relay.http(&format!("/rooms/{room}"));
    let tok = tok.to_owned();
    let flood = tokio::spawn(async move {
        let body = "x".repeat(60 * 1024);
        for _ in 0..2000 {
            let r = http()
                .post(&url)
                .bearer_auth(&tok)
                .body(body.clone())
                .send()
                .await;
            if !matches!(r, Ok(ref r) if r.status() == 202) {
                return;
            }
        }
    });
    let leave = tokio::time::timeout(DEADLINE, async {
        loop {
            let ev = watcher.next().await;
            if ev["kind"] == "leave" && ev["peer"]["id"] == peer {
                return ev;
            }
        }
    })
    .await
    .expect("the stalled client was cut before the deadline");
    flood.abort();
    leave
}

/// A WebSocket client that stops reading is cut after the write timeout
/// (its session no longer waits in a write forever); its peers see it leave
/// with reason `timeout`.
#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_cut_after_the_write_timeout() {
    let (relay, tok, mut watcher) = stall_room().await;
    let mut stuck = raw_websocket(
        &relay.addr.to_string(),
        &format!("/rooms/stall?token={tok}"),
    )
    .await;
    let welcome = read_text_with(&mut stuck, "welcome").await;
    let welcome: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    let peer = welcome["peer"]["id"].as_str().unwrap().to_owned();
    watcher.next_kind("join").await;
    // From here on the stuck client reads nothing.
    let leave = flood_until_leave(&relay, &tok, "stall", &mut watcher, &peer).await;
    assert_eq!(leave["reason"], "timeout", "{leave}");
    // The relay closed the TCP connection: reading what it holds ends.
    let drained = tokio::time::timeout(DEADLINE, async {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(stuck.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    assert!(drained.is_ok(), "the connection was closed");
}

/// The same for an SSE client on the relay's own stream writer (the path
/// every browser's EventSource takes): it leaves with reason `timeout` too.
#[tokio::test]
async fn an_sse_client_that_stops_reading_is_cut_after_the_write_timeout() {
    let (relay, tok, mut watcher) = stall_room().await;
    // A raw EventSource-like request whose reader then stops reading.
    let mut stuck = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET /rooms/stall?token={tok} HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let join = watcher.next_kind("join").await;
    let peer = join["peer"]["id"].as_str().unwrap().to_owned();
    let leave = flood_until_leave(&relay, &tok, "stall", &mut watcher, &peer).await;
    assert_eq!(leave["peer"]["id"], peer.as_str());
    assert_eq!(leave["reason"], "timeout", "{leave}");
    drop(stuck);
}

/// While a write to a client that stopped reading is pending, the session's
/// timers still run: its token expires on time and its peers see it leave
/// (`expired`), long before the write timeout (60 s here) would cut it.
#[tokio::test]
async fn a_stalled_websocket_still_expires_on_time() {
    let (relay, tok, mut watcher) = stall_room_with(&[
        ("EDGEWIRE_WRITE_TIMEOUT", "60s"),
        ("EDGEWIRE_JWT_LEEWAY", "0"),
        ("EDGEWIRE_OUTBOUND_QUEUE", "64"),
    ])
    .await;
    let short = crate::harness::token_with(
        "stall",
        &["stall=read,write"],
        std::time::Duration::from_secs(4),
        None,
    );
    let mut stuck = raw_websocket(
        &relay.addr.to_string(),
        &format!("/rooms/stall?token={short}"),
    )
    .await;
    let welcome = read_text_with(&mut stuck, "welcome").await;
    let welcome: serde_json::Value = serde_json::from_str(&welcome).unwrap();
    let peer = welcome["peer"]["id"].as_str().unwrap().to_owned();
    watcher.next_kind("join").await;
    let leave = flood_until_leave(&relay, &tok, "stall", &mut watcher, &peer).await;
    assert_eq!(leave["reason"], "expired", "{leave}");
}

/// A client frame: text, masked (with a zero key, which leaves the bytes as
/// they are).
fn masked_text(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// A client that publishes without reading its socket is cut as a slow
/// consumer once its answers pile up; it never deadlocks with the relay
/// (both sides blocked writing), even with a long write timeout.
#[tokio::test]
async fn a_client_that_publishes_without_reading_is_cut() {
    let (relay, tok, mut watcher) = stall_room_with(&[("EDGEWIRE_WRITE_TIMEOUT", "60s")]).await;
    let stuck = raw_websocket(
        &relay.addr.to_string(),
        &format!("/rooms/stall?token={tok}"),
    )
    .await;
    let peer = watcher.next_kind("join").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_reader, mut writer) = stuck.into_split();
    let body = "y".repeat(4000);
    let publisher = tokio::spawn(async move {
        for i in 0..1_000_000u64 {
            let op = format!(r#"{{"op":"pub","ref":{i},"data":"{body}"}}"#);
            if writer.write_all(&masked_text(&op)).await.is_err() {
                return;
            }
        }
    });
    let leave = tokio::time::timeout(DEADLINE * 2, async {
        loop {
            let ev = watcher.next().await;
            if ev["kind"] == "leave" && ev["peer"]["id"] == peer.as_str() {
                return ev;
            }
        }
    })
    .await
    .expect("the client that does not read was cut");
    publisher.abort();
    assert_eq!(leave["reason"], "closed", "{leave}");
}

/// The same for an EventSource stream that stopped reading: while its chunk
/// waits, its token still expires on time and its peers see it leave.
#[tokio::test]
async fn a_stalled_sse_stream_still_expires_on_time() {
    let (relay, tok, mut watcher) = stall_room_with(&[
        ("EDGEWIRE_WRITE_TIMEOUT", "60s"),
        ("EDGEWIRE_JWT_LEEWAY", "0"),
        ("EDGEWIRE_OUTBOUND_QUEUE", "64"),
    ])
    .await;
    let short = crate::harness::token_with(
        "stall",
        &["stall=read,write"],
        std::time::Duration::from_secs(4),
        None,
    );
    let mut stuck = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    stuck
        .write_all(
            format!(
                "GET /rooms/stall?token={short} HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let peer = watcher.next_kind("join").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let leave = flood_until_leave(&relay, &tok, "stall", &mut watcher, &peer).await;
    assert_eq!(leave["reason"], "expired", "{leave}");
    drop(stuck);
}
