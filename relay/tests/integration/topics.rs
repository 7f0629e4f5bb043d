//! Retained topics, wills, history and resume over real sockets.

use serde_json::{Value, json};

use crate::harness::{Relay, Sse, TokenIn, Ws, http, publish_all, token};

fn bearer(tok: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {tok}"))
}

async fn put(relay: &Relay, tok: &str, path: &str, body: &str) -> (u16, Value) {
    let response = http()
        .put(relay.http(path))
        .bearer_auth(tok)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get_json(relay: &Relay, tok: &str, path: &str) -> (u16, Value) {
    let response = http()
        .get(relay.http(path))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const ALL: &[&str] = &["*=read,write,retain"];

#[tokio::test]
async fn retained_roundtrip_over_put_get_delete() {
    let relay = Relay::start(&[]).await;
    let tok = token("device", ALL);
    let (status, body) = put(
        &relay,
        &tok,
        "/rooms/home/topics/device/status/sn-7",
        "online",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["id"].is_string());
    let (status, value) = get_json(&relay, &tok, "/rooms/home/topics/device/status/sn-7").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            value["topic"].as_str(),
            value["data"].as_str(),
            value["from"].as_str()
        ),
        (Some("device/status/sn-7"), Some("online"), Some("device"))
    );
    assert!(value["ts"].is_u64());

    // JSON bodies keep their shape; a plain curl on the topic prints the value.
    let response = http()
        .put(relay.http("/rooms/home/topics/device/config/sn-7"))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(r#"{"rate": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (_, config) = get_json(&relay, &tok, "/rooms/home/topics/device/config/sn-7").await;
    assert_eq!(config["data"], json!({"rate": 5}));

    let (_, snapshot) = {
        let response = http()
            .get(relay.http("/rooms/home"))
            .bearer_auth(&tok)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(
        snapshot["topics"]["device/status/sn-7"]["data"], "online",
        "{snapshot}"
    );
    let (_, list) = get_json(&relay, &tok, "/rooms").await;
    assert!(
        list["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == "home" && r["topics"] == 2),
        "{list}"
    );

    let response = http()
        .delete(relay.http("/rooms/home/topics/device/status/sn-7"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let (status, body) = get_json(&relay, &tok, "/rooms/home/topics/device/status/sn-7").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let response = http()
        .delete(relay.http("/rooms/home/topics/device/status/sn-7"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404, "nothing left to clear");

    // Retain through POST ?topic=&retain=1, the same as PUT.
    let response = http()
        .post(relay.http("/rooms/home?topic=device/status/sn-8&retain=1"))
        .bearer_auth(&tok)
        .body("booting")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        get_json(&relay, &tok, "/rooms/home/topics/device/status/sn-8")
            .await
            .1["data"],
        "booting"
    );
}

#[tokio::test]
async fn late_subscribers_get_retained_values_before_live_events() {
    let relay = Relay::start(&[]).await;
    let tok = token("device", ALL);
    put(&relay, &tok, "/rooms/late/topics/a", "1").await;
    put(&relay, &tok, "/rooms/late/topics/b", "2").await;

    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(&relay.http("/rooms/late"), &[(k, &v)]).await;
    let mut ws = Ws::connect(&relay, "/rooms/late", &tok, TokenIn::Header).await;
    let sse_first: Vec<Value> = [sse.next().await, sse.next().await, sse.next().await].into();
    let ws_first: Vec<Value> = [ws.next().await, ws.next().await, ws.next().await].into();
    for first in [&sse_first, &ws_first] {
        assert_eq!(first[0]["kind"], "welcome");
        for (event, (topic, data)) in first[1..].iter().zip([("a", "1"), ("b", "2")]) {
            assert_eq!(
                (
                    event["kind"].as_str(),
                    event["topic"].as_str(),
                    event["data"].as_str()
                ),
                (Some("status"), Some(topic), Some(data))
            );
            assert_eq!(event["retained"], true);
            assert!(
                event.get("id").is_none(),
                "replayed values have no id: {event}"
            );
        }
    }
    put(&relay, &tok, "/rooms/late/topics/a", "3").await;
    for live in [sse.next_kind("status").await, ws.next_kind("status").await] {
        assert_eq!(
            (
                live["topic"].as_str(),
                live["data"].as_str(),
                live["retained"].as_bool()
            ),
            (Some("a"), Some("3"), Some(false))
        );
        assert!(live["id"].is_string(), "live updates have an id");
    }
}

#[tokio::test]
async fn wildcard_filters_over_get_sse_and_websocket() {
    let relay = Relay::start(&[]).await;
    let tok = token("ops", ALL);
    for (topic, v) in [
        ("device/status/sn-1", "on"),
        ("device/status/sn-2", "off"),
        ("device/config/sn-1", "{}"),
        ("other/x", "?"),
    ] {
        assert_eq!(
            put(&relay, &tok, &format!("/rooms/fleet/topics/{topic}"), v)
                .await
                .0,
            202
        );
    }
    let (_, plus) = get_json(&relay, &tok, "/rooms/fleet/topics/device/status/+").await;
    let topics: Vec<&str> = plus
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["device/status/sn-1", "device/status/sn-2"]);
    let (_, star) = get_json(&relay, &tok, "/rooms/fleet/topics/device/*").await;
    assert_eq!(star.as_array().unwrap().len(), 3);
    let (_, none) = get_json(&relay, &tok, "/rooms/fleet/topics/nothing/+").await;
    assert_eq!(none, json!([]));

    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(
        &relay.http("/rooms/fleet/topics/device/status/+"),
        &[(k, &v), ("accept", "text/event-stream")],
    )
    .await;
    let mut ws = Ws::connect(
        &relay,
        "/rooms/fleet/topics/device/status/+",
        &tok,
        TokenIn::Header,
    )
    .await;
    for _ in 0..2 {
        let (a, b) = (sse.next().await, ws.next().await);
        assert_eq!(
            (a["retained"].as_bool(), b["retained"].as_bool()),
            (Some(true), Some(true))
        );
    }
    // Not matching: config, other rooms' topics, plain messages, presence.
    put(
        &relay,
        &tok,
        "/rooms/fleet/topics/device/config/sn-1",
        "changed",
    )
    .await;
    http()
        .post(relay.http("/rooms/fleet"))
        .bearer_auth(&tok)
        .body("chatter")
        .send()
        .await
        .unwrap();
    let _peer = Ws::connect(
        &relay,
        "/rooms/fleet",
        &token("someone", &["fleet=read"]),
        TokenIn::Header,
    )
    .await;
    put(
        &relay,
        &tok,
        "/rooms/fleet/topics/device/status/sn-3",
        "new",
    )
    .await;
    for event in [sse.next().await, ws.next().await] {
        assert_eq!(
            (
                event["kind"].as_str(),
                event["topic"].as_str(),
                event["data"].as_str()
            ),
            (Some("status"), Some("device/status/sn-3"), Some("new")),
            "only matching updates arrive"
        );
    }
    // A message published to a matching topic reaches the watchers too.
    http()
        .post(relay.http("/rooms/fleet/topics/device/status/sn-1"))
        .bearer_auth(&tok)
        .body("ping")
        .send()
        .await
        .unwrap();
    for event in [sse.next().await, ws.next().await] {
        assert_eq!(
            (
                event["kind"].as_str(),
                event["topic"].as_str(),
                event["data"].as_str()
            ),
            (Some("message"), Some("device/status/sn-1"), Some("ping"))
        );
    }
    assert_eq!(
        get_json(&relay, &tok, "/rooms/fleet/topics/device/status/sn-1")
            .await
            .1["data"],
        "on",
        "POST does not retain"
    );
}

#[tokio::test]
async fn bad_topics_and_filters_are_400_with_a_reason() {
    let relay = Relay::start(&[]).await;
    let tok = token("ops", ALL);
    for path in [
        "/rooms/r/topics/a/+/b",
        "/rooms/r/topics/a/*",
        "/rooms/r/topics/a//b",
        "/rooms/r/topics/a+b",
    ] {
        let (status, body) = put(&relay, &tok, path, "x").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{path}: {body}"
        );
        assert!(body["message"].as_str().unwrap().len() > 10);
    }
    for path in [
        "/rooms/r/topics/a/*/b",
        "/rooms/r/topics/a+",
        &format!("/rooms/r/topics/{}", ["x"; 17].join("/")),
    ] {
        let (status, body) = get_json(&relay, &tok, path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, body) = put(&relay, &tok, "/rooms/r/topics/t?ttl=0", "x").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_retain_right_is_required() {
    let relay = Relay::start(&[]).await;
    let writer = token("writer", &["r=read,write"]);
    let (status, body) = put(&relay, &writer, "/rooms/r/topics/t", "x").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let response = http()
        .post(relay.http("/rooms/r?topic=t&retain=true"))
        .bearer_auth(&writer)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http()
        .delete(relay.http("/rooms/r/topics/t"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let mut ws = Ws::connect(&relay, "/rooms/r", &writer, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "pub", "topic": "t", "retain": true, "data": 1, "ref": 1}))
        .await;
    let ev = ws.next_kind("error").await;
    assert_eq!(
        (ev["code"].as_str(), ev["ref"].as_i64()),
        (Some("forbidden"), Some(1))
    );
    ws.send(json!({"op": "will", "topic": "t", "data": "gone", "ref": 2}))
        .await;
    let ev = ws.next_kind("error").await;
    assert_eq!(
        (ev["code"].as_str(), ev["ref"].as_i64()),
        (Some("forbidden"), Some(2))
    );
    // With the right, the pub op retains.
    let mut ws = Ws::connect(&relay, "/rooms/r", &token("keeper", ALL), TokenIn::Header).await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "pub", "topic": "t", "retain": true, "data": {"v": 1}, "ref": 3}))
        .await;
    let ack = ws.next_kind("ack").await;
    assert!(ack["id"].is_string());
    assert_eq!(
        get_json(&relay, &writer, "/rooms/r/topics/t").await.1["data"],
        json!({"v": 1})
    );
}

#[tokio::test]
async fn a_will_fires_on_an_abrupt_drop_and_not_after_a_clean_leave() {
    let relay = Relay::start(&[]).await;
    let tok = token("dev", ALL);
    let mut watcher = Ws::connect(
        &relay,
        "/rooms/wills",
        &token("watcher", &["wills=read"]),
        TokenIn::Header,
    )
    .await;
    watcher.next_kind("welcome").await;

    // Clean: set a will, leave, close. The watcher sees the leave and no status.
    let mut clean = Ws::connect(&relay, "/rooms/wills", &tok, TokenIn::Header).await;
    clean.next_kind("welcome").await;
    clean
        .send(json!({"op": "will", "topic": "device/status/clean", "data": "offline", "ref": 1}))
        .await;
    assert_eq!(clean.next_kind("ack").await["ref"], 1);
    clean.send(json!({"op": "leave", "ref": 2})).await;
    clean.next_kind("ack").await;
    drop(clean);
    let joined = watcher.next().await;
    assert_eq!(joined["kind"], "join");
    let left = watcher.next().await;
    assert_eq!(left["kind"], "leave", "no will before the leave: {left}");

    // Abrupt: the TCP connection is dropped with no close frame and no leave.
    let mut abrupt = Ws::connect(&relay, "/rooms/wills", &tok, TokenIn::Header).await;
    let me = abrupt.next_kind("welcome").await["peer"]["id"].clone();
    abrupt
        .send(json!({"op": "will", "topic": "device/status/abrupt", "data": "offline", "ref": 1}))
        .await;
    abrupt.next_kind("ack").await;
    assert_eq!(watcher.next().await["kind"], "join");
    let raw = abrupt.stream.into_inner();
    drop(raw);
    let will = watcher.next().await;
    assert_eq!(
        (
            will["kind"].as_str(),
            will["topic"].as_str(),
            will["data"].as_str()
        ),
        (
            Some("status"),
            Some("device/status/abrupt"),
            Some("offline")
        )
    );
    assert_eq!(will["from"], me);
    let left = watcher.next().await;
    assert_eq!(
        (left["kind"].as_str(), left["peer"]["id"].clone()),
        (Some("leave"), me)
    );
    assert_eq!(
        get_json(&relay, &tok, "/rooms/wills/topics/device/status/abrupt")
            .await
            .1["data"],
        "offline"
    );
    assert_eq!(
        get_json(&relay, &tok, "/rooms/wills/topics/device/status/clean")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_delayed_will_waits_for_the_user_to_come_back() {
    let relay = Relay::start(&[]).await;
    let (reloader, leaver) = (token("reloader", ALL), token("leaver", ALL));
    // The reloading page drops and comes straight back: its will must not fire.
    let mut page = Ws::connect(&relay, "/rooms/delay", &reloader, TokenIn::Header).await;
    page.next_kind("welcome").await;
    page.send(json!({"op": "will", "topic": "status/reloader", "data": "offline", "after": 0.3, "ref": 1})).await;
    page.next_kind("ack").await;
    drop(page.stream.into_inner());
    let mut again = Ws::connect(&relay, "/rooms/delay", &reloader, TokenIn::Header).await;
    again.next_kind("welcome").await;
    // The leaving page's will, with a longer delay, fires: by then the first has been decided.
    let mut gone = Ws::connect(&relay, "/rooms/delay", &leaver, TokenIn::Header).await;
    gone.next_kind("welcome").await;
    gone.send(
        json!({"op": "will", "topic": "status/leaver", "data": "offline", "after": 0.6, "ref": 1}),
    )
    .await;
    gone.next_kind("ack").await;
    drop(gone.stream.into_inner());
    let fired = again.next_kind("status").await;
    assert_eq!(
        fired["topic"], "status/leaver",
        "the first status after the drops is the leaver's will"
    );
    assert_eq!(
        get_json(&relay, &reloader, "/rooms/delay/topics/status/reloader")
            .await
            .0,
        404,
        "the reloader's will did not fire"
    );
}

#[tokio::test]
async fn sse_sessions_carry_a_will_in_the_query() {
    let relay = Relay::start(&[]).await;
    let tok = token("kiosk", ALL);
    let mut watcher = Sse::open(
        &relay.http("/rooms/kiosks/topics/kiosk/+"),
        &[
            ("authorization", &format!("Bearer {tok}")),
            ("accept", "text/event-stream"),
        ],
    )
    .await;
    let sse = Sse::open(
        &relay.http(&format!(
            "/rooms/kiosks?token={tok}&will_topic=kiosk/k1&will_data=%7B%22online%22%3Afalse%7D"
        )),
        &[],
    )
    .await;
    drop(sse);
    let will = watcher.next().await;
    assert_eq!(
        (will["topic"].as_str(), will["data"].clone()),
        (Some("kiosk/k1"), json!({"online": false}))
    );
}

#[tokio::test]
async fn retained_values_lapse_after_their_ttl() {
    let relay = Relay::start(&[]).await;
    let tok = token("device", ALL);
    let (k, v) = bearer(&tok);
    let mut watch = Sse::open(
        &relay.http("/rooms/ttl/topics/heartbeat/+"),
        &[(k, &v), ("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(
        put(
            &relay,
            &tok,
            "/rooms/ttl/topics/heartbeat/d1?ttl=1",
            "alive"
        )
        .await
        .0,
        202
    );
    assert_eq!(watch.next().await["data"], "alive");
    // Within the deadline the relay's sweep clears it and says so.
    let lapsed = watch.next().await;
    assert_eq!(
        (
            lapsed["topic"].as_str(),
            lapsed["data"].clone(),
            lapsed["retained"].as_bool()
        ),
        (Some("heartbeat/d1"), Value::Null, Some(false))
    );
    assert_eq!(
        get_json(&relay, &tok, "/rooms/ttl/topics/heartbeat/d1")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn topic_limits_are_clear_errors() {
    let relay = Relay::start(&[
        ("EDGEWIRE_MAX_TOPICS", "2"),
        ("EDGEWIRE_MAX_MESSAGE_BYTES", "512"),
    ])
    .await;
    let tok = token("device", ALL);
    assert_eq!(put(&relay, &tok, "/rooms/full/topics/a", "1").await.0, 202);
    assert_eq!(put(&relay, &tok, "/rooms/full/topics/b", "1").await.0, 202);
    let (status, body) = put(&relay, &tok, "/rooms/full/topics/c", "1").await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("2 retained topics"),
        "{body}"
    );
    assert_eq!(
        put(&relay, &tok, "/rooms/full/topics/a", "2").await.0,
        202,
        "overwriting is fine at the limit"
    );
    let (status, _) = put(&relay, &tok, "/rooms/full/topics/a", &"x".repeat(600)).await;
    assert_eq!(status, 413, "values obey the message size limit");
}

/// Publishes `n` numbered messages one after another, as fast as the relay takes them.
fn publisher(relay: &Relay, room: &str, n: usize) -> tokio::task::JoinHandle<()> {
    let url = relay.http(&format!("/rooms/{room}"));
    let tok = token("pub", &["*=write"]);
    tokio::spawn(async move {
        let client = http();
        for i in 0..n {
            let response = client
                .post(&url)
                .bearer_auth(&tok)
                .body(i.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        }
    })
}

/// Collects message numbers until `until` have been seen in all.
fn record(seen: &mut Vec<usize>, event: &Value) -> Option<String> {
    if event["kind"] == "message" {
        seen.push(event["data"].as_str().unwrap().parse().unwrap());
        return event["id"].as_str().map(str::to_owned);
    }
    None
}

#[derive(Clone, Copy, Debug)]
enum Resume {
    SseHeader,
    SseQuery,
    WebSocket,
}

async fn resume_while_publishing(how: Resume) {
    const N: usize = 300;
    let relay = Relay::start(&[]).await;
    let room = "resume";
    let tok = token("reader", &["resume=read"]);
    let (k, v) = bearer(&tok);
    let mut seen = Vec::new();
    let mut last_id = None;

    // First connection: read some of the stream, then vanish mid-flow.
    match how {
        Resume::WebSocket => {
            let mut ws =
                Ws::connect(&relay, &format!("/rooms/{room}"), &tok, TokenIn::Header).await;
            ws.next_kind("welcome").await;
            let feeder = publisher(&relay, room, N);
            while seen.len() < 40 {
                if let Some(id) = record(&mut seen, &ws.next().await) {
                    last_id = Some(id);
                }
            }
            drop(ws.stream.into_inner());
            resume_rest(&relay, room, &tok, how, last_id.unwrap(), &mut seen, N).await;
            feeder.await.unwrap();
        }
        Resume::SseHeader | Resume::SseQuery => {
            let mut sse = Sse::open(&relay.http(&format!("/rooms/{room}")), &[(k, &v)]).await;
            sse.next_kind("welcome").await;
            let feeder = publisher(&relay, room, N);
            while seen.len() < 40 {
                let ev = sse.next_event().await.unwrap();
                if let Some(id) = record(&mut seen, &ev.data) {
                    assert_eq!(ev.id.as_deref(), Some(id.as_str()));
                    last_id = Some(id);
                }
            }
            drop(sse);
            resume_rest(&relay, room, &tok, how, last_id.unwrap(), &mut seen, N).await;
            feeder.await.unwrap();
        }
    }
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "{how:?}: every message once, in order"
    );
}

async fn resume_rest(
    relay: &Relay,
    room: &str,
    tok: &str,
    how: Resume,
    last_id: String,
    seen: &mut Vec<usize>,
    n: usize,
) {
    let auth = format!("Bearer {tok}");
    match how {
        Resume::WebSocket => {
            let mut ws = Ws::connect(
                relay,
                &format!("/rooms/{room}?since={last_id}"),
                tok,
                TokenIn::Header,
            )
            .await;
            assert_eq!(ws.next().await["kind"], "welcome");
            while seen.len() < n {
                let ev = ws.next().await;
                assert_ne!(ev["kind"], "reset");
                record(seen, &ev);
            }
        }
        Resume::SseHeader | Resume::SseQuery => {
            let mut sse = match how {
                Resume::SseHeader => {
                    Sse::open(
                        &relay.http(&format!("/rooms/{room}")),
                        &[("authorization", &auth), ("last-event-id", &last_id)],
                    )
                    .await
                }
                _ => {
                    Sse::open(
                        &relay.http(&format!(
                            "/rooms/{room}?last_event_id={last_id}&token={tok}"
                        )),
                        &[],
                    )
                    .await
                }
            };
            assert_eq!(sse.next().await["kind"], "welcome");
            while seen.len() < n {
                let ev = sse.next().await;
                assert_ne!(ev["kind"], "reset");
                record(seen, &ev);
            }
        }
    }
}

#[tokio::test]
async fn resume_over_sse_last_event_id_header() {
    resume_while_publishing(Resume::SseHeader).await;
}

#[tokio::test]
async fn resume_over_sse_last_event_id_query() {
    resume_while_publishing(Resume::SseQuery).await;
}

#[tokio::test]
async fn resume_over_websocket_since() {
    resume_while_publishing(Resume::WebSocket).await;
}

#[tokio::test]
async fn resume_with_the_join_op() {
    let relay = Relay::start(&[]).await;
    let tok = token("multi", &["j-*=read,write"]);
    let ids = publish_all(&relay, "/rooms/j-1", &tok, (0..5).map(|i| format!("m{i}"))).await;
    let mut ws = Ws::connect(&relay, "/rooms", &tok, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    ws.send(json!({"op": "join", "room": "j-1", "since": ids[1], "ref": 1}))
        .await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = ws.next().await;
        if ev["kind"] == "message" {
            got.push(ev["data"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(got, ["m2", "m3", "m4"]);
}

#[tokio::test]
async fn reset_when_the_gap_is_beyond_history() {
    let relay = Relay::start(&[("EDGEWIRE_HISTORY_SIZE", "5")]).await;
    let tok = token("reader", &["*=read,write,retain"]);
    put(&relay, &tok, "/rooms/gap/topics/state", "current").await;
    let ids = publish_all(&relay, "/rooms/gap", &tok, (0..20).map(|i| format!("m{i}"))).await;
    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(
        &relay.http("/rooms/gap"),
        &[(k, &v), ("last-event-id", &ids[2])],
    )
    .await;
    let reset = sse.next().await;
    assert_eq!(
        (reset["kind"].as_str(), reset["room"].as_str()),
        (Some("reset"), Some("gap"))
    );
    let welcome = sse.next().await;
    assert_eq!(welcome["kind"], "welcome");
    assert_eq!(
        welcome["last_id"],
        ids[19].as_str(),
        "the fresh snapshot follows"
    );
    let status = sse.next().await;
    assert_eq!(
        (status["topic"].as_str(), status["retained"].as_bool()),
        (Some("state"), Some(true))
    );
    // Then live, with nothing stale replayed.
    http()
        .post(relay.http("/rooms/gap"))
        .bearer_auth(&tok)
        .body("live")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.next().await["data"], "live");

    let mut ws = Ws::connect(
        &relay,
        &format!("/rooms/gap?since={}", ids[0]),
        &tok,
        TokenIn::Header,
    )
    .await;
    assert_eq!(ws.next().await["kind"], "reset");
    assert_eq!(ws.next().await["kind"], "welcome");
    // Resuming inside history replays with no reset.
    let mut ok = Ws::connect(
        &relay,
        &format!("/rooms/gap?since={}", ids[16]),
        &tok,
        TokenIn::Header,
    )
    .await;
    assert_eq!(ok.next().await["kind"], "welcome");
    assert_eq!(ok.next().await["kind"], "status");
    let replayed: Vec<Value> = [ok.next().await, ok.next().await, ok.next().await].into();
    assert_eq!(
        replayed
            .iter()
            .map(|e| e["data"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["m17", "m18", "m19"]
    );
}

#[tokio::test]
async fn history_endpoint() {
    let relay = Relay::start(&[("EDGEWIRE_HISTORY_SIZE", "10")]).await;
    let tok = token("reader", &["*=read,write,retain"]);
    let ids = publish_all(&relay, "/rooms/h", &tok, (0..12).map(|i| format!("m{i}"))).await;
    put(&relay, &tok, "/rooms/h/topics/t", "v").await;
    let (status, page) = get_json(
        &relay,
        &tok,
        &format!("/rooms/h/history?since={}&limit=3", ids[5]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["complete"], true);
    let data: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["m6", "m7", "m8"], "oldest first, limited");
    let (_, all) = get_json(&relay, &tok, "/rooms/h/history").await;
    let events = all["events"].as_array().unwrap();
    assert_eq!(events.len(), 10, "bounded by the history size");
    assert_eq!(
        events.last().unwrap()["kind"],
        "status",
        "topic updates are in history"
    );
    let (_, gap) = get_json(&relay, &tok, &format!("/rooms/h/history?since={}", ids[0])).await;
    assert_eq!(gap["complete"], false);
    let (status, _) = get_json(&relay, &tok, "/rooms/h/history?since=bogus").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&relay, &token("x", &["other=read"]), "/rooms/h/history").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn resume_points_must_parse() {
    let relay = Relay::start(&[]).await;
    let tok = token("reader", &["r=read"]);
    let (status, body) = Sse::try_open(
        &relay.http("/rooms/r"),
        &[
            ("authorization", &format!("Bearer {tok}")),
            ("last-event-id", "not-an-id"),
        ],
    )
    .await
    .err()
    .unwrap();
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
}

#[tokio::test]
async fn an_sse_peer_sets_its_state_and_will_over_http() {
    let relay = Relay::start(&[]).await;
    let tok = token("kiosk", ALL);
    let mut watcher = Ws::connect(
        &relay,
        "/rooms/sse-peer",
        &token("watcher", &["sse-peer=read"]),
        TokenIn::Header,
    )
    .await;
    watcher.next_kind("welcome").await;
    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(&relay.http("/rooms/sse-peer"), &[(k, &v)]).await;
    let me = sse.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(watcher.next_kind("join").await["peer"]["id"], me.as_str());

    let put = |path: String, body: &'static str| {
        http()
            .put(relay.http(&path))
            .bearer_auth(&tok)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        put(
            format!("/rooms/sse-peer/state?conn={me}"),
            r#"{"typing":true}"#
        )
        .await
        .unwrap()
        .status(),
        202
    );
    let state = watcher.next_kind("state").await;
    assert_eq!(
        (state["peer"]["id"].as_str(), state["state"].clone()),
        (Some(me.as_str()), json!({"typing": true}))
    );
    // Another user cannot act for this peer.
    let other = http()
        .put(relay.http(&format!("/rooms/sse-peer/state?conn={me}")))
        .bearer_auth(token("mallory", ALL))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    // A will set over HTTP fires when the stream drops; a cancelled one does not.
    assert_eq!(
        put(
            format!("/rooms/sse-peer/will?conn={me}&topic=kiosk/k1"),
            r#""offline""#
        )
        .await
        .unwrap()
        .status(),
        202
    );
    drop(sse);
    let will = watcher.next().await;
    assert_eq!(
        (
            will["kind"].as_str(),
            will["topic"].as_str(),
            will["data"].as_str()
        ),
        (Some("status"), Some("kiosk/k1"), Some("offline"))
    );
    assert_eq!(watcher.next().await["kind"], "leave");

    let mut sse = Sse::open(&relay.http("/rooms/sse-peer"), &[(k, &v)]).await;
    let me = sse.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(watcher.next_kind("join").await["peer"]["id"], me.as_str());
    assert_eq!(
        put(
            format!("/rooms/sse-peer/will?conn={me}&topic=kiosk/k2"),
            r#""offline""#
        )
        .await
        .unwrap()
        .status(),
        202
    );
    let cancel = http()
        .delete(relay.http(&format!("/rooms/sse-peer/will?conn={me}")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    drop(sse);
    assert_eq!(
        watcher.next().await["kind"],
        "leave",
        "no will before the leave"
    );
}
