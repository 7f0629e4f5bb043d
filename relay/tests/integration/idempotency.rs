//! Idempotency keys end to end: a retried write is done once, over HTTP and
//! WebSocket, on both brokers, and after `503 outcome_unknown`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DEADLINE, Relay, Sse, TokenIn, Ws, http, token};
use crate::instances::{relay_on, wait_ready};
use crate::redis_server::{RedisServer, unique_prefix};

/// Sends `method` to `path` with a body and an optional `Idempotency-Key`.
async fn send(
    relay: &Relay,
    method: reqwest::Method,
    path: &str,
    tok: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut request = http()
        .request(method, relay.http(path))
        .bearer_auth(tok)
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(relay: &Relay, path: &str, tok: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    send(relay, reqwest::Method::POST, path, tok, key, body).await
}

/// The data of every `message` and `status` event up to the one carrying `marker`.
async fn received_until(watcher: &mut Sse, marker: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let ev = watcher.next().await;
        if ev["kind"] != "message" && ev["kind"] != "status" {
            continue;
        }
        if ev["data"] == marker {
            return got;
        }
        got.push(ev["data"].clone());
    }
}

async fn retries_over_http_are_done_once(relay: &Relay) {
    let tok = token("idem", &["i=read,write,retain"]);
    let mut watcher = Sse::open(&relay.http(&format!("/rooms/i?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;

    let (s1, a) = post(relay, "/rooms/i", &tok, Some("order-1"), "one").await;
    let (s2, b) = post(relay, "/rooms/i", &tok, Some("\"order-1\""), "one").await;
    assert_eq!((s1, s2), (202, 202), "{a} {b}");
    assert_eq!(a["id"], b["id"], "a retry answers with the first id");
    let (status, body) = post(relay, "/rooms/i", &tok, Some("order-1"), "two").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("key_reused")),
        "{body}"
    );
    let (status, body) = post(relay, "/rooms/i", &tok, Some("has space"), "x").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    // Another user's same key is another write.
    let other = token("idem-2", &["i=read,write"]);
    let (status, c) = post(relay, "/rooms/i", &other, Some("order-1"), "one").await;
    assert_eq!(status, 202);
    assert_ne!(c["id"], a["id"]);

    // Topic writes: PUT, DELETE and topic POST, each retried.
    let put = reqwest::Method::PUT;
    let (_, p1) = send(
        relay,
        put.clone(),
        "/rooms/i/topics/t",
        &tok,
        Some("p"),
        "on",
    )
    .await;
    let (_, p2) = send(relay, put, "/rooms/i/topics/t", &tok, Some("p"), "on").await;
    assert_eq!(p1["id"], p2["id"]);
    let del = reqwest::Method::DELETE;
    let (d1s, d1) = send(relay, del.clone(), "/rooms/i/topics/t", &tok, Some("d"), "").await;
    let (d2s, d2) = send(relay, del.clone(), "/rooms/i/topics/t", &tok, Some("d"), "").await;
    assert_eq!((d1s, d2s), (202, 202), "a retried clear is not a 404: {d2}");
    assert_eq!(d1["id"], d2["id"]);
    let (d3s, _) = send(relay, del, "/rooms/i/topics/t", &tok, None, "").await;
    assert_eq!(d3s, 404, "without a key, a clear of nothing is still a 404");
    let (_, t1) = post(relay, "/rooms/i/topics/u", &tok, Some("tp"), "ping").await;
    let (_, t2) = post(relay, "/rooms/i/topics/u", &tok, Some("tp"), "ping").await;
    assert_eq!(t1["id"], t2["id"]);

    post(relay, "/rooms/i", &tok, None, "marker").await;
    assert_eq!(
        received_until(&mut watcher, "marker").await,
        vec![
            json!("one"),
            json!("one"),
            json!("on"),
            Value::Null,
            json!("ping")
        ],
        "each write once, in order"
    );
}

#[tokio::test]
async fn http_retries_with_a_key_are_done_once_in_memory() {
    let relay = Relay::start(&[]).await;
    retries_over_http_are_done_once(&relay).await;
}

#[tokio::test]
async fn http_retries_with_a_key_are_done_once_with_redis() {
    let redis = RedisServer::start().await;
    let relay = relay_on(&redis, &unique_prefix(), &[]).await;
    retries_over_http_are_done_once(&relay).await;
}

/// A WebSocket `pub` with `idempotency_key` sent twice is acked twice with
/// one id and delivered once.
#[tokio::test]
async fn websocket_pub_with_a_key_is_done_once() {
    let relay = Relay::start(&[]).await;
    let tok = token("idem-ws", &["w=read,write"]);
    let mut watcher = Sse::open(&relay.http(&format!("/rooms/w?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;
    let mut ws = Ws::connect(&relay, "/rooms/w", &tok, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    let mut ids = Vec::new();
    for r in 1..=2 {
        ws.send(json!({"op": "pub", "ref": r, "data": "once", "idempotency_key": "k-1"}))
            .await;
        ids.push(ws.next_kind("ack").await["id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    ws.send(json!({"op": "pub", "ref": 3, "data": "x", "idempotency_key": ""}))
        .await;
    let error = ws.next_kind("error").await;
    assert_eq!(
        (error["code"].as_str(), error["ref"].as_i64()),
        (Some("bad_request"), Some(3))
    );
    ws.send(json!({"op": "pub", "ref": 4, "data": "marker"}))
        .await;
    assert_eq!(
        received_until(&mut watcher, "marker").await,
        vec![json!("once")]
    );
}

/// After `503 outcome_unknown` (Redis frozen past the timeout), a retry with
/// the same key is stored once, and a second retry gets the same id: the
/// watcher receives the message exactly once.
#[tokio::test]
async fn a_keyed_retry_after_outcome_unknown_is_delivered_once() {
    let redis = RedisServer::start().await;
    let relay = relay_on(
        &redis,
        &unique_prefix(),
        &[("EDGEWIRE_REDIS_TIMEOUT", "500ms")],
    )
    .await;
    let tok = token("idem-f", &["f=read,write"]);
    let mut watcher = Sse::open(&relay.http(&format!("/rooms/f?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;
    redis.freeze();
    let (status, body) = post(&relay, "/rooms/f", &tok, Some("pay-7"), "paid").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("outcome_unknown")),
        "{body}"
    );
    redis.thaw();
    wait_ready(&relay.http("/readyz")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let first = loop {
        let (status, body) = post(&relay, "/rooms/f", &tok, Some("pay-7"), "paid").await;
        if status == 202 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no 202: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, again) = post(&relay, "/rooms/f", &tok, Some("pay-7"), "paid").await;
    assert_eq!(first["id"], again["id"]);
    post(&relay, "/rooms/f", &tok, None, "marker").await;
    assert_eq!(
        received_until(&mut watcher, "marker").await,
        vec![json!("paid")]
    );
}
