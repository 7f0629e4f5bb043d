//! Rights follow the token: a refresh re-checks every room a session is in,
//! over a WebSocket (its own room, and rooms joined by op) and over SSE.

use serde_json::{Value, json};

use crate::harness::{Relay, Sse, TokenIn, Ws, http, post_text, token};

#[tokio::test]
async fn a_refresh_without_the_room_closes_a_single_room_websocket_with_4403() {
    let relay = Relay::start(&[]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/vault",
        &token("alice", &["vault=read,write"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    // Same user, a valid token, but no rooms at all.
    ws.send(json!({"op": "refresh", "token": token("alice", &[]), "ref": 1}))
        .await;
    let (events, code) = ws.until_close().await;
    let error = events
        .iter()
        .find(|e| e["kind"] == "error" && e["code"] == "forbidden")
        .unwrap_or_else(|| panic!("no forbidden error in {events:?}"));
    assert!(
        error["message"].as_str().unwrap().contains("room vault"),
        "{error}"
    );
    assert_eq!(code, Some(4403));
}

#[tokio::test]
async fn a_refresh_leaves_the_rooms_it_no_longer_grants_and_keeps_the_others() {
    let relay = Relay::start(&[]).await;
    let writer = token("writer", &["*=read,write"]);
    let mut ws = Ws::connect(
        &relay,
        "/rooms",
        &token("alice", &["keep=read", "drop=read"]),
        TokenIn::Header,
    )
    .await;
    ws.next_kind("welcome").await;
    for (i, room) in ["keep", "drop"].iter().enumerate() {
        ws.send(json!({"op": "join", "room": room, "ref": i})).await;
        ws.next_kind("ack").await;
    }
    // A watcher of `drop` sees alice there.
    let mut watcher = Sse::open(&relay.http(&format!("/rooms/drop?token={writer}")), &[]).await;
    let welcome = watcher.next_kind("welcome").await;
    assert!(
        welcome["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == "alice"),
        "{welcome}"
    );

    ws.send(json!({"op": "refresh", "token": token("alice", &["keep=read"]), "ref": 9}))
        .await;
    let error = ws.next_kind("error").await;
    assert_eq!(error["code"], "forbidden");
    assert!(
        error["message"].as_str().unwrap().contains("room drop"),
        "{error}"
    );
    assert_eq!(ws.next_kind("ack").await["ref"], 9);
    // Alice has left `drop`: its peers see her go.
    let leave = watcher.next_kind("leave").await;
    assert!(
        leave["peer"]["id"].as_str().unwrap().starts_with("alice."),
        "{leave}"
    );
    // Nothing more from `drop` reaches her; `keep` still does, and the socket lives.
    let (status, _) = post_text(&relay, "/rooms/drop", &writer, "secret").await;
    assert_eq!(status, 202);
    let (status, _) = post_text(&relay, "/rooms/keep", &writer, "still here").await;
    assert_eq!(status, 202);
    let message = ws.next_kind("message").await;
    assert_eq!(message["room"], "keep", "{message}");
    assert_eq!(message["data"], "still here");
    // Joining it again is refused by the new token.
    ws.send(json!({"op": "join", "room": "drop", "ref": 10}))
        .await;
    let refused = ws.next_kind("error").await;
    assert_eq!(
        (refused["code"].as_str(), refused["ref"].as_i64()),
        (Some("forbidden"), Some(10))
    );
}

#[tokio::test]
async fn an_sse_refresh_without_the_room_ends_the_stream_with_forbidden() {
    let relay = Relay::start(&[]).await;
    let mut sse = Sse::open(
        &relay.http(&format!(
            "/rooms/vault?token={}",
            token("carol", &["vault=read"])
        )),
        &[],
    )
    .await;
    let me = sse.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer = http()
        .post(relay.http(&format!("/rooms/vault/refresh?conn={me}")))
        .bearer_auth(token("carol", &["elsewhere=read"]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let error: Value = sse.next_kind("error").await;
    assert_eq!(error["code"], "forbidden");
    assert!(
        error["message"].as_str().unwrap().contains("room vault"),
        "{error}"
    );
    assert!(sse.next_event().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn a_topic_watch_ends_when_the_refreshed_token_drops_its_room() {
    let relay = Relay::start(&[]).await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/plant/topics/device/+",
        &token("dash", &["plant=read"]),
        TokenIn::Header,
    )
    .await;
    // A watch sends no welcome: a ping's pong says it is running.
    ws.send(json!({"op": "ping", "ref": 0})).await;
    ws.next_kind("pong").await;
    ws.send(json!({"op": "refresh", "token": token("dash", &["other=read"]), "ref": 1}))
        .await;
    let (events, code) = ws.until_close().await;
    assert!(
        events.iter().any(|e| e["code"] == "forbidden"),
        "{events:?}"
    );
    assert_eq!(code, Some(4403));
}
