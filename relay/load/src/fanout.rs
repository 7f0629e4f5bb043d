//! The `fanout` scenario: S subscribers over R rooms, publishers POSTing M
//! stamped messages, then every subscriber's tally checked for loss,
//! duplicates and order, with latency and the server's CPU per delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::procstat;
use crate::publisher::{self, Plan};
use crate::report::Report;
use crate::stats::{Histogram, Tally};
use crate::subscriber::{self, Ready, Shared, Spec};
use crate::target::{Sources, Template};
use crate::{LoadError, Transport};

/// Everything a fan-out run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name the run is compared under.
    pub name: String,
    /// Server label.
    pub label: String,
    /// Subscriber URL templates (spread round-robin).
    pub sub_urls: Vec<String>,
    /// Publish URL templates (spread round-robin over publishers).
    pub pub_urls: Vec<String>,
    /// Replaces `{token}` in the templates.
    pub token: String,
    /// WebSocket or SSE.
    pub transport: Transport,
    /// Rooms.
    pub rooms: u64,
    /// Subscribers in all.
    pub subscribers: u64,
    /// Messages in all.
    pub messages: u64,
    /// Body size, bytes.
    pub size: usize,
    /// Messages per second; None: flat out.
    pub rate: Option<f64>,
    /// Concurrent publishing connections.
    pub publishers: usize,
    /// Loopback source addresses.
    pub sources: u32,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
    /// When a subscription counts as established.
    pub ready: Ready,
    /// Connection attempts in flight.
    pub concurrency: usize,
    /// Pause between the last subscriber ready and the first publish.
    pub settle: Duration,
    /// How long delivery may stall before the run ends with loss.
    pub drain_timeout: Duration,
    /// Prefix of room names (unique per run, so no server replays old ones).
    pub room_prefix: String,
}

/// A room prefix no earlier run used.
pub fn fresh_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("b{}-{}", ms % 1_000_000_000, std::process::id())
}

/// Resolves URL templates once.
pub async fn templates(urls: &[String], token: &str) -> Result<Vec<Arc<Template>>, LoadError> {
    let mut out = Vec::new();
    for url in urls {
        out.push(Arc::new(Template::new(url, token).await?));
    }
    if out.is_empty() {
        return Err(LoadError::Url("no URL given".into()));
    }
    Ok(out)
}

/// Room names for a run.
pub fn room_names(prefix: &str, rooms: u64) -> Vec<String> {
    (0..rooms.max(1)).map(|i| format!("{prefix}-{i}")).collect()
}

/// Runs the scenario.
pub async fn run(opts: Options) -> Result<Report, LoadError> {
    let sub_targets = templates(&opts.sub_urls, &opts.token).await?;
    let pub_targets = templates(&opts.pub_urls, &opts.token).await?;
    let rooms = room_names(&opts.room_prefix, opts.rooms);
    let sources = Sources::new(opts.sources);
    let shared = Shared::new(opts.ready.clone(), opts.concurrency);
    let specs = Spec::spread(
        opts.subscribers,
        &rooms,
        &sub_targets,
        opts.transport,
        &sources,
    );
    let mut per_room = vec![0u64; rooms.len()];
    for spec in &specs {
        per_room[spec.room as usize] += 1;
    }
    let tasks = subscriber::spawn_all(specs, &shared);
    if let Err(e) = shared
        .wait_ready(opts.subscribers, Duration::from_secs(120))
        .await
    {
        subscriber::stop_all(&shared, tasks).await;
        return Err(e);
    }
    tokio::time::sleep(opts.settle).await;

    let before = procstat::sample(&opts.server_pids);
    let client_before = procstat::own_cpu_ms();
    let publish_start_us = shared.now_us();
    let outcome = publisher::publish(
        Plan {
            targets: pub_targets,
            rooms: rooms.clone(),
            messages: opts.messages,
            size: opts.size,
            rate: opts.rate,
            publishers: opts.publishers,
            sources: sources.clone(),
        },
        shared.epoch,
    )
    .await;

    // What the rooms owe if every subscriber stays; a failed one makes the
    // drain wait for its timeout, and shows in the report.
    let owed: u64 = per_room
        .iter()
        .zip(&outcome.accepted)
        .map(|(subs, accepted)| subs * accepted)
        .sum();
    drain(&shared, owed, opts.drain_timeout).await;
    let after = procstat::sample(&opts.server_pids);
    let client_cpu_ms = procstat::own_cpu_ms().saturating_sub(client_before);
    let tallies = subscriber::stop_all(&shared, tasks).await;

    let mut report = Report {
        scenario: "fanout".into(),
        name: opts.name,
        label: opts.label,
        transport: Some(opts.transport),
        rooms: rooms.len() as u64,
        subscribers: opts.subscribers,
        size: opts.size as u64,
        rate: opts.rate,
        published: outcome.accepted.iter().sum(),
        publish_errors: outcome.errors,
        publishes_per_s: outcome.accepted.iter().sum::<u64>() as f64
            / outcome.elapsed.as_secs_f64().max(1e-9),
        server_cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
        client_cpu_ms,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        first_error: outcome.first_error.unwrap_or_else(|| shared.first_error()),
        ..Report::default()
    };
    check(&mut report, &tallies, &outcome.accepted);
    let last_us = tallies.iter().map(|t| t.last_us).max().unwrap_or(0);
    report.elapsed_s = last_us.saturating_sub(publish_start_us) as f64 / 1e6;
    report.deliveries_per_s = report.delivered as f64 / report.elapsed_s.max(1e-9);
    report.server_cpu_us_per_op =
        report.server_cpu_ms as f64 * 1000.0 / report.delivered.max(1) as f64;
    Ok(report)
}

/// Waits until `expected` messages arrived, or none arrived for `timeout`.
async fn drain(shared: &Shared, expected: u64, timeout: Duration) {
    let mut last = shared.received.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = shared.received.load(Ordering::Relaxed);
        if now >= expected {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() > timeout {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Fills in delivery, loss, duplicates, order and latency from the tallies.
pub fn check(report: &mut Report, tallies: &[Tally], accepted: &[u64]) {
    let mut latency = Histogram::default();
    // The most common order of each room, among subscribers that got it all.
    let mut orders: HashMap<(u32, u64), u64> = HashMap::new();
    for t in tallies {
        let owed = accepted.get(t.room as usize).copied().unwrap_or(0);
        if t.ready {
            report.connected += 1;
            report.expected += owed;
            report.lost += owed.saturating_sub(t.received);
        }
        if t.dropped {
            report.failed += 1;
        }
        report.delivered += t.received;
        report.duplicates += t.duplicates;
        report.wrong_room += t.wrong_room;
        latency.merge(&t.latency);
        if t.received == owed && owed > 0 {
            *orders.entry((t.room, t.order)).or_default() += 1;
        }
    }
    let mut usual: HashMap<u32, (u64, u64)> = HashMap::new();
    for ((room, order), n) in &orders {
        let best = usual.entry(*room).or_insert((*order, 0));
        if *n > best.1 {
            *best = (*order, *n);
        }
    }
    report.order_mismatches = orders
        .iter()
        .filter(|((room, order), _)| usual.get(room).is_some_and(|u| u.0 != *order))
        .map(|(_, n)| n)
        .sum();
    report.latency = latency.summary();
}
