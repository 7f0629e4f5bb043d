//! The fault campaign: real `redis-server` and relay processes on loopback,
//! a publisher POSTing numbered messages at a steady rate (every other one
//! with an idempotency key, retried until accepted, as the SDK does), and
//! WebSocket and SSE subscribers on both instances that resume after any
//! disconnect with their last id, as the SDK does. Each test injects one
//! fault, then checks what the subscribers received:
//!
//! - every message answered 202 reached every subscriber exactly once, in
//!   one order (ids strictly growing), unless the fault destroys history
//!   (Redis restarted empty), where a subscriber must have been told `reset`
//!   and everything accepted after the fault still reaches it;
//! - no message answered `backend_unavailable` (or refused at connect) was
//!   ever delivered;
//! - a keyed message retried any number of times was delivered once (but
//!   across Redis restarted empty, which forgets its key too: a copy stored
//!   before the restart and announced lost by `reset` may precede the one
//!   stored by the retry);
//! - the relays that lived through the fault hold as many file descriptors
//!   as before it, and about the same memory.
//!
//! `faults::soak` runs random faults from the list: 3 in the test suite,
//! `EDGEWIRE_SOAK_FAULTS=100` by hand (see relay/docs/benchmarks.md).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::{DEADLINE, RelayProcess, http, token};
use crate::redis_server::{RedisServer, unique_prefix};

const ROOM: &str = "campaign";
/// Time between two publishes.
const PACE: Duration = Duration::from_millis(20);

/// An event id as a comparable pair.
fn id_of(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// What the publisher was told about each message number.
#[derive(Default, Debug)]
struct Ledger {
    /// Accepted (202), with their ids.
    accepted: Vec<(u64, String)>,
    /// Refused for sure: never to be delivered.
    refused: Vec<u64>,
    /// The answer said (or the failure implied) the outcome is unknown.
    unknown: Vec<u64>,
    /// Keyed messages that needed more than one attempt.
    retried: usize,
    /// Attempts not answered 202.
    failures: usize,
    /// The next number to publish.
    next: u64,
}

/// What one subscriber received.
#[derive(Default, Debug)]
struct Received {
    messages: Vec<(u64, String)>,
    statuses: Vec<(String, String)>,
    resets: usize,
    /// How many messages had arrived when the first `reset` did.
    first_reset: Option<usize>,
    reconnects: usize,
}

/// Two relay processes on one Redis, a publisher and four subscribers.
struct Campaign {
    redis: RedisServer,
    relays: Vec<RelayProcess>,
    env: Vec<(String, String)>,
    ledger: Arc<Mutex<Ledger>>,
    subscribers: Vec<(String, Arc<Mutex<Received>>)>,
    stop_publisher: CancellationToken,
    stop_subscribers: CancellationToken,
    publisher: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The relays' shared settings: short timeouts so faults show quickly.
fn relay_env(redis_url: &str, prefix: &str) -> Vec<(String, String)> {
    [
        ("EDGEWIRE_REDIS_URL", redis_url),
        ("EDGEWIRE_REDIS_PREFIX", prefix),
        ("EDGEWIRE_REDIS_TIMEOUT", "500ms"),
        ("EDGEWIRE_INSTANCE_TTL", "1s"),
        ("EDGEWIRE_SHUTDOWN_GRACE", "2s"),
        ("EDGEWIRE_WRITE_TIMEOUT", "1s"),
        ("EDGEWIRE_PUBLISH_RATE", "1000000"),
        ("EDGEWIRE_NEW_CONNECTIONS_PER_SECOND", "100000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl Campaign {
    /// Starts the relays (on `redis_url`, the server itself or a proxy in
    /// front of it), the subscribers and the publisher, and waits until the
    /// first messages reach every subscriber.
    async fn start(redis: RedisServer, redis_url: Option<String>) -> Campaign {
        let url = redis_url.unwrap_or_else(|| redis.url());
        let env = relay_env(&url, &unique_prefix());
        let mut relays = Vec::new();
        for _ in 0..2 {
            relays.push(RelayProcess::start(&env_refs(&env)).await);
        }
        let mut campaign = Campaign {
            redis,
            relays,
            env,
            ledger: Arc::default(),
            subscribers: Vec::new(),
            stop_publisher: CancellationToken::new(),
            stop_subscribers: CancellationToken::new(),
            publisher: None,
            tasks: Vec::new(),
        };
        let reader = token("subscriber", &["*=read"]);
        for relay in 0..2 {
            for via in [Via::WebSocket, Via::Sse] {
                let received = Arc::new(Mutex::new(Received::default()));
                let name = format!("{via:?} on relay {relay}");
                campaign.subscribers.push((name, received.clone()));
                campaign.tasks.push(tokio::spawn(subscribe(
                    campaign.relays[relay].base.clone(),
                    via,
                    reader.clone(),
                    campaign.stop_subscribers.clone(),
                    received,
                )));
            }
        }
        campaign.wait_welcomed().await;
        campaign.publisher = Some(tokio::spawn(publish(
            campaign.bases(),
            token("publisher", &["*=read,write,retain"]),
            campaign.stop_publisher.clone(),
            campaign.ledger.clone(),
        )));
        campaign.wait_all_delivered().await;
        campaign
    }

    fn bases(&self) -> Vec<String> {
        self.relays.iter().map(|r| r.base.clone()).collect()
    }

    /// Waits until every subscriber has reconnected at least once and
    /// received a first message (or, before publishing, until each stream
    /// is open: its welcome sets `reconnects` to 1).
    async fn wait_welcomed(&self) {
        let deadline = Instant::now() + DEADLINE;
        while !self
            .subscribers
            .iter()
            .all(|(_, r)| r.lock().unwrap().reconnects > 0)
        {
            assert!(Instant::now() < deadline, "subscribers never welcomed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every subscriber holds the newest accepted message.
    async fn wait_all_delivered(&self) {
        let deadline = Instant::now() + DEADLINE * 2;
        loop {
            let newest = self.ledger.lock().unwrap().accepted.last().map(|(n, _)| *n);
            if let Some(newest) = newest
                && self
                    .subscribers
                    .iter()
                    .all(|(_, r)| r.lock().unwrap().messages.iter().any(|(n, _)| *n == newest))
            {
                return;
            }
            if Instant::now() > deadline {
                return; // `verify` says what is missing.
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets the publisher run until `count` more messages were answered.
    async fn publish_more(&self, count: u64) -> u64 {
        let target = self.ledger.lock().unwrap().next + count;
        let deadline = Instant::now() + DEADLINE * 3;
        while self.ledger.lock().unwrap().next < target {
            assert!(Instant::now() < deadline, "the publisher stalled");
            tokio::time::sleep(PACE).await;
        }
        target
    }

    /// Waits until `count` more publish attempts have failed: the fault is felt.
    async fn wait_failures(&self, count: usize) {
        let target = self.ledger.lock().unwrap().failures + count;
        let deadline = Instant::now() + DEADLINE;
        while self.ledger.lock().unwrap().failures < target {
            assert!(Instant::now() < deadline, "the fault was never felt");
            tokio::time::sleep(PACE).await;
        }
    }

    /// The number the publisher will send next.
    fn next_number(&self) -> u64 {
        self.ledger.lock().unwrap().next
    }

    /// File descriptors and memory (KiB) of each relay process.
    fn resources(&self) -> Vec<(usize, u64)> {
        self.relays.iter().map(|r| (r.fds(), r.rss_kib())).collect()
    }

    /// Restarts relay `i` where it ran, after a kill or a drain.
    async fn restart_relay(&mut self, i: usize) {
        let port = self.relays[i].port();
        self.relays[i] = RelayProcess::start_on(port, &env_refs(&self.env)).await;
    }

    /// Waits until both relays answer `/readyz` with 200.
    async fn wait_ready(&self) {
        for relay in &self.relays {
            crate::instances::wait_ready(&format!("http://{}/readyz", relay.base)).await;
        }
    }

    /// Stops the publisher, waits for delivery, stops the subscribers, and
    /// checks every promise. `reset_allowed_before`: messages numbered below
    /// it may be missing for a subscriber that was told `reset`.
    async fn finish(mut self, reset_allowed_before: Option<u64>) -> Report {
        self.publish_more(25).await;
        self.stop_publisher.cancel();
        if let Some(p) = self.publisher.take() {
            p.await.expect("the publisher did not panic");
        }
        self.wait_all_delivered().await;
        self.stop_subscribers.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let ledger = std::mem::take(&mut *self.ledger.lock().unwrap());
        let subscribers: Vec<(String, Received)> = self
            .subscribers
            .iter()
            .map(|(n, r)| (n.clone(), std::mem::take(&mut *r.lock().unwrap())))
            .collect();
        verify(&ledger, &subscribers, reset_allowed_before);
        Report {
            accepted: ledger.accepted.len(),
            refused: ledger.refused.len(),
            unknown: ledger.unknown.len(),
            retried: ledger.retried,
            resets: subscribers.iter().map(|(_, r)| r.resets).sum(),
            resets_each: subscribers.iter().map(|(_, r)| r.resets).collect(),
            reconnects: subscribers.iter().map(|(_, r)| r.reconnects).sum(),
            statuses: subscribers.into_iter().map(|(_, r)| r.statuses).collect(),
        }
    }
}

/// What a campaign saw, for the soak's summary and extra checks.
#[derive(Debug)]
struct Report {
    accepted: usize,
    refused: usize,
    unknown: usize,
    retried: usize,
    resets: usize,
    /// Each subscriber's count of `reset` events.
    resets_each: Vec<usize>,
    reconnects: usize,
    /// Each subscriber's live `status` events, (topic, data).
    statuses: Vec<Vec<(String, String)>>,
}

/// The checks every fault test ends with (see the module's doc).
fn verify(ledger: &Ledger, subscribers: &[(String, Received)], reset_before: Option<u64>) {
    let refused: HashSet<u64> = ledger.refused.iter().copied().collect();
    let unknown: HashSet<u64> = ledger.unknown.iter().copied().collect();
    let accepted: HashMap<u64, &str> = ledger
        .accepted
        .iter()
        .map(|(n, id)| (*n, id.as_str()))
        .collect();
    assert!(!accepted.is_empty(), "nothing was accepted");
    for (name, got) in subscribers {
        let mut last = (0, 0);
        let mut seen = HashSet::new();
        for (i, (n, id)) in got.messages.iter().enumerate() {
            assert!(
                id_of(id) > last,
                "{name}: {id} after {last:?} (out of order or twice)"
            );
            last = id_of(id);
            // A Redis restarted empty forgets idempotency keys with the rest:
            // a keyed message stored just before the restart whose answer was
            // lost is stored again, under a new id, when retried after it.
            // Its first copy, delivered before the `reset` that announced
            // the loss, is not held against it; the copy after is.
            let stored_before_the_loss = reset_before.is_some_and(|before| *n < before)
                && n.is_multiple_of(2)
                && got.first_reset.is_some_and(|at| i < at);
            if stored_before_the_loss && accepted.get(n).is_some_and(|a| a != id) {
                continue;
            }
            assert!(seen.insert(*n), "{name}: message {n} delivered twice");
            assert!(
                !refused.contains(n),
                "{name}: refused message {n} was delivered"
            );
            if let Some(expected) = accepted.get(n) {
                assert_eq!(id, expected, "{name}: message {n} under another id");
            } else {
                assert!(
                    unknown.contains(n),
                    "{name}: message {n} was never published"
                );
            }
        }
        let missing: Vec<u64> = ledger
            .accepted
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !seen.contains(n))
            .filter(|n| match reset_before {
                Some(before) if got.resets > 0 => *n >= before,
                _ => true,
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{name} missed accepted messages {missing:?} (resets {})",
            got.resets
        );
        if reset_before.is_none() {
            assert_eq!(got.resets, 0, "{name} was told reset with no history lost");
        }
    }
}

/// Publishes numbered messages until stopped: even numbers with an
/// idempotency key, retried (on either relay) until accepted; odd ones once,
/// recording what their answer means.
async fn publish(
    bases: Vec<String>,
    tok: String,
    stop: CancellationToken,
    ledger: Arc<Mutex<Ledger>>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let mut tick = tokio::time::interval(PACE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tick.tick().await;
        let n = ledger.lock().unwrap().next;
        let keyed = n.is_multiple_of(2);
        let mut attempt = 0usize;
        let outcome = loop {
            let base = &bases[(n as usize + attempt) % bases.len()];
            let mut request = client
                .post(format!("http://{base}/rooms/{ROOM}"))
                .bearer_auth(&tok)
                .body(n.to_string());
            if keyed {
                request = request.header("idempotency-key", format!("m-{n}"));
            }
            let answer = match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Ok((status, body))
                }
                Err(e) => Err(e.is_connect()),
            };
            let outcome = match answer {
                Ok((202, body)) => Outcome::Accepted(body["id"].as_str().unwrap_or("").to_owned()),
                Ok((503, body)) if body["error"] == "outcome_unknown" => Outcome::Unknown,
                Ok((503, _)) | Err(true) => Outcome::Refused,
                Err(false) => Outcome::Unknown,
                Ok((status, body)) => panic!("message {n}: unexpected answer {status} {body}"),
            };
            if !matches!(outcome, Outcome::Accepted(_)) {
                ledger.lock().unwrap().failures += 1;
            }
            if !keyed || matches!(outcome, Outcome::Accepted(_)) {
                break outcome;
            }
            attempt += 1;
            assert!(attempt < 400, "keyed message {n} never accepted");
            tokio::time::sleep(PACE * 2).await;
        };
        let mut ledger = ledger.lock().unwrap();
        match outcome {
            Outcome::Accepted(id) => ledger.accepted.push((n, id)),
            Outcome::Refused => ledger.refused.push(n),
            Outcome::Unknown => ledger.unknown.push(n),
        }
        if attempt > 0 {
            ledger.retried += 1;
        }
        ledger.next = n + 1;
    }
}

enum Outcome {
    Accepted(String),
    Refused,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
enum Via {
    WebSocket,
    Sse,
}

/// A subscriber that resumes as the SDK does: with its last id, clearing it
/// on `reset` and taking the welcome's `last_id` when it has none.
async fn subscribe(
    base: String,
    via: Via,
    tok: String,
    stop: CancellationToken,
    received: Arc<Mutex<Received>>,
) {
    let mut last: Option<String> = None;
    while !stop.is_cancelled() {
        let resume = last
            .as_ref()
            .map(|l| format!("&last_event_id={l}"))
            .unwrap_or_default();
        let url = format!("{base}/rooms/{ROOM}?token={tok}{resume}");
        let mut on_event = |ev: Value| {
            let mut got = received.lock().unwrap();
            match ev["kind"].as_str() {
                Some("welcome") => {
                    got.reconnects += 1;
                    if last.is_none() {
                        last = ev["last_id"].as_str().map(str::to_owned);
                    }
                }
                Some("message") => {
                    let id = ev["id"].as_str().unwrap_or("").to_owned();
                    let n = ev["data"]
                        .as_str()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(u64::MAX);
                    got.messages.push((n, id.clone()));
                    last = Some(id);
                }
                Some("status") => {
                    if let Some(id) = ev["id"].as_str() {
                        last = Some(id.to_owned());
                        let data = ev["data"].as_str().unwrap_or("null").to_owned();
                        got.statuses
                            .push((ev["topic"].as_str().unwrap_or("").to_owned(), data));
                    }
                }
                Some("reset") => {
                    got.resets += 1;
                    if got.first_reset.is_none() {
                        got.first_reset = Some(got.messages.len());
                    }
                    last = None;
                }
                _ => {}
            }
        };
        match via {
            Via::WebSocket => {
                let connected = tokio::time::timeout(
                    DEADLINE,
                    tokio_tungstenite::connect_async(format!("ws://{url}")),
                )
                .await;
                if let Ok(Ok((mut ws, _))) = connected {
                    loop {
                        let frame = tokio::select! {
                            f = ws.next() => f,
                            () = stop.cancelled() => break,
                        };
                        match frame {
                            Some(Ok(Message::Text(t))) => {
                                if let Ok(ev) = serde_json::from_str(&t) {
                                    on_event(ev);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(_)) | None => break,
                        }
                    }
                }
            }
            Via::Sse => {
                let response = http()
                    .get(format!("http://{url}"))
                    .header("accept", "text/event-stream")
                    .send()
                    .await;
                if let Ok(response) = response
                    && response.status() == 200
                {
                    let mut body = response.bytes_stream();
                    let mut buffer = String::new();
                    loop {
                        let chunk = tokio::select! {
                            c = body.next() => c,
                            () = stop.cancelled() => break,
                        };
                        match chunk {
                            Some(Ok(bytes)) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
                            _ => break,
                        }
                        while let Some(end) = buffer.find("\n\n") {
                            let block: String = buffer.drain(..end + 2).collect();
                            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                                && let Ok(ev) = serde_json::from_str(data)
                            {
                                on_event(ev);
                            }
                        }
                    }
                }
            }
        }
        if !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks the relays that lived through a fault hold what they held before
/// it: the same file descriptors (a few of slack for keep-alive
/// connections), and no more than 16 MiB more memory.
fn assert_back_to_baseline(before: &[(usize, u64)], after: &[(usize, u64)], which: &[usize]) {
    for &i in which {
        let ((fds0, rss0), (fds1, rss1)) = (before[i], after[i]);
        assert!(
            fds1 <= fds0 + 4,
            "relay {i}: {fds1} file descriptors after the fault, {fds0} before"
        );
        assert!(
            rss1 <= rss0 + 16 * 1024,
            "relay {i}: {rss1} KiB after the fault, {rss0} KiB before"
        );
    }
}

/// Publishes until the subscribers have the newest message, then measures.
async fn settle(campaign: &Campaign) -> Vec<(usize, u64)> {
    campaign.publish_more(10).await;
    campaign.wait_all_delivered().await;
    campaign.resources()
}

/// One fault of the list, applied to a running campaign; returns the first
/// message number after which nothing may be missing even with a `reset`.
#[derive(Debug, Clone, Copy)]
enum Fault {
    RelayKilled,
    RelayDrained,
    RedisKilled,
    RedisFrozen,
    RedisPaused,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::RelayKilled,
        Fault::RelayDrained,
        Fault::RedisKilled,
        Fault::RedisFrozen,
        Fault::RedisPaused,
    ];

    /// Applies the fault to relay `victim` (or to Redis); returns which
    /// relays lived through it.
    async fn apply(self, campaign: &mut Campaign, victim: usize) -> Vec<usize> {
        match self {
            Fault::RelayKilled => {
                campaign.relays[victim].kill9();
                campaign.publish_more(5).await;
                campaign.restart_relay(victim).await;
                vec![1 - victim]
            }
            Fault::RelayDrained => {
                campaign.relays[victim].terminate().await;
                campaign.restart_relay(victim).await;
                vec![1 - victim]
            }
            Fault::RedisKilled => {
                campaign.redis.stop();
                campaign.wait_failures(3).await;
                campaign.redis.restart().await;
                campaign.wait_ready().await;
                vec![0, 1]
            }
            Fault::RedisFrozen => {
                campaign.redis.freeze();
                // The fault is its length: past the relays' Redis timeout.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                campaign.redis.thaw();
                campaign.wait_ready().await;
                vec![0, 1]
            }
            Fault::RedisPaused => {
                let reply = campaign.redis.command("CLIENT PAUSE 1500 ALL").await;
                assert!(reply.starts_with("+OK"), "CLIENT PAUSE: {reply}");
                campaign.publish_more(5).await;
                campaign.wait_ready().await;
                vec![0, 1]
            }
        }
    }
}

/// Runs one fault in a fresh campaign over a Redis with persistence (so no
/// history is lost: no `reset` is allowed) and checks everything.
async fn campaign_with(fault: Fault) -> Report {
    let redis = RedisServer::start_persistent().await;
    let mut campaign = Campaign::start(redis, None).await;
    let before = settle(&campaign).await;
    let survivors = fault.apply(&mut campaign, 0).await;
    let after = settle(&campaign).await;
    assert_back_to_baseline(&before, &after, &survivors);
    campaign.finish(None).await
}

#[tokio::test]
async fn a_relay_killed_and_restarted_loses_and_doubles_nothing() {
    campaign_with(Fault::RelayKilled).await;
}

#[tokio::test]
async fn a_relay_drained_and_restarted_loses_and_doubles_nothing() {
    campaign_with(Fault::RelayDrained).await;
}

#[tokio::test]
async fn redis_killed_and_restarted_with_its_log_loses_nothing() {
    campaign_with(Fault::RedisKilled).await;
}

#[tokio::test]
async fn redis_frozen_past_the_timeout_loses_and_doubles_nothing() {
    let report = campaign_with(Fault::RedisFrozen).await;
    assert!(
        report.refused + report.unknown + report.retried > 0,
        "the freeze was felt: {report:?}"
    );
}

#[tokio::test]
async fn redis_paused_by_client_pause_loses_and_doubles_nothing() {
    campaign_with(Fault::RedisPaused).await;
}

/// Redis restarted without persistence: history is gone, so subscribers
/// are told `reset` (never silence), and everything accepted after the
/// relays are ready again reaches every one of them.
#[tokio::test]
async fn redis_restarted_empty_resets_and_then_delivers_everything() {
    let redis = RedisServer::start().await;
    let mut campaign = Campaign::start(redis, None).await;
    let before = settle(&campaign).await;
    campaign.redis.restart().await;
    campaign.wait_ready().await;
    let from = campaign.next_number();
    let after = settle(&campaign).await;
    assert_back_to_baseline(&before, &after, &[0, 1]);
    let report = campaign.finish(Some(from)).await;
    assert!(
        report.resets_each.iter().all(|r| *r > 0),
        "every subscriber was told of the loss: {report:?}"
    );
}

/// A Redis 25 ms away each way (another region): nothing is lost, and
/// `/readyz` never says otherwise.
#[tokio::test]
async fn a_distant_redis_loses_nothing_and_stays_ready() {
    let redis = RedisServer::start().await;
    let proxy = LatencyProxy::start(redis.port, Duration::from_millis(25)).await;
    let campaign = Campaign::start(redis, Some(format!("redis://127.0.0.1:{}/", proxy.port))).await;
    let bases = campaign.bases();
    let mut not_ready = 0;
    for _ in 0..30 {
        for base in &bases {
            let ok = http()
                .get(format!("http://{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            not_ready += usize::from(!ok);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(not_ready, 0, "/readyz answered 503 with Redis 25 ms away");
    let report = campaign.finish(None).await;
    assert_eq!(report.refused + report.unknown, 0, "{report:?}");
}

/// A rolling deploy (each relay drained and restarted in turn) with delayed
/// wills pending: a device that comes back keeps its will from firing; one
/// that does not has its will fired once, seen once by every subscriber.
#[tokio::test]
async fn a_rolling_deploy_keeps_delayed_wills_and_messages() {
    let redis = RedisServer::start_persistent().await;
    let mut campaign = Campaign::start(redis, None).await;
    let device = |user: &str| token(user, &["*=read,write,retain"]);
    let will = |topic: &str, after: f64| serde_json::json!({"op": "will", "topic": topic, "data": "offline", "after": after, "ref": 1});
    let connect = |base: String, tok: String, op: Value| async move {
        let mut ws = crate::harness::Ws::connect_url(
            &format!("ws://{base}/rooms/{ROOM}"),
            &tok,
            crate::harness::TokenIn::Header,
        )
        .await;
        ws.next_kind("welcome").await;
        ws.send(op).await;
        ws.next_kind("ack").await;
        ws
    };
    let mut gone = connect(
        campaign.relays[0].base.clone(),
        device("gone"),
        will("status/gone", 1.0),
    )
    .await;
    let mut back = connect(
        campaign.relays[0].base.clone(),
        device("back"),
        will("status/back", 0.5),
    )
    .await;
    let (base0, base1) = (
        campaign.relays[0].base.clone(),
        campaign.relays[1].base.clone(),
    );
    let drained = campaign.relays[0].terminate();
    let returning = async {
        back.until_close().await;
        connect(base1.clone(), device("back"), will("status/back", 0.5)).await
    };
    let (_, back_again) = tokio::join!(drained, returning);
    gone.until_close().await;
    campaign.restart_relay(0).await;
    // The device that came back is on relay 1, which is drained next: it
    // comes back once more, on relay 0.
    let drained = campaign.relays[1].terminate();
    let returning = async {
        let mut back = back_again;
        back.until_close().await;
        connect(base0.clone(), device("back"), will("status/back", 0.5)).await
    };
    let (_, _back_for_good) = tokio::join!(drained, returning);
    campaign.restart_relay(1).await;
    // Wait for the gone device's will, seen by every subscriber.
    let deadline = Instant::now() + DEADLINE;
    while !campaign.subscribers.iter().all(|(_, r)| {
        r.lock()
            .unwrap()
            .statuses
            .iter()
            .any(|(topic, _)| topic == "status/gone")
    }) {
        assert!(
            Instant::now() < deadline,
            "the gone device's will never fired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = campaign.finish(None).await;
    for statuses in &report.statuses {
        let count = |t: &str| statuses.iter().filter(|(topic, _)| topic == t).count();
        assert_eq!(count("status/gone"), 1, "{statuses:?}");
        assert_eq!(count("status/back"), 0, "{statuses:?}");
    }
}

/// Clients that stop reading, over WebSocket and SSE, in a room flooded with
/// large messages: each is cut within the write timeout (1 s) plus a second
/// or two to fill its buffers, while the campaign's subscribers get
/// everything.
#[tokio::test]
async fn stalled_clients_are_cut_and_harm_no_one() {
    let redis = RedisServer::start().await;
    let campaign = Campaign::start(redis, None).await;
    let before = settle(&campaign).await;
    let base = campaign.relays[0].base.clone();
    let tok = token("stalled", &["*=read,write"]);
    let mut watcher = crate::harness::Ws::connect_url(
        &format!("ws://{base}/rooms/flood"),
        &tok,
        crate::harness::TokenIn::Header,
    )
    .await;
    watcher.next_kind("welcome").await;
    // Two clients that never read past their request.
    let mut stuck = Vec::new();
    for accept in ["websocket", "text/event-stream"] {
        let mut socket = TcpStream::connect(&base).await.unwrap();
        let head = if accept == "websocket" {
            format!(
                "GET /rooms/flood?token={tok} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
        } else {
            format!(
                "GET /rooms/flood?token={tok} HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n\r\n"
            )
        };
        socket.write_all(head.as_bytes()).await.unwrap();
        stuck.push(socket);
    }
    let mut peers = HashSet::new();
    while peers.len() < 2 {
        let join = watcher.next_kind("join").await;
        peers.insert(join["peer"]["id"].as_str().unwrap().to_owned());
    }
    let started = Instant::now();
    let url = format!("http://{base}/rooms/flood");
    let flood_tok = tok.clone();
    let flood = tokio::spawn(async move {
        let body = "x".repeat(60 * 1024);
        for _ in 0..2000 {
            let r = http()
                .post(&url)
                .bearer_auth(&flood_tok)
                .body(body.clone())
                .send()
                .await;
            if !matches!(r, Ok(ref r) if r.status() == 202) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut cut = HashMap::new();
    while cut.len() < 2 {
        let ev = watcher.next().await;
        if ev["kind"] == "leave"
            && let Some(id) = ev["peer"]["id"].as_str()
            && peers.contains(id)
        {
            cut.insert(id.to_owned(), (ev["reason"].clone(), started.elapsed()));
        }
    }
    flood.abort();
    for (peer, (reason, after)) in &cut {
        assert_eq!(reason, "timeout", "{peer}");
        assert!(
            *after < Duration::from_secs(4),
            "{peer} cut only after {after:?}"
        );
    }
    drop(stuck);
    drop(watcher);
    let after = settle(&campaign).await;
    assert_back_to_baseline(&before, &after, &[0, 1]);
    campaign.finish(None).await;
}

/// Random faults from the list, one after another in one campaign: 3 here,
/// `EDGEWIRE_SOAK_FAULTS` by hand. Prints a summary line.
#[tokio::test]
async fn soak() {
    let faults: usize = std::env::var("EDGEWIRE_SOAK_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let redis = RedisServer::start_persistent().await;
    let mut campaign = Campaign::start(redis, None).await;
    let mut seed = std::process::id() as u64 ^ edgewire::protocol::now_ms();
    let mut applied = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..faults {
        // xorshift: random enough to pick a fault and a victim.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let fault = Fault::ALL[(seed % Fault::ALL.len() as u64) as usize];
        let victim = ((seed >> 8) % 2) as usize;
        fault.apply(&mut campaign, victim).await;
        campaign.publish_more(10).await;
        applied.push(format!("{fault:?}"));
    }
    let report = campaign.finish(None).await;
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for fault in &applied {
        match kinds.iter_mut().find(|(k, _)| k == fault) {
            Some((_, n)) => *n += 1,
            None => kinds.push((fault.clone(), 1)),
        }
    }
    println!(
        "soak: {} faults in {:.0?} ({kinds:?}); accepted {}, refused {}, outcome unknown {}, \
         keyed retried {}, subscriber reconnects {}, resets {}: 0 lost, 0 doubled, 0 out of order",
        applied.len(),
        started.elapsed(),
        report.accepted,
        report.refused,
        report.unknown,
        report.retried,
        report.reconnects,
        report.resets,
    );
}

/// A TCP proxy that delays every byte by `delay` each way, as a Redis in
/// another region would.
struct LatencyProxy {
    port: u16,
    task: JoinHandle<()>,
}

impl LatencyProxy {
    async fn start(target: u16, delay: Duration) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (upstream_read, upstream_write) = upstream.into_split();
                tokio::spawn(delayed_pipe(client_read, upstream_write, delay));
                tokio::spawn(delayed_pipe(upstream_read, client_write, delay));
            }
        });
        LatencyProxy { port, task }
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes from `from` to `to`, each chunk `delay` after it arrived.
async fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(4096);
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
