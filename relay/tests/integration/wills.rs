//! Wills and presence across instances, deploys and Redis faults: a delayed
//! will waits in Redis (not in the instance that held its connection), its
//! delay counts from the disconnect, it fires once, and presence Redis lost
//! is put back by the instances whose sessions are still live.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DEADLINE, Relay, RelayProcess, TokenIn, Ws, get_json, post_text, token};
use crate::instances::relay_on;
use crate::redis_server::{RedisServer, unique_prefix};

const ALL: &[&str] = &["*=read,write,retain"];

/// A device in `room` on `base` with a will on `topic`; returns it and its peer id.
async fn device(base: &str, user: &str, room: &str, topic: &str, after: f64) -> (Ws, String) {
    let mut ws = Ws::connect_url(
        &format!("ws://{base}/rooms/{room}"),
        &token(user, ALL),
        TokenIn::Header,
    )
    .await;
    let id = ws.next_kind("welcome").await["peer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut op = json!({"op": "will", "topic": topic, "data": "offline", "ref": 1});
    if after > 0.0 {
        op["after"] = json!(after);
    }
    ws.send(op).await;
    ws.next_kind("ack").await;
    (ws, id)
}

/// Skips events until `leave` of `peer`; panics on a will `status` first.
async fn until_leave(watcher: &mut Ws, peer: &str) -> Value {
    loop {
        let ev = watcher.next().await;
        if ev["kind"] == "leave" && ev["peer"]["id"] == peer {
            return ev;
        }
    }
}

/// A delayed will is kept in Redis: the instance that held the connection
/// dies (SIGKILL) after the disconnect, and another fires the will when due.
#[tokio::test]
async fn a_delayed_will_outlives_the_instance_that_held_it() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let url = redis.url();
    let env = [
        ("EDGEWIRE_REDIS_URL", url.as_str()),
        ("EDGEWIRE_REDIS_PREFIX", prefix.as_str()),
        ("EDGEWIRE_INSTANCE_TTL", "1s"),
    ];
    let mut holder = RelayProcess::start(&env).await;
    let survivor = RelayProcess::start(&env).await;
    let mut watcher = Ws::connect_url(
        &format!("ws://{}/rooms/w", survivor.base),
        &token("watcher", ALL),
        TokenIn::Header,
    )
    .await;
    watcher.next_kind("welcome").await;
    let (dev, id) = device(&holder.base, "dev", "w", "status/dev", 1.0).await;
    drop(dev.stream.into_inner());
    // The leave comes after the will was handed to Redis.
    until_leave(&mut watcher, &id).await;
    holder.kill9();
    let fired = watcher.next_kind("status").await;
    assert_eq!(
        (fired["topic"].as_str(), fired["data"].as_str()),
        (Some("status/dev"), Some("offline")),
        "{fired}"
    );
}

/// A rolling deploy: the draining instance closes its sessions; a device
/// that comes back on the other instance keeps its will from firing; one
/// that does not come back has its will fired once, by the instance alive
/// when it is due (counted from its disconnect, not from SIGTERM).
#[tokio::test]
async fn delayed_wills_survive_a_drain_and_honour_returning_users() {
    let redis = RedisServer::start().await;
    let prefix = unique_prefix();
    let mut old = relay_on(&redis, &prefix, &[("EDGEWIRE_SHUTDOWN_GRACE", "2s")]).await;
    let new = relay_on(&redis, &prefix, &[]).await;
    let old_base = old.addr.to_string();
    let new_base = new.addr.to_string();
    let mut watcher = Ws::connect(&new, "/rooms/d", &token("watcher", ALL), TokenIn::Header).await;
    watcher.next_kind("welcome").await;
    let (mut gone, gone_id) = device(&old_base, "gone", "d", "status/gone", 1.0).await;
    let (mut back, back_id) = device(&old_base, "back", "d", "status/back", 0.5).await;
    old.shutdown.cancel();
    // The returning device reconnects to the new instance as soon as it is closed.
    let (_, code) = back.until_close().await;
    assert_eq!(code, Some(1001));
    let (_back_again, _) = device(&new_base, "back", "d", "status/back", 0.5).await;
    let (_, code) = gone.until_close().await;
    assert_eq!(code, Some(1001));
    old.stopped().await.unwrap();
    // Both leave (closed) before any will: the drain kept the heartbeat.
    let mut left = HashSet::new();
    let fired = loop {
        let ev = watcher.next().await;
        match ev["kind"].as_str() {
            Some("leave") => {
                assert_eq!(ev["reason"], "closed", "{ev}");
                left.insert(ev["peer"]["id"].as_str().unwrap().to_owned());
            }
            Some("status") => break ev,
            _ => {}
        }
    };
    assert!(
        left.contains(&gone_id) && left.contains(&back_id),
        "{left:?}"
    );
    // The returning user's will was due first: had it fired, it would be first.
    assert_eq!(
        (fired["topic"].as_str(), fired["data"].as_str()),
        (Some("status/gone"), Some("offline")),
        "{fired}"
    );
    let (status, _) = post_text(&new, "/rooms/d", &token("watcher", ALL), "marker").await;
    assert_eq!(status, 202);
    let next = watcher.next_kind("message").await;
    assert_eq!(next["data"], "marker");
    let (_, topics) = get_topic(&new, "/rooms/d/topics/status/back").await;
    assert_eq!(topics, 404, "the returning user's will never fired");
}

async fn get_topic(relay: &Relay, path: &str) -> (Value, u16) {
    let response = crate::harness::http()
        .get(relay.http(path))
        .bearer_auth(token("reader", ALL))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (response.json().await.unwrap_or(Value::Null), status)
}

/// Redis restarts without persistence: every live session is put back in
/// presence (with its will) by its own instance, so direct messages reach it
/// again and its will still fires at its end.
#[tokio::test]
async fn presence_and_wills_heal_after_redis_loses_them() {
    let mut redis = RedisServer::start().await;
    let relay = relay_on(&redis, &unique_prefix(), &[("EDGEWIRE_INSTANCE_TTL", "1s")]).await;
    let (mut dev, id) = device(&relay.addr.to_string(), "dev", "h", "status/dev", 0.0).await;
    let tok = token("other", ALL);
    redis.restart().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let snapshot = get_json(&relay, "/rooms/h", &tok).await;
        let present = snapshot["peers"]
            .as_array()
            .is_some_and(|peers| peers.iter().any(|p| p["id"] == id.as_str()));
        if present {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence never healed: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) =
        post_text(&relay, &format!("/rooms/h?to={id}"), &tok, "still there?").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(dev.next_kind("message").await["data"], "still there?");
    let mut watcher = Ws::connect(&relay, "/rooms/h", &tok, TokenIn::Header).await;
    watcher.next_kind("welcome").await;
    drop(dev.stream.into_inner());
    let fired = watcher.next_kind("status").await;
    assert_eq!(
        fired["topic"], "status/dev",
        "the will was put back too: {fired}"
    );
}

/// After an outage longer than the instance TTL (Redis stopped, its data
/// kept), live instances are not taken for dead: only the instance that
/// really died meanwhile has its peer removed and its will fired.
#[tokio::test]
async fn a_long_outage_removes_only_the_dead() {
    let mut redis = RedisServer::start_persistent().await;
    let prefix = unique_prefix();
    let url = redis.url();
    let env = [
        ("EDGEWIRE_REDIS_URL", url.as_str()),
        ("EDGEWIRE_REDIS_PREFIX", prefix.as_str()),
        ("EDGEWIRE_INSTANCE_TTL", "1s"),
        ("EDGEWIRE_REDIS_TIMEOUT", "500ms"),
    ];
    let a = RelayProcess::start(&env).await;
    let b = RelayProcess::start(&env).await;
    let mut c = RelayProcess::start(&env).await;
    let (_on_a, a_id) = device(&a.base, "on-a", "o", "status/a", 0.0).await;
    let (_on_c, c_id) = device(&c.base, "on-c", "o", "status/c", 0.0).await;
    redis.stop();
    c.kill9();
    // The fault is the outage's length: longer than the instance TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart().await;
    // Judged by what Redis holds (presence events sent while an instance's
    // pub/sub is still reconnecting are not replayed).
    let reader = token("reader", ALL);
    let get = |path: &'static str| {
        let reader = reader.clone();
        let base = b.base.clone();
        async move {
            let response = crate::harness::http()
                .get(format!("http://{base}{path}"))
                .bearer_auth(reader)
                .header("accept", "application/json")
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                _ => None,
            }
        }
    };
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let peers = loop {
        if let Some(room) = get("/rooms/o").await {
            let ids: Vec<String> = room["peers"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|p| p["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if !ids.contains(&c_id) {
                break ids;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead peer was never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        peers.contains(&a_id),
        "a live peer was taken for dead: {peers:?}"
    );
    assert!(
        get("/rooms/o/topics/status/c").await.is_some(),
        "the dead peer's will fired"
    );
    assert!(
        get("/rooms/o/topics/status/a").await.is_none(),
        "a live peer's will fired"
    );
}
