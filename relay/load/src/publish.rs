//! The `publish` scenario: POST throughput into rooms nobody subscribes to,
//! with request latency and the server's CPU per publish.

use std::time::Instant;

use crate::LoadError;
use crate::fanout::{room_names, templates};
use crate::procstat;
use crate::publisher::{self, Plan};
use crate::report::Report;
use crate::target::Sources;

/// Everything a publish run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name the run is compared under.
    pub name: String,
    /// Server label.
    pub label: String,
    /// Publish URL templates.
    pub pub_urls: Vec<String>,
    /// Replaces `{token}`.
    pub token: String,
    /// Rooms to spread messages over.
    pub rooms: u64,
    /// Messages in all.
    pub messages: u64,
    /// Body size, bytes.
    pub size: usize,
    /// Concurrent connections.
    pub publishers: usize,
    /// Loopback source addresses.
    pub sources: u32,
    /// Server processes to measure.
    pub server_pids: Vec<u32>,
    /// Room name prefix.
    pub room_prefix: String,
}

/// Runs the scenario.
pub async fn run(opts: Options) -> Result<Report, LoadError> {
    let targets = templates(&opts.pub_urls, &opts.token).await?;
    let rooms = room_names(&opts.room_prefix, opts.rooms);
    let before = procstat::sample(&opts.server_pids);
    let client_before = procstat::own_cpu_ms();
    let outcome = publisher::publish(
        Plan {
            targets,
            rooms: rooms.clone(),
            messages: opts.messages,
            size: opts.size,
            rate: None,
            publishers: opts.publishers,
            sources: Sources::new(opts.sources),
        },
        Instant::now(),
    )
    .await;
    let after = procstat::sample(&opts.server_pids);
    let published: u64 = outcome.accepted.iter().sum();
    let server_cpu_ms = after.cpu_ms.saturating_sub(before.cpu_ms);
    Ok(Report {
        scenario: "publish".into(),
        name: opts.name,
        label: opts.label,
        rooms: rooms.len() as u64,
        size: opts.size as u64,
        published,
        publish_errors: outcome.errors,
        publishes_per_s: published as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
        elapsed_s: outcome.elapsed.as_secs_f64(),
        latency: outcome.latency.summary(),
        server_cpu_ms,
        server_cpu_us_per_op: server_cpu_ms as f64 * 1000.0 / published.max(1) as f64,
        client_cpu_ms: procstat::own_cpu_ms().saturating_sub(client_before),
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        first_error: outcome.first_error.unwrap_or_default(),
        ..Report::default()
    })
}
