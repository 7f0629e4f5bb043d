//! The broker contract: what every broker (memory now, Redis in #4) must do,
//! checked through the `Broker` API and what its fan-out delivers. A new broker
//! runs `contract(make)` with a constructor of its own.

use std::sync::Arc;
use std::time::Duration;

use edgewire::broker::{Broker, BrokerError, Draft, Limits, MemoryBroker, RetainDraft};
use edgewire::hub::{Fanout, RingReceiver};
use edgewire::idempotency::{IdempotencyKey, Once};
use edgewire::protocol::{
    Control, Envelope, Event, EventId, LeaveReason, PeerInfo, PeerList, Publish, RoomName, now_ms,
    null_payload, payload_from_text,
};
use edgewire::topic::{Topic, TopicFilter};
use serde_json::Value;

use crate::harness::DEADLINE;

/// Limits small enough to reach in a test.
pub const LIMITS: Limits = Limits {
    history_size: 5,
    history_ttl: Duration::from_secs(60),
    history_bytes: 4096,
    history_bytes_total: 1 << 20,
    max_topics: 3,
};

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

fn draft(text: &str) -> Draft {
    Draft {
        from: Arc::from("alice.1"),
        publish: Publish {
            kind: Arc::from("chat"),
            ..Publish::data(payload_from_text(text))
        },
        once: None,
    }
}

fn retain(name: &str, text: &str, ttl: Option<Duration>) -> RetainDraft {
    RetainDraft {
        topic: topic(name),
        data: payload_from_text(text),
        from: Arc::from("device.1"),
        ttl,
        once: None,
    }
}

fn peer(id: &str, user: &str) -> PeerInfo {
    PeerInfo {
        id: Arc::from(id),
        user: Arc::from(user),
        meta: null_payload(),
        state: null_payload(),
    }
}

fn json(event: &Event) -> Value {
    serde_json::from_str(event.json()).unwrap()
}

async fn next(rx: &mut RingReceiver) -> Value {
    let event = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("delivery before the deadline")
        .expect("ring open");
    json(&event)
}

fn ids(events: &[Arc<Event>]) -> Vec<EventId> {
    events.iter().map(|e| e.id().unwrap()).collect()
}

/// Runs the whole contract against brokers made by `make` (one per case, each
/// with its own fan-out, as a fresh relay instance would have).
pub async fn contract<F, Fut>(make: F)
where
    F: Fn(Arc<Fanout>, Limits) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Broker>>,
{
    let make = |limits| {
        let fanout = Fanout::new(64, std::time::Duration::ZERO);
        let broker = make(fanout.clone(), limits);
        async move { (broker.await, fanout) }
    };
    ids_order_and_history(make(LIMITS).await).await;
    history_gaps(make(LIMITS).await).await;
    history_ages(
        make(Limits {
            history_ttl: Duration::from_millis(600),
            ..LIMITS
        })
        .await,
    )
    .await;
    history_bytes_bound(make(LIMITS).await).await;
    retained_values(make(LIMITS).await).await;
    retained_expiry_and_limits(make(LIMITS).await).await;
    presence_and_direct(make(LIMITS).await).await;
    keyed_writes_happen_once(make(LIMITS).await).await;
    rooms_are_listed_page_by_page(make(LIMITS).await).await;
}

/// Subscribes locally and across instances, as a session does.
async fn subscribe(broker: &dyn Broker, fanout: &Fanout, r: &RoomName) -> RingReceiver {
    let rx = fanout.subscribe(r);
    broker.watch(r).await.expect("watch");
    rx
}

/// Publishes a marker and asserts it is the next delivery: nothing else came first.
async fn assert_nothing_before_marker(
    broker: &dyn Broker,
    rx: &mut RingReceiver,
    r: &RoomName,
    why: &str,
) {
    broker.publish(r, draft("marker")).await.unwrap();
    let next = next(rx).await;
    assert_eq!(next["data"], "marker", "{why}: got {next}");
}

async fn ids_order_and_history((broker, fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-ids");
    let mut rx = subscribe(&*broker, &fanout, &r).await;
    let mut published = Vec::new();
    for i in 0..4 {
        published.push(broker.publish(&r, draft(&format!("m{i}"))).await.unwrap());
    }
    let published_ids = ids(&published);
    assert!(
        published_ids.windows(2).all(|w| w[0] < w[1]),
        "ids grow: {published_ids:?}"
    );
    for (i, id) in published_ids.iter().enumerate() {
        let delivered = next(&mut rx).await;
        assert_eq!(delivered["id"], id.to_string(), "delivered in id order");
        assert_eq!(delivered["data"], format!("m{i}"));
        assert_eq!(delivered["kind"], "message");
    }
    let all = broker.history(&r, None, 100).await.unwrap();
    assert!(all.complete);
    assert_eq!(ids(&all.events), published_ids);
    let after = broker
        .history(&r, Some(published_ids[1]), 100)
        .await
        .unwrap();
    assert!(after.complete);
    assert_eq!(
        ids(&after.events),
        published_ids[2..].to_vec(),
        "after an id, oldest first"
    );
    let limited = broker.history(&r, Some(published_ids[0]), 2).await.unwrap();
    assert_eq!(
        ids(&limited.events),
        published_ids[1..3].to_vec(),
        "limit keeps the oldest"
    );
    let none = broker
        .history(&r, Some(*published_ids.last().unwrap()), 100)
        .await
        .unwrap();
    assert!(
        none.complete && none.events.is_empty(),
        "nothing after the last id"
    );
    let snapshot = broker.snapshot(&r).await.unwrap();
    assert_eq!(snapshot.last_id, published_ids.last().copied());
}

/// History is bounded in bytes too: large messages push the oldest out
/// before the count bound is reached, and a resume from them is a gap.
async fn history_bytes_bound((broker, _fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-bytes");
    let big = "x".repeat(1000);
    let mut published = Vec::new();
    for _ in 0..5 {
        published.push(broker.publish(&r, draft(&big)).await.unwrap().id().unwrap());
    }
    let kept = broker.history(&r, None, 100).await.unwrap();
    let bytes: usize = kept.events.iter().map(|e| e.json().len()).sum();
    assert!(
        !kept.events.is_empty() && kept.events.len() < 5,
        "{} of 5 messages of 1 KB kept under a 4 KiB bound",
        kept.events.len()
    );
    assert!(
        bytes <= LIMITS.history_bytes + 64 * kept.events.len(),
        "{bytes} bytes kept"
    );
    assert_eq!(
        ids(&kept.events),
        published[5 - kept.events.len()..].to_vec(),
        "the newest are kept"
    );
    let from_first = broker.history(&r, Some(published[0]), 100).await.unwrap();
    assert!(
        !from_first.complete,
        "a resume from a dropped message is a gap"
    );
}

async fn history_gaps((broker, _fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-gaps");
    let mut published = Vec::new();
    for i in 0..8 {
        published.push(
            broker
                .publish(&r, draft(&format!("m{i}")))
                .await
                .unwrap()
                .id()
                .unwrap(),
        );
    }
    let kept = broker.history(&r, None, 100).await.unwrap();
    assert_eq!(
        ids(&kept.events),
        published[3..].to_vec(),
        "size-bounded to the newest 5"
    );
    let from_dropped = broker.history(&r, Some(published[0]), 100).await.unwrap();
    assert!(
        !from_dropped.complete,
        "a resume point older than history has a gap"
    );
    let from_edge = broker.history(&r, Some(published[2]), 100).await.unwrap();
    assert!(
        from_edge.complete,
        "resuming right after the last dropped id misses nothing"
    );
    assert_eq!(ids(&from_edge.events), published[3..].to_vec());

    let unknown = broker
        .history(&room("contract-never"), Some(published[0]), 100)
        .await
        .unwrap();
    assert!(
        !unknown.complete,
        "a resume point in a room with no history cannot be vouched for"
    );
}

/// History past its age is gone without any sweep or write (nothing works
/// on a timer): resuming from before it is a gap, and the room goes on.
async fn history_ages((broker, _fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-ages");
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(broker.publish(&r, draft(&format!("a{i}"))).await.unwrap());
    }
    let first = published[0].id().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = broker.history(&r, None, 100).await.unwrap();
        if now.events.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history still holds {} events past its age",
            now.events.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let aged = broker.history(&r, Some(first), 100).await.unwrap();
    assert!(!aged.complete, "history past its age is gone: a gap");
    assert!(aged.events.is_empty());
    let next = broker.publish(&r, draft("after")).await.unwrap();
    let resumed = broker.history(&r, Some(first), 100).await.unwrap();
    assert!(
        !resumed.complete,
        "still a gap once the room is written again"
    );
    assert_eq!(ids(&resumed.events), vec![next.id().unwrap()]);
    let from_last = broker
        .history(&r, Some(published[2].id().unwrap()), 100)
        .await
        .unwrap();
    // Complete or not (a Redis stream that expired whole cannot vouch for
    // what came before it), the event after the resume point is there.
    assert_eq!(ids(&from_last.events), vec![next.id().unwrap()]);
}

async fn retained_values((broker, fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-retained");
    let mut rx = subscribe(&*broker, &fanout, &r).await;
    let set = broker
        .set_retained(&r, retain("device/status/a", "online", None))
        .await
        .unwrap();
    let live = next(&mut rx).await;
    assert_eq!(live, json(&set));
    assert_eq!(live["kind"], "status");
    assert_eq!(live["topic"], "device/status/a");
    assert_eq!(live["data"], "online");
    assert_eq!(live["retained"], false, "a live update");
    assert_eq!(live["from"], "device.1");
    assert!(live["id"].is_string());
    broker
        .set_retained(&r, retain("device/status/b", "offline", None))
        .await
        .unwrap();
    broker
        .set_retained(&r, retain("device/config/a", "{}", None))
        .await
        .unwrap();

    let all = broker.retained(&r, None).await.unwrap();
    let topics: Vec<&str> = all.iter().map(|v| v.topic.as_str()).collect();
    assert_eq!(
        topics,
        ["device/config/a", "device/status/a", "device/status/b"],
        "sorted by topic"
    );
    let status = broker
        .retained(&r, Some(&TopicFilter::parse("device/status/+").unwrap()))
        .await
        .unwrap();
    assert_eq!(status.len(), 2);
    let replay = json(&status[0].replay);
    assert_eq!(
        (replay["retained"].as_bool(), replay.get("id")),
        (Some(true), None),
        "replay: retained, no id"
    );
    assert_eq!(replay["data"], "online");
    assert_eq!(
        broker
            .retained(&r, Some(&TopicFilter::parse("device/*").unwrap()))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        broker
            .retained(&r, Some(&TopicFilter::parse("other/+").unwrap()))
            .await
            .unwrap()
            .is_empty()
    );

    // Overwrite keeps one value per topic; updates are kept in history.
    broker
        .set_retained(&r, retain("device/status/a", "away", None))
        .await
        .unwrap();
    let a = broker
        .retained(&r, Some(&TopicFilter::parse("device/status/a").unwrap()))
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].data.get(), "\"away\"");
    let history = broker.history(&r, None, 100).await.unwrap();
    assert_eq!(history.events.len(), 4, "every topic update is in history");

    let cleared = broker
        .clear_retained(&r, &topic("device/status/a"), Arc::from("x.1"), None)
        .await
        .unwrap()
        .expect("held a value");
    assert_eq!(json(&cleared)["data"], Value::Null);
    assert!(
        broker
            .clear_retained(&r, &topic("device/status/a"), Arc::from("x.1"), None)
            .await
            .unwrap()
            .is_none(),
        "nothing left to clear"
    );
    assert_eq!(broker.retained(&r, None).await.unwrap().len(), 2);
    let rooms = broker.rooms(None, 1000).await.unwrap().rooms;
    assert!(
        rooms
            .iter()
            .any(|s| s.room == r && s.topics == 2 && s.peers == 0),
        "rooms with only topics are listed"
    );
}

async fn retained_expiry_and_limits((broker, fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-ttl");
    let mut rx = subscribe(&*broker, &fanout, &r).await;
    broker
        .set_retained(&r, retain("t/short", "x", Some(Duration::from_secs(5))))
        .await
        .unwrap();
    broker
        .set_retained(&r, retain("t/long", "y", None))
        .await
        .unwrap();
    next(&mut rx).await;
    next(&mut rx).await;
    broker.sweep(now_ms() + 1000).await.unwrap();
    assert_eq!(
        broker.retained(&r, None).await.unwrap().len(),
        2,
        "not lapsed yet"
    );
    broker.sweep(now_ms() + 6000).await.unwrap();
    let lapsed = next(&mut rx).await;
    assert_eq!(
        (lapsed["kind"].as_str(), lapsed["topic"].as_str()),
        (Some("status"), Some("t/short"))
    );
    assert_eq!(
        lapsed["data"],
        Value::Null,
        "a lapsed value is announced as cleared"
    );
    let left = broker.retained(&r, None).await.unwrap();
    assert_eq!(
        left.iter().map(|v| v.topic.as_str()).collect::<Vec<_>>(),
        ["t/long"]
    );

    broker
        .set_retained(&r, retain("t/2", "z", None))
        .await
        .unwrap();
    broker
        .set_retained(&r, retain("t/3", "z", None))
        .await
        .unwrap();
    let err = broker
        .set_retained(&r, retain("t/4", "z", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BrokerError::TooManyTopics { limit: 3, .. }),
        "{err:?}"
    );
    broker
        .set_retained(&r, retain("t/3", "again", None))
        .await
        .expect("overwriting at the limit is fine");
}

/// The ids of the peers a join returned, as its `welcome` lists them.
fn peer_ids(peers: &PeerList) -> Vec<String> {
    let json = serde_json::to_value(peers).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn presence_and_direct((broker, fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-presence");
    let mut rx = subscribe(&*broker, &fanout, &r).await;
    let first = broker.join(&r, peer("alice.1", "alice")).await.unwrap();
    assert!(
        peer_ids(&first.peers).is_empty(),
        "the joiner is not among the others"
    );
    assert_eq!(next(&mut rx).await["kind"], "join");
    let second = broker.join(&r, peer("bob.1", "bob")).await.unwrap();
    assert_eq!(peer_ids(&second.peers), ["alice.1"]);
    let join = next(&mut rx).await;
    assert_eq!(join["peer"]["id"], "bob.1");
    broker
        .set_state(&r, &Arc::from("bob.1"), payload_from_text("typing"))
        .await
        .unwrap();
    let state = next(&mut rx).await;
    assert_eq!(
        (state["kind"].as_str(), state["state"].as_str()),
        (Some("state"), Some("typing"))
    );
    assert_eq!(
        broker
            .peer(&r, "bob.1")
            .await
            .unwrap()
            .map(|p| p.state.get().to_owned()),
        Some("\"typing\"".into())
    );
    assert_eq!(broker.snapshot(&r).await.unwrap().peers.len(), 2);

    // A direct message reaches only its recipient's queue, and needs a present recipient.
    let bob_direct = fanout.register_peer(Arc::from("bob.1"));
    let mut direct = draft("psst");
    direct.publish.to = Some(Arc::from("bob.1"));
    let sent = broker.publish(&r, direct).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, bob_direct.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        Envelope::Event(got) => assert_eq!(json(&got), json(&sent)),
        Envelope::Control(control) => panic!("a message arrived as {control:?}"),
    }
    // A control message reaches its present peer's inbox as one (never as
    // an event a client could be sent), and needs the peer present.
    let refresh = Control::Refresh {
        to: Arc::from("bob.1"),
        token: "new.token".into(),
    };
    broker.control(&r, refresh.clone()).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, bob_direct.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&got, Envelope::Control(c) if **c == refresh),
        "{got:?}"
    );
    let absent = Control::Refresh {
        to: Arc::from("nobody.1"),
        token: "new.token".into(),
    };
    assert!(matches!(
        broker.control(&r, absent).await,
        Err(BrokerError::NoSuchPeer { .. })
    ));
    let history = broker.history(&r, None, 100).await.unwrap();
    assert!(history.events.is_empty(), "direct messages are not kept");
    assert_nothing_before_marker(&*broker, &mut rx, &r, "a direct message is not broadcast").await;
    let mut stray = draft("?");
    stray.publish.to = Some(Arc::from("nobody.1"));
    assert!(matches!(
        broker.publish(&r, stray).await,
        Err(BrokerError::NoSuchPeer { .. })
    ));

    broker
        .leave(&r, &Arc::from("bob.1"), LeaveReason::Timeout)
        .await
        .unwrap();
    let leave = next(&mut rx).await;
    assert_eq!(
        (leave["peer"]["id"].as_str(), leave["reason"].as_str()),
        (Some("bob.1"), Some("timeout"))
    );
    broker
        .leave(&r, &Arc::from("bob.1"), LeaveReason::Closed)
        .await
        .unwrap();
    assert!(
        matches!(rx.try_recv(), Ok(None)),
        "leaving twice announces once"
    );
    assert_eq!(broker.snapshot(&r).await.unwrap().peers.len(), 1);
}

#[tokio::test]
async fn memory_broker_meets_the_contract() {
    contract(|fanout, limits| async move {
        Arc::new(MemoryBroker::new(fanout, limits)) as Arc<dyn Broker>
    })
    .await;
}

#[tokio::test]
async fn memory_history_stays_under_the_relay_wide_cap() {
    let limits = Limits {
        history_bytes_total: 10_000,
        ..LIMITS
    };
    let memory = Arc::new(MemoryBroker::new(
        Fanout::new(64, std::time::Duration::ZERO),
        limits,
    ));
    let broker: Arc<dyn Broker> = memory.clone();
    let big = "x".repeat(1000);
    for i in 0..40 {
        let r = room(&format!("capped-{}", i % 8));
        broker.publish(&r, draft(&big)).await.unwrap();
        assert!(
            memory.history_bytes() <= limits.history_bytes_total,
            "{} bytes after publish {i}",
            memory.history_bytes()
        );
    }
    // The room written last kept its newest message.
    let last = broker.history(&room("capped-7"), None, 100).await.unwrap();
    assert!(!last.events.is_empty());
}

#[tokio::test]
async fn redis_broker_meets_the_contract() {
    let server = crate::redis_server::RedisServer::start().await;
    redis_contract(&server.url()).await;
}

/// The whole contract against Redis brokers on `url` (a server or a cluster).
pub async fn redis_contract(url: &str) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let url = url.to_owned();
    contract(|fanout, limits| {
        let settings = edgewire::broker::RedisSettings {
            url: url.clone(),
            prefix: crate::redis_server::unique_prefix(),
            timeout: Duration::from_secs(3),
            instance_ttl: Duration::from_secs(10),
        };
        let shutdown = shutdown.clone();
        async move {
            let broker = edgewire::broker::RedisBroker::connect(settings, limits, fanout, shutdown)
                .await
                .expect("connect to redis");
            // The pub/sub connection comes up in the background.
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while !broker.is_ready() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis broker never ready"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            broker as Arc<dyn Broker>
        }
    })
    .await;
    shutdown.cancel();
}

fn once(user: &str, key: &str, what: &str) -> Once {
    Once::new(user, &IdempotencyKey::parse(key).unwrap(), &[what])
}

/// A keyed write retried returns the first attempt's id and delivers nothing
/// more: publishes, direct messages, topic sets and clears. The same key for
/// another write is refused; another user's same key is another write.
async fn keyed_writes_happen_once((broker, fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let r = room("contract-once");
    let mut rx = subscribe(&*broker, &fanout, &r).await;
    let mut first = draft("one");
    first.once = Some(once("alice", "k1", "one"));
    let a = broker.publish(&r, first.clone()).await.unwrap();
    assert_eq!(next(&mut rx).await["data"], "one");
    let b = broker.publish(&r, first.clone()).await.unwrap();
    assert_eq!(a.id(), b.id(), "a retry answers with the first id");
    assert_nothing_before_marker(&*broker, &mut rx, &r, "a retry is not delivered").await;
    assert_eq!(broker.history(&r, None, 100).await.unwrap().events.len(), 2);

    let mut reused = draft("two");
    reused.once = Some(once("alice", "k1", "two"));
    assert_eq!(
        broker.publish(&r, reused).await.err(),
        Some(BrokerError::KeyReused)
    );
    let mut other_user = draft("one");
    other_user.once = Some(once("bob", "k1", "one"));
    let c = broker.publish(&r, other_user).await.unwrap();
    assert_ne!(c.id(), a.id());
    assert_eq!(next(&mut rx).await["data"], "one");

    // A direct message: retried after its recipient left, it is still done.
    broker.join(&r, peer("bob.1", "bob")).await.unwrap();
    let _join = next(&mut rx).await;
    let bob_direct = fanout.register_peer(Arc::from("bob.1"));
    let mut direct = draft("psst");
    direct.publish.to = Some(Arc::from("bob.1"));
    direct.once = Some(once("alice", "d1", "psst"));
    let d = broker.publish(&r, direct.clone()).await.unwrap();
    let _ = tokio::time::timeout(DEADLINE, bob_direct.recv())
        .await
        .unwrap();
    broker
        .leave(&r, &Arc::from("bob.1"), LeaveReason::Closed)
        .await
        .unwrap();
    let _leave = next(&mut rx).await;
    assert_eq!(broker.publish(&r, direct).await.unwrap().id(), d.id());

    // A topic set and a clear, each retried.
    let mut set = retain("t/a", "on", None);
    set.once = Some(once("device", "s1", "on"));
    let s1 = broker.set_retained(&r, set.clone()).await.unwrap();
    assert_eq!(next(&mut rx).await["data"], "on");
    broker
        .set_retained(&r, retain("t/a", "later", None))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await["data"], "later");
    let s2 = broker.set_retained(&r, set).await.unwrap();
    assert_eq!(s1.id(), s2.id());
    let held = broker.retained(&r, None).await.unwrap();
    assert_eq!(
        held[0].data.get(),
        "\"later\"",
        "a retry does not set the value back"
    );
    let clear = once("device", "c1", "clear");
    let c1 = broker
        .clear_retained(&r, &topic("t/a"), Arc::from("d.1"), Some(&clear))
        .await
        .unwrap()
        .expect("cleared");
    assert!(next(&mut rx).await["data"].is_null());
    let c2 = broker
        .clear_retained(&r, &topic("t/a"), Arc::from("d.1"), Some(&clear))
        .await
        .unwrap()
        .expect("a retried clear answers with its first id");
    assert_eq!(c1.id(), c2.id());
    assert_nothing_before_marker(
        &*broker,
        &mut rx,
        &r,
        "retried topic writes are not delivered",
    )
    .await;
}

/// The room listing goes page by page, following `next`: every room with a
/// value shows (a room may show twice), rooms with nothing do not, and the
/// last page says so. A cursor the broker did not hand out is refused or
/// simply yields later rooms, never an error of the backend.
async fn rooms_are_listed_page_by_page((broker, _fanout): (Arc<dyn Broker>, Arc<Fanout>)) {
    let names: Vec<RoomName> = (0..300).map(|i| room(&format!("page-{i:03}"))).collect();
    for r in &names {
        broker
            .set_retained(r, retain("t", "x", None))
            .await
            .unwrap();
    }
    broker
        .publish(&room("page-history-only"), draft("h"))
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = broker.rooms(cursor.as_deref(), 50).await.unwrap();
        pages += 1;
        assert!(
            page.rooms.len() <= 150,
            "about a page: {}",
            page.rooms.len()
        );
        for summary in page.rooms {
            assert_eq!(summary.topics, 1, "{summary:?}");
            seen.insert(summary.room);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "the listing ends");
    }
    assert!(pages > 1, "300 rooms take more than one page of 50");
    let expected: std::collections::HashSet<RoomName> = names.into_iter().collect();
    let page_rooms: std::collections::HashSet<RoomName> = seen
        .into_iter()
        .filter(|r| r.as_str().starts_with("page-"))
        .collect();
    assert_eq!(
        page_rooms, expected,
        "every room with a value, once or more, and no other"
    );
}
