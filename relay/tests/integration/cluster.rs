//! The Redis broker on a real Redis Cluster: the broker contract and the
//! cross-instance scenarios on three masters, and a master killed under a
//! live subscriber (its replica takes over; delivery goes on, nothing that
//! was answered 2xx is missed).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{DEADLINE, Sse, http, token};
use crate::instances::{
    broadcast_presence_and_direct, direct_ids_in_sequence, killed_instance_cleanup, relay_at,
    resume_across_instances,
};
use crate::redis_cluster::RedisCluster;
use crate::redis_server::unique_prefix;

#[tokio::test]
async fn the_redis_broker_works_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let url = cluster.url();
    crate::broker_contract::redis_contract(&url).await;
    broadcast_presence_and_direct(&url).await;
    resume_across_instances(&url).await;
    direct_ids_in_sequence(&url).await;
    killed_instance_cleanup(&url).await;
}

/// Rooms spread over the cluster's shards; a room listing pages through all.
#[tokio::test]
async fn rooms_spread_over_shards_and_list_in_pages() {
    let cluster = RedisCluster::start(3, 0).await;
    let prefix = unique_prefix();
    let relay = relay_at(&cluster.url(), &prefix, &[]).await;
    let tok = token("ops", &["*=read,write,retain"]);
    for i in 0..30 {
        let r = http()
            .put(relay.http(&format!("/rooms/site-{i}/topics/status")))
            .bearer_auth(&tok)
            .body("up")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "set on site-{i}");
    }
    let holders: std::collections::HashSet<u16> = (0..30)
        .filter_map(|i| {
            cluster
                .node_holding(&format!("{prefix}:*:{{site-{i}}}:retained"))
                .map(|(port, _)| port)
        })
        .collect();
    assert!(holders.len() > 1, "30 rooms all on one shard: {holders:?}");
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/rooms?limit=7&cursor={c}"),
            None => "/rooms?limit=7".to_owned(),
        };
        let page: Value = crate::harness::get_json(&relay, &path, &tok).await;
        for room in page["rooms"].as_array().unwrap() {
            listed.push(room["room"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    listed.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("site-{i}")).collect();
    expected.sort();
    assert_eq!(listed, expected, "every room once over the pages");
}

/// The master holding a room is killed; its replica takes over. A live
/// subscriber on another instance receives every publish answered 2xx,
/// before and after, in order, and the room goes on.
#[tokio::test]
async fn a_master_failover_keeps_delivering() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let prefix = unique_prefix();
    let url = cluster.url();
    let fast = [("EDGEWIRE_REDIS_TIMEOUT", "1s")];
    let (a, b) = (
        relay_at(&url, &prefix, &fast).await,
        relay_at(&url, &prefix, &fast).await,
    );
    let tok = token("ops", &["failover=read,write"]);
    let mut sse = Sse::open(
        &b.http("/rooms/failover"),
        &[("authorization", format!("Bearer {tok}").as_str())],
    )
    .await;
    assert_eq!(sse.next().await["kind"], "welcome");

    let publish = |n: usize| {
        let url = a.http("/rooms/failover");
        let tok = tok.clone();
        async move {
            http()
                .post(url)
                .bearer_auth(tok)
                .body(n.to_string())
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(publish(0).await, 202);
    assert_eq!(sse.next_kind("message").await["data"], "0");
    let (master, key) = cluster
        .node_holding(&format!("{prefix}:*:{{failover}}:stream"))
        .expect("the room's stream is on some master");
    cluster.kill(master);

    // Publish through the failover: each answer is 202 (stored) or an
    // error (not stored, or outcome unknown); keep on until 202s come back.
    let mut accepted = Vec::new();
    let mut n = 1;
    let deadline = tokio::time::Instant::now() + DEADLINE * 3;
    while accepted.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes never succeeded again after the failover"
        );
        if publish(n).await == 202 {
            accepted.push(n.to_string());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
    }
    cluster.wait_failover(&key, master).await;
    let mut delivered = Vec::new();
    while delivered.len() < accepted.len() {
        let event = sse.next().await;
        match event["kind"].as_str() {
            Some("message") => {
                let data = event["data"].as_str().unwrap().to_owned();
                if accepted.contains(&data) {
                    delivered.push(data);
                }
            }
            Some("reset") => {} // writes the dead master had not replicated
            _ => {}
        }
    }
    assert_eq!(delivered, accepted, "every 202 delivered once, in order");
}

/// A room's slot moves to another master (a reshard) under a live
/// subscriber: the server drops the subscription, the relay subscribes
/// again where the slot now is, and publishes go on reaching it.
#[tokio::test]
async fn a_slot_move_keeps_delivering() {
    let cluster = RedisCluster::start(3, 0).await;
    let prefix = unique_prefix();
    let url = cluster.url();
    let (a, b) = (
        relay_at(&url, &prefix, &[]).await,
        relay_at(&url, &prefix, &[]).await,
    );
    let tok = token("ops", &["moving=read,write"]);
    let mut sse = Sse::open(
        &b.http("/rooms/moving"),
        &[("authorization", format!("Bearer {tok}").as_str())],
    )
    .await;
    assert_eq!(sse.next().await["kind"], "welcome");
    let (status, _) = crate::harness::post_text(&a, "/rooms/moving", &tok, "before").await;
    assert_eq!(status, 202);
    assert_eq!(sse.next_kind("message").await["data"], "before");

    let (from, key) = cluster
        .node_holding(&format!("{prefix}:*:{{moving}}:stream"))
        .expect("the room's stream is on some master");
    let to = cluster
        .masters()
        .into_iter()
        .find(|p| *p != from)
        .expect("another master");
    cluster.migrate_slot(&key, to).await;

    for n in 0..5 {
        let (status, body) =
            crate::harness::post_text(&a, "/rooms/moving", &tok, &format!("after-{n}")).await;
        assert_eq!(status, 202, "{body}");
    }
    for n in 0..5 {
        assert_eq!(
            sse.next_kind("message").await["data"],
            format!("after-{n}"),
            "publishes after the slot moved still arrive, in order"
        );
    }
    // The room's history moved with it.
    let history: Value = crate::harness::get_json(&b, "/rooms/moving/history?limit=10", &tok).await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(6),
        "{history}"
    );
}
