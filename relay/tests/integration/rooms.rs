//! Rooms over real sockets: SSE framing, WebSocket and SSE peers together,
//! ordering, snapshots, errors, heartbeats and shutdown.

use std::collections::HashSet;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::harness::{DEADLINE, Relay, Sse, TokenIn, Ws, http, post_text, token};

fn bearer(tok: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {tok}"))
}

#[tokio::test]
async fn sse_framing_and_a_websocket_peer_in_one_room() {
    let relay = Relay::start(&[]).await;
    let carol = token("carol", &["mixed=read,write"]);
    let (k, v) = bearer(&carol);
    let mut sse = Sse::open(
        &relay.http("/rooms/mixed"),
        &[(k, &v), ("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(sse.response_headers["content-type"], "text/event-stream");
    let welcome = sse.next_event().await.unwrap();
    assert_eq!(sse.raw[0], "retry: 2000", "the stream starts with retry:");
    assert_eq!(welcome.event, "welcome");
    assert!(welcome.id.is_none(), "welcome has no id");
    let carol_id = welcome.data["peer"]["id"].as_str().unwrap().to_owned();
    assert!(
        carol_id.starts_with("carol.") && carol_id.len() >= "carol.".len() + 6,
        "{carol_id}"
    );

    let mut ws = Ws::connect(
        &relay,
        "/rooms/mixed",
        &token("alice", &["mixed=read,write"]),
        TokenIn::Header,
    )
    .await;
    let alice_welcome = ws.next().await;
    assert_eq!(alice_welcome["peers"][0]["id"], carol_id.as_str());
    let alice_id = alice_welcome["peer"]["id"].as_str().unwrap().to_owned();
    let join = sse.next_event().await.unwrap();
    assert_eq!(
        (join.event.as_str(), join.data["peer"]["id"].as_str()),
        ("join", Some(alice_id.as_str()))
    );

    ws.send(json!({"op": "pub", "type": "chat", "data": {"n": 1}, "ref": "a"}))
        .await;
    let message = sse.next_event().await.unwrap();
    assert_eq!(message.event, "message");
    assert_eq!(
        message.id.as_deref(),
        message.data["id"].as_str(),
        "SSE id: is the event id"
    );
    assert_eq!(message.data["from"], alice_id.as_str());

    // A direct message to the SSE peer reaches it and only it.
    ws.send(json!({"op": "pub", "to": carol_id, "data": "for carol", "ref": "d"}))
        .await;
    let direct = sse.next_event().await.unwrap();
    assert_eq!(
        (direct.data["to"].as_str(), direct.data["data"].as_str()),
        (Some(carol_id.as_str()), Some("for carol"))
    );
    let mut alice_saw = Vec::new();
    while alice_saw
        .iter()
        .filter(|e: &&Value| e["kind"] == "ack")
        .count()
        < 2
    {
        alice_saw.push(ws.next().await);
    }
    assert!(
        alice_saw.iter().all(|e| e["data"] != "for carol"),
        "the sender gets an ack, not a copy: {alice_saw:?}"
    );

    // Dropping the SSE response leaves the room.
    drop(sse);
    let leave = ws.next_kind("leave").await;
    assert_eq!(
        (leave["peer"]["id"].as_str(), leave["reason"].as_str()),
        (Some(carol_id.as_str()), Some("closed"))
    );
}

#[tokio::test]
async fn one_order_for_all_subscribers_under_concurrent_publishers() {
    let relay = Relay::start(&[]).await;
    let tok = token("sub", &["order=read,write"]);
    let mut a = Ws::connect(&relay, "/rooms/order", &tok, TokenIn::Header).await;
    let mut b = Ws::connect(&relay, "/rooms/order", &tok, TokenIn::Query).await;
    let (k, v) = bearer(&tok);
    let mut c = Sse::open(&relay.http("/rooms/order"), &[(k, &v)]).await;
    a.next_kind("welcome").await;
    b.next_kind("welcome").await;
    c.next_kind("welcome").await;
    const EACH: usize = 200;
    let publisher = |name: &'static str| {
        let url = relay.http("/rooms/order");
        let tok = tok.clone();
        tokio::spawn(async move {
            let client = http();
            for i in 0..EACH {
                let response = client
                    .post(&url)
                    .bearer_auth(&tok)
                    .body(format!("{name}-{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
            }
        })
    };
    let (p1, p2) = (publisher("x"), publisher("y"));
    let mut sequences = Vec::new();
    for sub in 0..3 {
        let mut seen = Vec::new();
        while seen.len() < 2 * EACH {
            let ev = match sub {
                0 => a.next().await,
                1 => b.next().await,
                _ => c.next().await,
            };
            if ev["kind"] == "message" {
                seen.push((
                    ev["id"].as_str().unwrap().to_owned(),
                    ev["data"].as_str().unwrap().to_owned(),
                ));
            }
        }
        sequences.push(seen);
    }
    p1.await.unwrap();
    p2.await.unwrap();
    assert_eq!(
        sequences[0], sequences[1],
        "both WebSocket subscribers saw one order"
    );
    assert_eq!(
        sequences[0], sequences[2],
        "the SSE subscriber saw the same order"
    );
    let ids: Vec<edgewire::protocol::EventId> = sequences[0]
        .iter()
        .map(|(id, _)| id.parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow");
    let distinct: HashSet<&String> = sequences[0].iter().map(|(_, d)| d).collect();
    assert_eq!(distinct.len(), 2 * EACH, "no loss, no duplicate");
    // Each publisher's own messages keep their order.
    for name in ["x", "y"] {
        let mine: Vec<usize> = sequences[0]
            .iter()
            .filter_map(|(_, d)| {
                d.strip_prefix(&format!("{name}-"))
                    .map(|n| n.parse().unwrap())
            })
            .collect();
        assert_eq!(mine, (0..EACH).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn snapshot_and_room_list() {
    let relay = Relay::start(&[]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/snap-1",
        &token("alice", &["snap-*=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "state", "state": {"typing": true}, "ref": 1}))
        .await;
    ws.next_kind("ack").await;
    let _other = Ws::connect(
        &relay,
        "/rooms/hidden",
        &token("bob", &["hidden=read"]),
        TokenIn::Header,
    )
    .await;

    let reader = token("reader", &["snap-*=read"]);
    let snap: Value = http()
        .get(relay.http("/rooms/snap-1"))
        .bearer_auth(&reader)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snap["room"], "snap-1");
    assert_eq!(snap["peers"].as_array().map(Vec::len), Some(1));
    assert_eq!(snap["peers"][0]["user"], "alice");
    assert_eq!(snap["peers"][0]["state"], json!({"typing": true}));
    assert_eq!(snap["topics"], json!({}));

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list: Value = crate::harness::get_json(&relay, "/rooms", &reader).await;
        let rooms = list["rooms"].as_array().unwrap();
        assert!(
            rooms.iter().all(|r| r["room"] != "hidden"),
            "unreadable rooms are not listed: {list}"
        );
        if rooms
            .iter()
            .any(|r| r["room"] == "snap-1" && r["peers"] == 1)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snap-1 never listed: {list}"
        );
    }
    let response = http()
        .get(relay.http("/rooms/hidden"))
        .bearer_auth(&reader)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let relay = Relay::start(&[("EDGEWIRE_MAX_MESSAGE_BYTES", "1024")]).await;
    let tok = token("alice", &["*=read,write"]);
    let client = http();
    let check = |response: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    let post = |path: &str| client.post(relay.http(path)).bearer_auth(&tok);
    check(
        post("/rooms/bad%20room").body("x").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    check(
        client
            .get(relay.http(&format!("/rooms/{}", "x".repeat(129))))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    check(
        post("/rooms/r")
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    check(
        post("/rooms/r")
            .body(vec![0xff, 0xfe, 0x00])
            .send()
            .await
            .unwrap(),
        415,
        "unsupported_media",
    )
    .await;
    check(
        post("/rooms/r")
            .body("x".repeat(2000))
            .send()
            .await
            .unwrap(),
        413,
        "too_large",
    )
    .await;
    check(
        post("/rooms/r?retain=maybe")
            .body("x")
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
    check(
        post("/rooms/r?type=").body("x").send().await.unwrap(),
        400,
        "bad_request",
    )
    .await;
    check(
        post("/rooms/r?to=nobody.1").body("x").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        post("/rooms/r?conn=nobody.1")
            .body("x")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        client.get(relay.http("/nowhere")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    check(
        client
            .delete(relay.http("/rooms/r"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap(),
        405,
        "bad_request",
    )
    .await;
    // A request that asks to upgrade but is not a valid handshake is refused, not served as SSE.
    check(
        client
            .get(relay.http("/rooms/r"))
            .bearer_auth(&tok)
            .header("upgrade", "websocket")
            .send()
            .await
            .unwrap(),
        400,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn oversized_frames_close_1009() {
    let relay = Relay::start(&[("EDGEWIRE_MAX_MESSAGE_BYTES", "1024")]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/r",
        &token("alice", &["r=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "pub", "data": "x".repeat(2000)}))
        .await;
    let (events, code) = ws.until_close().await;
    assert_eq!(code, Some(1009));
    assert_eq!(
        events.last().map(|e| e["code"].clone()),
        Some(json!("too_large"))
    );
}

#[tokio::test]
async fn heartbeats_and_pings() {
    let relay = Relay::start(&[
        ("EDGEWIRE_SSE_HEARTBEAT", "100ms"),
        ("EDGEWIRE_PING_INTERVAL", "100ms"),
        ("EDGEWIRE_IDLE_TIMEOUT", "10s"),
    ])
    .await;
    let tok = token("alice", &["r=read"]);
    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(&relay.http("/rooms/r"), &[(k, &v)]).await;
    loop {
        let block = sse.next_block().await.unwrap();
        if block == ": ping" {
            break;
        }
    }
    let mut ws = Ws::connect(&relay, "/rooms/r", &tok, TokenIn::Header).await;
    let saw_ping = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(msg)) = ws.stream.next().await {
            if matches!(msg, Message::Ping(_)) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(saw_ping, "the relay pings WebSocket clients");
}

#[tokio::test]
async fn shutdown_drains_every_session_spread_out() {
    let mut relay = Relay::start(&[("EDGEWIRE_SHUTDOWN_GRACE", "2s")]).await;
    let tok = token("alice", &["r=read"]);
    let mut sockets = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut ws = Ws::connect(&relay, "/rooms/r", &tok, TokenIn::Header).await;
        ws.next_kind("welcome").await;
        sockets.push(ws);
        let (k, v) = bearer(&tok);
        let mut sse = Sse::open(&relay.http("/rooms/r"), &[(k, &v)]).await;
        sse.next_kind("welcome").await;
        streams.push(sse);
    }
    assert_eq!(
        http()
            .get(relay.http("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let started = tokio::time::Instant::now();
    relay.shutdown.cancel();
    // Ready no more, and new sessions are refused, while the old ones drain.
    let readyz = http().get(relay.http("/readyz")).send().await;
    if let Ok(r) = readyz {
        assert_eq!(r.status(), 503);
    }
    let mut suggestions = HashSet::new();
    for ws in &mut sockets {
        let (events, code) = ws.until_close().await;
        assert_eq!(code, Some(1001));
        let last = events.last().expect("an event before the close");
        assert_eq!(last["code"], "draining");
        suggestions.insert(last["message"].as_str().unwrap().to_owned());
    }
    for sse in &mut streams {
        let last = sse.next_kind("error").await;
        assert_eq!(last["code"], "draining");
        assert!(
            last["retry_after"]
                .as_u64()
                .is_some_and(|s| (1..=6).contains(&s))
        );
        // The stream's first block is `retry: 2000`; the drain sends its own
        // jittered one (which may, rarely, also be 2000) before the end.
        assert!(
            sse.raw.iter().filter(|b| b.starts_with("retry: ")).count() >= 2,
            "a jittered retry: before the end: {:?}",
            sse.raw
        );
        assert!(sse.next_event().await.is_none(), "the SSE stream ends");
        suggestions.insert(last["message"].as_str().unwrap().to_owned());
    }
    assert!(
        suggestions.len() > 10,
        "reconnect suggestions are spread, not one value: {suggestions:?}"
    );
    assert!(relay.stopped().await.is_ok());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "drained within the grace (2 s) plus margin: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_and_metrics() {
    let relay = Relay::start(&[]).await;
    assert_eq!(
        http()
            .get(relay.http("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let tok = token("alice", &["r=read,write"]);
    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(&relay.http("/rooms/r"), &[(k, &v)]).await;
    sse.next_kind("welcome").await;
    let mut ws = Ws::connect(&relay, "/rooms/r", &tok, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    assert_eq!(post_text(&relay, "/rooms/r", &tok, "m").await.0, 202);
    sse.next_kind("message").await;
    ws.next_kind("message").await;
    let text = http()
        .get(relay.http("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "edgewire_sessions{transport=\"websocket\"} 1",
        "edgewire_sessions{transport=\"sse\"} 1",
        "edgewire_rooms 1",
        "edgewire_messages_in_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let out: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("edgewire_messages_out_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(out >= 4, "welcomes, join and messages written: {out}");
}

#[tokio::test]
async fn listing_rooms_needs_a_token_unless_rooms_are_public() {
    let relay = Relay::start(&[]).await;
    let response = http().get(relay.http("/rooms")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "token_missing"
    );
    // With public rooms, an anonymous caller sees those and nothing else.
    let open = Relay::start(&[("EDGEWIRE_PUBLIC_ROOMS", "plaza-*")]).await;
    let mut sse = Sse::open(&open.http("/rooms/plaza-1"), &[]).await;
    assert_eq!(sse.next().await["kind"], "welcome");
    let (k, v) = bearer(&token("u", &["private-1=read"]));
    let mut private = Sse::open(&open.http("/rooms/private-1"), &[(k, &v)]).await;
    assert_eq!(private.next().await["kind"], "welcome");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let response = http().get(open.http("/rooms")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let list: Value = response.json().await.unwrap();
        let rooms = list["rooms"].as_array().unwrap();
        assert!(rooms.iter().all(|r| r["room"] != "private-1"), "{list}");
        if rooms.iter().any(|r| r["room"] == "plaza-1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_pub_without_data_is_a_bad_request_and_publishes_nothing() {
    let relay = Relay::start(&[]).await;
    let tok = token("u", &["nodata=read,write"]);
    let mut ws = Ws::connect(&relay, "/rooms/nodata", &tok, TokenIn::Header).await;
    assert_eq!(ws.next().await["kind"], "welcome");
    ws.send(json!({"op":"pub","type":"chat","ref":1})).await;
    let error = ws.next_kind("error").await;
    assert_eq!(error["code"], "bad_request");
    assert_eq!(error["ref"], 1);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("pub needs data"),
        "{error}"
    );
    // An explicit null is a message, and it is the first one in the room.
    ws.send(json!({"op":"pub","type":"chat","data":null,"ref":2}))
        .await;
    let ack = ws.next_kind("ack").await;
    assert_eq!(ack["ref"], 2);
    let message = ws.next_kind("message").await;
    assert_eq!(message["data"], Value::Null);
    let history: Value = crate::harness::get_json(&relay, "/rooms/nodata/history", &tok).await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
}

/// A resume the relay cannot vouch for (it never held the room, or forgot
/// it: a restart without Redis) gets `reset` first, on SSE and WebSocket.
#[tokio::test]
async fn a_resume_from_an_unknown_past_gets_reset_first() {
    let relay = Relay::start(&[]).await;
    let tok = token("late", &["fresh-*=read,write"]);
    let past = "1700000000000-3";
    let mut sse = Sse::open(
        &relay.http(&format!("/rooms/fresh-sse?token={tok}")),
        &[("last-event-id", past)],
    )
    .await;
    assert_eq!(sse.next().await["kind"], "reset");
    assert_eq!(sse.next().await["kind"], "welcome");
    let mut ws = Ws::connect(
        &relay,
        &format!("/rooms/fresh-ws?since={past}"),
        &tok,
        TokenIn::Header,
    )
    .await;
    assert_eq!(ws.next().await["kind"], "reset");
    assert_eq!(ws.next().await["kind"], "welcome");
    // /history agrees: the gap is reported there too.
    let history: Value = crate::harness::get_json(
        &relay,
        &format!("/rooms/fresh-sse/history?since={past}"),
        &tok,
    )
    .await;
    assert_eq!(history["complete"], false, "{history}");
    // A resume from an id the room did issue is complete: no reset.
    let (status, body) = post_text(&relay, "/rooms/fresh-sse", &tok, "one").await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_owned();
    let mut again = Sse::open(
        &relay.http(&format!("/rooms/fresh-sse?token={tok}")),
        &[("last-event-id", &id)],
    )
    .await;
    assert_eq!(again.next().await["kind"], "welcome");
}

/// `GET /rooms` pages with `limit` and `next_cursor` (absent on the last
/// page); a cursor Redis did not hand out is a 400, not a 500.
#[tokio::test]
async fn the_room_list_pages() {
    let relay = Relay::start(&[]).await;
    let tok = token("lister", &["*=read,write,retain"]);
    for i in 0..5 {
        let response = http()
            .put(relay.http(&format!("/rooms/list-{i}/topics/t")))
            .bearer_auth(&tok)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let mut path = "/rooms?limit=2".to_owned();
    let mut pages = Vec::new();
    loop {
        let page: Value = crate::harness::get_json(&relay, &path, &tok).await;
        let names: Vec<String> = page["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].as_str().unwrap().to_owned())
            .collect();
        pages.push(names);
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/rooms?limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        pages,
        vec![
            vec!["list-0", "list-1"],
            vec!["list-2", "list-3"],
            vec!["list-4"]
        ]
    );

    let redis = crate::redis_server::RedisServer::start().await;
    let shared =
        crate::instances::relay_on(&redis, &crate::redis_server::unique_prefix(), &[]).await;
    let response = http()
        .get(shared.http("/rooms?cursor=not-a-cursor"))
        .bearer_auth(&tok)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}
