//! Fan-out benchmark: the same workload on the memory broker (one relay) and
//! through Redis (publish on one relay, subscribers on another), reporting
//! deliveries per second and end-to-end latency. Not a test; run it by hand:
//!
//! ```sh
//! cargo run --release --example fanout_bench -- [--subscribers 400] [--rooms 4] [--messages 2000] [--rate 0]
//! ```
//!
//! It starts its own relays in this process and its own `redis-server` on a
//! free port (Debian's package), all on loopback. `--rate 0` publishes flat out
//! (4 concurrent publishers); a positive rate paces messages per second.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgewire::config::Config;
use edgewire::token::{SigningKey, TokenSpec, mint, parse_room_grant};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

struct Args {
    subscribers: usize,
    rooms: usize,
    messages: usize,
    rate: u64,
}

fn args() -> Args {
    let mut a = Args {
        subscribers: 400,
        rooms: 4,
        messages: 2000,
        rate: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .expect("flags take a number");
        match pair[0].as_str() {
            "--subscribers" => a.subscribers = value as usize,
            "--rooms" => a.rooms = value.max(1) as usize,
            "--messages" => a.messages = value as usize,
            "--rate" => a.rate = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

const SECRET: &str = "bench-secret";

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn start_relay(extra: &[(&str, String)]) -> (String, CancellationToken) {
    let mut map: HashMap<String, String> = HashMap::new();
    map.insert("EDGEWIRE_JWT_SECRET".into(), SECRET.into());
    map.insert("EDGEWIRE_LOG".into(), "warn".into());
    map.insert("EDGEWIRE_OUTBOUND_QUEUE".into(), "65536".into());
    map.insert("EDGEWIRE_PUBLISH_RATE".into(), "10000000".into());
    map.insert(
        "EDGEWIRE_NEW_CONNECTIONS_PER_SECOND".into(),
        "100000".into(),
    );
    map.insert(
        "EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS".into(),
        "100000".into(),
    );
    map.insert("EDGEWIRE_MAX_CONNECTIONS_PER_USER".into(), "100000".into());
    for (k, v) in extra {
        map.insert((*k).into(), v.clone());
    }
    let config = Config::from_lookup(|k| map.get(k).cloned()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(edgewire::serve(listener, config, shutdown.clone()));
    let base = format!("127.0.0.1:{addr}", addr = addr.port());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get(format!("http://{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "relay never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (base, shutdown)
}

fn start_redis() -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

struct Report {
    deliveries: usize,
    expected: usize,
    seconds: f64,
    latencies: Vec<u64>,
}

async fn run(args: &Args, publish_base: &str, subscribe_base: &str) -> Report {
    let token = mint(
        &TokenSpec {
            sub: "bench".into(),
            rooms: vec![parse_room_grant("*=read,write").unwrap()],
            ttl: Duration::from_secs(3600),
            meta: None,
            audience: None,
            issuer: None,
        },
        &SigningKey::Secret(SECRET.as_bytes().to_vec(), jsonwebtoken::Algorithm::HS256),
    )
    .unwrap();
    // Subscribers: WebSockets spread over the rooms, each counting and timing messages.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u64>>(args.subscribers.max(1));
    let mut ready = Vec::new();
    for i in 0..args.subscribers {
        let mut request = format!("ws://{subscribe_base}/rooms/bench-{}", i % args.rooms)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        // Wait for the welcome so the subscriber is joined before publishing starts.
        loop {
            if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = ws.next().await
                && t.contains("\"welcome\"")
            {
                break;
            }
        }
        let expected =
            args.messages / args.rooms + usize::from(i % args.rooms < args.messages % args.rooms);
        let tx = tx.clone();
        ready.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
                match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                        if let Some(at) = t.find("\"data\":\"t") {
                            let rest = &t[at + 9..];
                            let sent: u64 = rest[..rest.find('"').unwrap()]
                                .split('-')
                                .next()
                                .unwrap()
                                .parse()
                                .unwrap();
                            latencies.push(micros().saturating_sub(sent));
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            let _ = tx.send(latencies).await;
        }));
    }
    drop(tx);
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()
        .unwrap();
    let publishers = if args.rate == 0 { 4 } else { 1 };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..publishers {
        let (client, next, token) = (client.clone(), next.clone(), token.clone());
        let (base, rooms, messages, rate) = (
            publish_base.to_owned(),
            args.rooms,
            args.messages,
            args.rate,
        );
        handles.push(tokio::spawn(async move {
            let mut tick =
                (rate > 0).then(|| tokio::time::interval(Duration::from_micros(1_000_000 / rate)));
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= messages {
                    return;
                }
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let body = format!("t{}-{n}", micros());
                let r = client
                    .post(format!("http://{base}/rooms/bench-{}", n % rooms))
                    .bearer_auth(&token)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut latencies = Vec::new();
    while let Some(mut l) = rx.recv().await {
        latencies.append(&mut l);
    }
    let seconds = start.elapsed().as_secs_f64();
    for h in ready {
        let _ = h.await;
    }
    latencies.sort_unstable();
    let expected: usize = (0..args.subscribers)
        .map(|i| {
            args.messages / args.rooms + usize::from(i % args.rooms < args.messages % args.rooms)
        })
        .sum();
    Report {
        deliveries: latencies.len(),
        expected,
        seconds,
        latencies,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn print(name: &str, r: &Report) -> f64 {
    let rate = r.deliveries as f64 / r.seconds;
    println!(
        "{name:<28} {:>9} / {:<9} {:>10.0} deliveries/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        r.deliveries,
        r.expected,
        rate,
        pct(&r.latencies, 0.50),
        pct(&r.latencies, 0.99),
        pct(&r.latencies, 1.0)
    );
    println!(
        "{{\"scenario\":\"{name}\",\"delivered\":{},\"expected\":{},\"seconds\":{:.3},\"deliveries_per_s\":{rate:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        r.deliveries,
        r.expected,
        r.seconds,
        pct(&r.latencies, 0.50),
        pct(&r.latencies, 0.99)
    );
    rate
}

#[tokio::main]
async fn main() {
    let args = args();
    println!(
        "fan-out: {} WebSocket subscribers over {} rooms, {} messages, {}",
        args.subscribers,
        args.rooms,
        args.messages,
        if args.rate == 0 {
            "flat out (4 publishers)".to_owned()
        } else {
            format!("{} msg/s", args.rate)
        }
    );
    let (memory_base, memory_stop) = start_relay(&[]).await;
    let memory = run(&args, &memory_base, &memory_base).await;
    memory_stop.cancel();
    let memory_rate = print("memory (1 relay)", &memory);

    let (mut redis, port) = start_redis();
    let url = format!("redis://127.0.0.1:{port}/");
    let settings = [
        ("EDGEWIRE_REDIS_URL", url.clone()),
        ("EDGEWIRE_REDIS_PREFIX", "bench".to_owned()),
    ];
    let (a, a_stop) = start_relay(&settings).await;
    let (b, b_stop) = start_relay(&settings).await;
    let through_redis = run(&args, &a, &b).await;
    a_stop.cancel();
    b_stop.cancel();
    let redis_rate = print("redis (publish A, recv B)", &through_redis);
    let _ = redis.kill();
    let _ = redis.wait();
    println!(
        "redis / memory deliveries per second: {:.2}",
        redis_rate / memory_rate
    );
}
