//! Many relay instances sharing one real redis-server.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DEADLINE, Relay, RelayProcess, Sse, TokenIn, Ws, http, publish_all, token};
use crate::redis_server::{RedisServer, unique_prefix};

/// A relay on `redis` with the key prefix `prefix`, once it reports ready.
pub async fn relay_on(redis: &RedisServer, prefix: &str, extra: &[(&str, &str)]) -> Relay {
    relay_at(&redis.url(), prefix, extra).await
}

/// A relay on the Redis (server or cluster) at `url`, once it reports ready.
pub async fn relay_at(url: &str, prefix: &str, extra: &[(&str, &str)]) -> Relay {
    let mut settings = vec![
        ("EDGEWIRE_REDIS_URL", url),
        ("EDGEWIRE_REDIS_PREFIX", prefix),
    ];
    settings.extend_from_slice(extra);
    let relay = Relay::start(&settings).await;
    wait_ready(&relay.http("/readyz")).await;
    relay
}

pub async fn wait_ready(url: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(r) = http().get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} never ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn bearer(tok: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {tok}"))
}

#[tokio::test]
async fn broadcast_presence_and_direct_across_instances() {
    let redis = RedisServer::start().await;
    broadcast_presence_and_direct(&redis.url()).await;
}

/// Broadcasts, presence and direct messages between two relays on `url`.
pub async fn broadcast_presence_and_direct(url: &str) {
    let prefix = unique_prefix();
    let (a, b) = (
        relay_at(url, &prefix, &[]).await,
        relay_at(url, &prefix, &[]).await,
    );
    let alice_tok = token("alice", &["room=read,write"]);
    let bob_tok = token("bob", &["room=read,write"]);

    let mut alice = Ws::connect(&a, "/rooms/room", &alice_tok, TokenIn::Header).await;
    let alice_id = alice.next_kind("welcome").await["peer"]["id"].clone();
    let (k, v) = bearer(&bob_tok);
    let mut bob = Sse::open(&b.http("/rooms/room"), &[(k, &v)]).await;
    let welcome = bob.next().await;
    assert_eq!(
        welcome["peers"][0]["id"], alice_id,
        "presence from the other instance is in the welcome"
    );
    let bob_id = welcome["peer"]["id"].clone();
    let join = alice.next_kind("join").await;
    assert_eq!(join["peer"]["id"], bob_id, "a join on B reaches A");

    // Broadcast both ways.
    alice
        .send(json!({"op": "pub", "data": "from a", "ref": 1}))
        .await;
    assert_eq!(bob.next_kind("message").await["data"], "from a");
    let response = http()
        .post(b.http("/rooms/room"))
        .bearer_auth(&bob_tok)
        .body("from b")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut got = alice.next_kind("message").await;
    if got["data"] == "from a" {
        got = alice.next_kind("message").await;
    }
    assert_eq!(got["data"], "from b");

    // The snapshot from either instance lists both peers.
    for relay in [&a, &b] {
        let snap: Value = http()
            .get(relay.http("/rooms/room"))
            .bearer_auth(&alice_tok)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(snap["peers"].as_array().map(Vec::len), Some(2), "{snap}");
    }

    // A direct message to a peer on the other instance, and a POST with conn on
    // the instance that does not hold the SSE session.
    alice
        .send(json!({"op": "pub", "to": bob_id, "data": "psst", "ref": 2}))
        .await;
    let mut direct = bob.next_kind("message").await;
    if direct["data"] == "from b" {
        // Bob's own broadcast echo comes first.
        direct = bob.next_kind("message").await;
    }
    assert_eq!(
        (direct["data"].as_str(), direct["to"].clone()),
        (Some("psst"), bob_id.clone())
    );
    let response = http()
        .post(a.http(&format!("/rooms/room?conn={}", bob_id.as_str().unwrap())))
        .bearer_auth(&bob_tok)
        .body("as my sse peer")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let spoken = alice.next_kind("message").await;
    assert_eq!(
        (spoken["from"].clone(), spoken["data"].as_str()),
        (bob_id.clone(), Some("as my sse peer"))
    );

    // Leaving on B reaches A.
    drop(bob);
    let leave = alice.next_kind("leave").await;
    assert_eq!(
        (leave["peer"]["id"].clone(), leave["reason"].as_str()),
        (bob_id, Some("closed"))
    );
}

#[tokio::test]
async fn resume_on_the_other_instance() {
    let redis = RedisServer::start().await;
    resume_across_instances(&redis.url()).await;
}

/// A reader resumes on another relay on `url`, missing nothing.
pub async fn resume_across_instances(url: &str) {
    const N: usize = 200;
    let prefix = unique_prefix();
    let (a, b) = (
        relay_at(url, &prefix, &[]).await,
        relay_at(url, &prefix, &[]).await,
    );
    let reader = token("reader", &["feed=read"]);
    let writer = token("writer", &["feed=write"]);
    let mut ws = Ws::connect(&a, "/rooms/feed", &reader, TokenIn::Header).await;
    ws.next_kind("welcome").await;
    let publisher = {
        let url = a.http("/rooms/feed");
        tokio::spawn(async move {
            let client = http();
            for i in 0..N {
                let r = client
                    .post(&url)
                    .bearer_auth(&writer)
                    .body(i.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        })
    };
    let mut seen: Vec<usize> = Vec::new();
    let mut last = String::new();
    while seen.len() < 50 {
        let ev = ws.next_kind("message").await;
        seen.push(ev["data"].as_str().unwrap().parse().unwrap());
        last = ev["id"].as_str().unwrap().to_owned();
    }
    drop(ws.stream.into_inner());
    let mut ws = Ws::connect(
        &b,
        &format!("/rooms/feed?since={last}"),
        &reader,
        TokenIn::Header,
    )
    .await;
    assert_eq!(ws.next().await["kind"], "welcome");
    while seen.len() < N {
        let ev = ws.next().await;
        assert_ne!(ev["kind"], "reset");
        if ev["kind"] == "message" {
            seen.push(ev["data"].as_str().unwrap().parse().unwrap());
        }
    }
    publisher.await.unwrap();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<_>>(),
        "every message once, in order, across instances"
    );
}

#[tokio::test]
async fn retained_values_and_history_survive_a_relay_restart() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let tok = token("device", &["*=read,write,retain"]);
    let ids = {
        let mut first = relay_on(&redis, &prefix, &[]).await;
        let response = http()
            .put(first.http("/rooms/plant/topics/device/status/sn-1"))
            .bearer_auth(&tok)
            .body("online")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let ids = publish_all(
            &first,
            "/rooms/plant",
            &tok,
            (0..3).map(|i| format!("m{i}")),
        )
        .await;
        first.shutdown.cancel();
        assert!(first.stopped().await.is_ok());
        ids
    };
    let second = relay_on(&redis, &prefix, &[]).await;
    let value: Value = http()
        .get(second.http("/rooms/plant/topics/device/status/sn-1"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(value["data"], "online");
    let history: Value = http()
        .get(second.http(&format!("/rooms/plant/history?since={}", ids[0])))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["complete"], true);
    let data: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, ["m1", "m2"]);
    // A late subscriber on the new instance gets the retained value first.
    let (k, v) = bearer(&tok);
    let mut sse = Sse::open(&second.http("/rooms/plant"), &[(k, &v)]).await;
    assert_eq!(sse.next().await["kind"], "welcome");
    let status = sse.next().await;
    assert_eq!(
        (status["topic"].as_str(), status["retained"].as_bool()),
        (Some("device/status/sn-1"), Some(true))
    );
}

#[tokio::test]
async fn peers_of_a_killed_instance_leave_and_their_wills_fire() {
    let redis = RedisServer::start().await;
    killed_instance_cleanup(&redis.url()).await;
}

/// A relay on `url` is killed: its peers leave (`timeout`) and their wills
/// fire, on the survivor, within the instance TTL and a sweep.
pub async fn killed_instance_cleanup(url: &str) {
    let prefix = unique_prefix();
    let env = [
        ("EDGEWIRE_REDIS_URL", url),
        ("EDGEWIRE_REDIS_PREFIX", prefix.as_str()),
        ("EDGEWIRE_INSTANCE_TTL", "1s"),
    ];
    let mut doomed = RelayProcess::start(&env).await;
    let survivor = RelayProcess::start(&env).await;
    let tok = token("device", &["*=read,write,retain"]);

    let mut watcher = Ws::connect_url(
        &format!("ws://{}/rooms/site", survivor.base),
        &tok,
        TokenIn::Header,
    )
    .await;
    assert_eq!(watcher.next().await["kind"], "welcome");
    let mut device = Ws::connect_url(
        &format!("ws://{}/rooms/site", doomed.base),
        &tok,
        TokenIn::Header,
    )
    .await;
    assert_eq!(device.next().await["kind"], "welcome");
    device
        .send(json!({"op": "will", "topic": "device/status/d1", "data": "offline", "ref": 1}))
        .await;
    assert_eq!(device.next().await["kind"], "ack");
    let join = watcher.next().await;
    assert_eq!(join["kind"], "join");
    let device_id = join["peer"]["id"].clone();

    let killed_at = std::time::Instant::now();
    doomed.kill9();
    let will = watcher.next().await;
    assert_eq!(
        (
            will["kind"].as_str(),
            will["topic"].as_str(),
            will["data"].as_str()
        ),
        (Some("status"), Some("device/status/d1"), Some("offline")),
        "{will}"
    );
    let leave = watcher.next().await;
    assert_eq!(
        (
            leave["kind"].as_str(),
            leave["peer"]["id"].clone(),
            leave["reason"].as_str()
        ),
        (Some("leave"), device_id, Some("timeout"))
    );
    // Documented bound: the instance TTL plus one sweep (1 s + 1 s here); allow slack for a loaded machine.
    assert!(
        killed_at.elapsed() < Duration::from_secs(8),
        "ghost removed after {:?}",
        killed_at.elapsed()
    );
    drop(device);
}

#[tokio::test]
async fn a_redis_outage_is_survived() {
    let mut redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let fast = [("EDGEWIRE_REDIS_TIMEOUT", "1s")];
    let (a, b) = (
        relay_on(&redis, &prefix, &fast).await,
        relay_on(&redis, &prefix, &fast).await,
    );
    let tok = token("user", &["room=read,write"]);
    let mut on_a = Ws::connect(&a, "/rooms/room", &tok, TokenIn::Header).await;
    on_a.next_kind("welcome").await;
    let mut on_b = Ws::connect(&b, "/rooms/room", &tok, TokenIn::Header).await;
    on_b.next_kind("welcome").await;
    on_a.next_kind("join").await;

    redis.stop();
    // Publishing fails fast and clearly; readiness turns 503; sessions stay up.
    let response = http()
        .post(a.http("/rooms/room"))
        .bearer_auth(&tok)
        .body("lost?")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "backend_unavailable");
    on_a.send(json!({"op": "pub", "data": "x", "ref": 7})).await;
    let err = on_a.next_kind("error").await;
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_i64()),
        (Some("backend_unavailable"), Some(7))
    );
    on_b.send(json!({"op": "ping", "ref": 8})).await;
    assert_eq!(
        on_b.next_kind("pong").await["ref"],
        8,
        "open sockets still answer"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = http().get(a.http("/readyz")).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    redis.restart().await;
    // Recovery without a restart: ready again, and messages flow across instances.
    wait_ready(&a.http("/readyz")).await;
    wait_ready(&b.http("/readyz")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let response = http()
            .post(a.http("/rooms/room"))
            .bearer_auth(&tok)
            .body("back")
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = on_b.next_kind("message").await;
    assert_eq!(got["data"], "back", "the other instance resubscribed");
    on_b.send(json!({"op": "ping", "ref": 9})).await;
    assert_eq!(on_b.next_kind("pong").await["ref"], 9);
}

/// On a plain redis:// URL (RESP2) a healthy Redis keeps the same pub/sub
/// connection: the health probe reads a subscribed PING's array reply as alive.
#[tokio::test]
async fn a_healthy_redis_keeps_one_pubsub_connection() {
    let redis = RedisServer::start().await;
    // A short timeout probes every 400 ms: several probes in two seconds.
    let relay = relay_on(
        &redis,
        &unique_prefix(),
        &[("EDGEWIRE_REDIS_TIMEOUT", "200ms")],
    )
    .await;
    let tok = token("probe", &["p=read,write"]);
    let mut sse = Sse::open(&relay.http(&format!("/rooms/p?token={tok}")), &[]).await;
    sse.next_kind("welcome").await;
    let before = redis.pubsub_client_ids().await;
    assert_eq!(before.len(), 1, "one subscriber connection: {before:?}");
    // Five probe periods pass; the connection must survive them.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        redis.pubsub_client_ids().await,
        before,
        "replaced by the probe"
    );
    let (status, _) = crate::harness::post_text(&relay, "/rooms/p", &tok, "still here").await;
    assert_eq!(status, 202);
    assert_eq!(sse.next_kind("message").await["data"], "still here");
}

/// A draining instance keeps its heartbeat and its pub/sub connection until
/// its last session has closed: its sessions still get live events from other
/// instances, and their peers elsewhere see them leave `closed`, never
/// `timeout` (which is what a dead instance's sessions get).
#[tokio::test]
async fn a_draining_instance_stays_alive_for_its_sessions() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    // Instance death is noticed within a second here, so a heartbeat deleted
    // at SIGTERM would show as timeout leaves during the drain.
    let fast = [
        ("EDGEWIRE_INSTANCE_TTL", "1s"),
        ("EDGEWIRE_SHUTDOWN_GRACE", "20s"),
    ];
    let mut a = relay_on(&redis, &prefix, &fast).await;
    let b = relay_on(&redis, &prefix, &fast).await;
    let tok = token("drain", &["d=read,write"]);
    let mut watcher = Sse::open(&b.http(&format!("/rooms/d?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let mut sse = Sse::open(&a.http(&format!("/rooms/d?token={tok}")), &[]).await;
        let welcome = sse.next_kind("welcome").await;
        ids.push(welcome["peer"]["id"].as_str().unwrap().to_owned());
        watcher.next_kind("join").await;
        peers.push(sse);
    }
    a.shutdown.cancel();
    // Published on B during A's drain: every session of A still open gets it.
    let (status, _) = crate::harness::post_text(&b, "/rooms/d", &tok, "during the drain").await;
    assert_eq!(status, 202);
    let mut got_it = 0;
    for sse in &mut peers {
        // Presence events of the other sessions come first; then the message,
        // or the session's own draining error if it closed before it.
        let ev = loop {
            let ev = sse.next().await;
            if ev["kind"] == "message" || ev["kind"] == "error" {
                break ev;
            }
        };
        if ev["kind"] == "message" {
            assert_eq!(ev["data"], "during the drain");
            got_it += 1;
        } else {
            assert_eq!(ev["code"], "draining", "{ev}");
        }
    }
    assert!(got_it > 0, "no draining session got the live message");
    // They go; their peers on B see each leave as closed.
    drop(peers);
    let mut left = std::collections::HashMap::new();
    while left.len() < ids.len() {
        let ev = watcher.next_kind("leave").await;
        let id = ev["peer"]["id"].as_str().unwrap().to_owned();
        if ids.contains(&id) {
            left.insert(id, ev["reason"].as_str().unwrap_or("").to_owned());
        }
    }
    assert!(
        left.values().all(|r| r == "closed"),
        "leaves of a draining instance: {left:?}"
    );
    a.stopped().await.unwrap();
}

/// A publish Redis does not answer in time is `503 outcome_unknown`, and it
/// is never applied after that answer: when the frozen Redis resumes, its
/// script finds the write's deadline passed and refuses it, so no subscriber
/// ever receives the message and history does not hold it.
#[tokio::test]
async fn a_write_answered_503_is_never_delivered_later() {
    let redis = RedisServer::start().await;
    let relay = relay_on(
        &redis,
        &unique_prefix(),
        &[("EDGEWIRE_REDIS_TIMEOUT", "500ms")],
    )
    .await;
    let tok = token("frozen", &["f=read,write"]);
    let mut watcher = Sse::open(&relay.http(&format!("/rooms/f?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;
    redis.freeze();
    let (status, body) = crate::harness::post_text(&relay, "/rooms/f", &tok, "lost in time").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "outcome_unknown", "{body}");
    redis.thaw();
    wait_ready(&relay.http("/readyz")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _) = crate::harness::post_text(&relay, "/rooms/f", &tok, "marker").await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = watcher.next_kind("message").await;
    assert_eq!(
        message["data"], "marker",
        "the 503'd message was delivered: {message}"
    );
    let history: Value = crate::harness::get_json(&relay, "/rooms/f/history", &tok).await;
    let data: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert!(!data.contains(&&json!("lost in time")), "{history}");
}

/// Direct-message ids come from the room's sequence: across two instances,
/// broadcasts and direct messages interleaved get ids that are unique and grow
/// in the order they were sent, even many in one millisecond. (A recipient may
/// get a direct message ahead of a broadcast sent just before it: its own
/// queue is read first; the ids still tell the order.)
#[tokio::test]
async fn direct_message_ids_share_the_rooms_sequence() {
    let redis = RedisServer::start().await;
    direct_ids_in_sequence(&redis.url()).await;
}

/// Direct messages and broadcasts from two relays on `url` share one order.
pub async fn direct_ids_in_sequence(url: &str) {
    let prefix = unique_prefix();
    let a = relay_at(url, &prefix, &[]).await;
    let b = relay_at(url, &prefix, &[]).await;
    let tok = token("seq", &["q=read,write"]);
    let mut recipient = Ws::connect(&b, "/rooms/q", &tok, TokenIn::Header).await;
    let me = recipient.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // From both instances in turn, over HTTP.
    for i in 0..60 {
        let relay = if i % 2 == 0 { &a } else { &b };
        let path = if i % 3 == 0 {
            format!("/rooms/q?to={me}")
        } else {
            "/rooms/q".to_owned()
        };
        let (status, body) = crate::harness::post_text(relay, &path, &tok, &format!("{i}")).await;
        assert_eq!(status, 202, "{body}");
    }
    // Many in the same millisecond: a WebSocket publisher sends without
    // waiting, alternating direct messages and broadcasts.
    let mut sender = Ws::connect(&a, "/rooms/q", &tok, TokenIn::Header).await;
    sender.next_kind("welcome").await;
    for i in 60..260 {
        let mut op = json!({"op": "pub", "data": format!("{i}")});
        if i % 2 == 0 {
            op["to"] = json!(me);
        }
        sender.send(op).await;
    }
    let mut ids = std::collections::BTreeMap::new();
    while ids.len() < 260 {
        let message = recipient.next_kind("message").await;
        let n: usize = message["data"].as_str().unwrap().parse().unwrap();
        let (ms, seq) = message["id"].as_str().unwrap().split_once('-').unwrap();
        let id = (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap());
        assert!(ids.insert(n, id).is_none(), "message {n} twice");
    }
    let in_order: Vec<(u64, u64)> = ids.values().copied().collect();
    for pair in in_order.windows(2) {
        assert!(pair[1] > pair[0], "ids out of send order: {pair:?}");
    }
    // History, which keeps broadcasts only, still resumes cleanly.
    let history: Value = crate::harness::get_json(&a, "/rooms/q/history?limit=1000", &tok).await;
    assert_eq!(history["complete"], true);
    assert_eq!(history["events"].as_array().map(Vec::len), Some(140));
}

/// After Redis restarts with its data, every message stored from then on
/// reaches a live subscriber on another instance, even when they were all
/// published before that instance's pub/sub connection came back and its room
/// had delivered nothing before: the catch-up starts where its delivery of the
/// room began, and is retried until the stream can be read.
#[tokio::test]
async fn after_a_redis_restart_live_subscribers_miss_nothing_stored() {
    let mut redis = RedisServer::start_persistent().await;
    let prefix = unique_prefix();
    let fast = [("EDGEWIRE_REDIS_TIMEOUT", "500ms")];
    let a = relay_on(&redis, &prefix, &fast).await;
    let b = relay_on(&redis, &prefix, &fast).await;
    let tok = token("restart", &["r=read,write"]);
    let mut watcher = Sse::open(&b.http(&format!("/rooms/r?token={tok}")), &[]).await;
    watcher.next_kind("welcome").await;
    // Down long enough for B's pub/sub reconnect backoff to grow, so A takes
    // writes again before B is subscribed again.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.restart().await;
    let mut stored = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while stored.len() < 5 {
        let n = stored.len();
        let (status, body) =
            crate::harness::post_text(&a, "/rooms/r", &tok, &format!("m{n}")).await;
        if status == 202 {
            stored.push(body["id"].as_str().unwrap().to_owned());
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "A never took writes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (n, id) in stored.iter().enumerate() {
        let event = watcher.next_event().await.expect("the stream stays open");
        assert_eq!(event.data["data"], format!("m{n}"), "{:?}", event.data);
        assert_eq!(event.id.as_deref(), Some(id.as_str()));
    }
}
