//! The `connect` scenario: N idle subscribers opened as fast as the server
//! takes them (bounded attempts in flight, several source addresses), and the
//! server's RSS before and after, per connection.

use std::time::{Duration, Instant};

use crate::fanout::{room_names, templates};
use crate::procstat;
use crate::report::Report;
use crate::subscriber::{self, Ready, Shared, Spec};
use crate::target::Sources;
use crate::{LoadError, Transport};

/// Everything a connect run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name the run is compared under.
    pub name: String,
    /// Server label.
    pub label: String,
    /// Subscriber URL templates.
    pub sub_urls: Vec<String>,
    /// Replaces `{token}`.
    pub token: String,
    /// WebSocket or SSE.
    pub transport: Transport,
    /// Connections to open.
    pub connections: u64,
    /// Rooms to spread them over.
    pub rooms: u64,
    /// Loopback source addresses.
    pub sources: u32,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
    /// When a subscription counts as established.
    pub ready: Ready,
    /// Connection attempts in flight.
    pub concurrency: usize,
    /// Pause after the last connection before RSS is read.
    pub settle: Duration,
    /// Room name prefix.
    pub room_prefix: String,
    /// Follow presence and report when everyone saw everyone (a relay).
    pub follow_presence: bool,
}

/// Runs the scenario.
pub async fn run(opts: Options) -> Result<Report, LoadError> {
    let targets = templates(&opts.sub_urls, &opts.token).await?;
    let rooms = room_names(&opts.room_prefix, opts.rooms);
    // A storm is over when everyone sees everyone, not at the last welcome.
    let shared = Shared::with_presence(opts.ready.clone(), opts.concurrency, opts.follow_presence);
    let before = procstat::sample(&opts.server_pids);
    let started = Instant::now();
    let started_us = shared.now_us();
    let specs = Spec::spread(
        opts.connections,
        &rooms,
        &targets,
        opts.transport,
        &Sources::new(opts.sources),
    );
    let tasks = subscriber::spawn_all(specs, &shared);
    let waited = shared
        .wait_ready(opts.connections, Duration::from_secs(300))
        .await;
    let connect_time = started.elapsed();
    if opts.follow_presence {
        shared
            .wait_presence(opts.connections, Duration::from_secs(60))
            .await;
    }
    tokio::time::sleep(opts.settle).await;
    let after = procstat::sample(&opts.server_pids);
    let tallies = subscriber::stop_all(&shared, tasks).await;
    let ready = waited?;
    let connected = tallies.iter().filter(|t| t.ready && !t.dropped).count() as u64;
    let complete: Vec<u64> = tallies
        .iter()
        .filter_map(|t| t.presence.as_ref()?.complete_at_us)
        .collect();
    let full_presence_s = if opts.follow_presence && complete.len() as u64 == connected {
        complete
            .iter()
            .max()
            .map_or(0.0, |last| last.saturating_sub(started_us) as f64 / 1e6)
    } else {
        0.0
    };
    Ok(Report {
        scenario: "connect".into(),
        name: opts.name,
        label: opts.label,
        transport: Some(opts.transport),
        rooms: rooms.len() as u64,
        subscribers: opts.connections,
        connected,
        failed: tallies.iter().filter(|t| t.dropped).count() as u64,
        connects_per_s: ready as f64 / connect_time.as_secs_f64().max(1e-9),
        full_presence: complete.len() as u64,
        full_presence_s,
        presence_frames: tallies
            .iter()
            .filter_map(|t| t.presence.as_ref())
            .map(|v| v.frames)
            .sum(),
        presence_bytes: tallies
            .iter()
            .filter_map(|t| t.presence.as_ref())
            .map(|v| v.bytes)
            .sum(),
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        rss_per_connection_b: after.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0
            / connected.max(1) as f64,
        server_cpu_ms: after.cpu_ms.saturating_sub(before.cpu_ms),
        elapsed_s: connect_time.as_secs_f64(),
        first_error: shared.first_error(),
        ..Report::default()
    })
}
