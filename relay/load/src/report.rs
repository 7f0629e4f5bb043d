//! The result of one run: a JSON line for scripts (`compare` reads them
//! back) and a readable table for people.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Transport;
use crate::stats::Latency;

/// One run's figures. Fields a scenario does not measure are absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `fanout`, `connect` or `publish`.
    pub scenario: String,
    /// The name runs are compared under (e.g. `fanout 1x1000 ws`).
    pub name: String,
    /// The server measured (e.g. `edgewire`, `nchan`).
    pub label: String,
    /// WebSocket or SSE subscribers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Rooms used.
    pub rooms: u64,
    /// Subscribers asked for (or idle connections).
    pub subscribers: u64,
    /// Subscribers that connected and stayed.
    pub connected: u64,
    /// Subscribers that failed to connect or were dropped.
    pub failed: u64,
    /// Message body size.
    #[serde(default)]
    pub size: u64,
    /// Target publish rate (messages/s); absent: flat out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Messages the server accepted.
    #[serde(default)]
    pub published: u64,
    /// Publishes refused or failed.
    #[serde(default)]
    pub publish_errors: u64,
    /// POSTs per second.
    #[serde(default)]
    pub publishes_per_s: f64,
    /// Deliveries expected: accepted messages times the room's subscribers.
    #[serde(default)]
    pub expected: u64,
    /// Distinct messages delivered.
    #[serde(default)]
    pub delivered: u64,
    /// Expected but never delivered.
    #[serde(default)]
    pub lost: u64,
    /// Delivered more than once.
    #[serde(default)]
    pub duplicates: u64,
    /// Delivered to a subscriber of another room.
    #[serde(default)]
    pub wrong_room: u64,
    /// Complete subscribers whose order differs from their room's usual one.
    #[serde(default)]
    pub order_mismatches: u64,
    /// Seconds from the first publish to the last delivery (or last answer).
    #[serde(default)]
    pub elapsed_s: f64,
    /// Deliveries per second.
    #[serde(default)]
    pub deliveries_per_s: f64,
    /// Publish-to-receipt latency (fanout) or request round trip (publish).
    #[serde(default)]
    pub latency: Latency,
    /// Server CPU time over the measured window (all server processes).
    #[serde(default)]
    pub server_cpu_ms: u64,
    /// Server CPU per delivery (fanout) or per publish (publish), µs.
    #[serde(default)]
    pub server_cpu_us_per_op: f64,
    /// This generator's CPU over the same window.
    #[serde(default)]
    pub client_cpu_ms: u64,
    /// Server RSS before the connections (connect) or before publishing.
    #[serde(default)]
    pub rss_before_kib: u64,
    /// Server RSS after.
    #[serde(default)]
    pub rss_after_kib: u64,
    /// RSS growth per connection, bytes (connect).
    #[serde(default)]
    pub rss_per_connection_b: f64,
    /// Connections opened per second (connect).
    #[serde(default)]
    pub connects_per_s: f64,
    /// Subscribers that saw every other peer of their room (connect, relay).
    #[serde(default)]
    pub full_presence: u64,
    /// Seconds from the start until the last of them did; 0 when some
    /// never did (connect, relay).
    #[serde(default)]
    pub full_presence_s: f64,
    /// Presence frames the subscribers received, and their bytes (connect,
    /// following presence).
    #[serde(default)]
    pub presence_frames: u64,
    /// See `presence_frames`.
    #[serde(default)]
    pub presence_bytes: u64,
    /// The first error seen, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub first_error: String,
}

impl Report {
    /// The JSON line.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A readable table of the figures this scenario measures.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} ({})", self.name, self.scenario)),
            ("server", self.label.clone()),
        ];
        if let Some(t) = self.transport {
            rows.push(("transport", format!("{t:?}").to_lowercase()));
        }
        rows.push((
            "subscribers",
            format!(
                "{} over {} rooms ({} connected, {} failed)",
                self.subscribers, self.rooms, self.connected, self.failed
            ),
        ));
        match self.scenario.as_str() {
            "connect" => {
                rows.push(("connects/s", format!("{:.0}", self.connects_per_s)));
                if self.full_presence > 0 {
                    rows.push((
                        "full presence",
                        format!(
                            "{} of {} subscribers, the last after {:.3} s",
                            self.full_presence, self.connected, self.full_presence_s
                        ),
                    ));
                    rows.push((
                        "presence frames",
                        format!(
                            "{} ({:.1} MB)",
                            self.presence_frames,
                            self.presence_bytes as f64 / 1e6
                        ),
                    ));
                }
                rows.push((
                    "server RSS",
                    format!(
                        "{} KiB -> {} KiB, {:.0} B per connection",
                        self.rss_before_kib, self.rss_after_kib, self.rss_per_connection_b
                    ),
                ));
            }
            scenario => {
                rows.push((
                    "published",
                    format!(
                        "{} x {} B ({} errors), {:.0}/s{}",
                        self.published,
                        self.size,
                        self.publish_errors,
                        self.publishes_per_s,
                        self.rate
                            .map(|r| format!(", target {r}/s"))
                            .unwrap_or_default()
                    ),
                ));
                if scenario == "fanout" {
                    rows.push((
                        "delivered",
                        format!(
                            "{} of {}: lost {}, duplicates {}, wrong room {}, order mismatches {}",
                            self.delivered,
                            self.expected,
                            self.lost,
                            self.duplicates,
                            self.wrong_room,
                            self.order_mismatches
                        ),
                    ));
                    rows.push(("deliveries/s", format!("{:.0}", self.deliveries_per_s)));
                }
                let l = self.latency;
                rows.push((
                    "latency",
                    format!(
                        "p50 {} us, p90 {} us, p99 {} us, max {} us",
                        l.p50_us, l.p90_us, l.p99_us, l.max_us
                    ),
                ));
                rows.push((
                    "server CPU",
                    format!(
                        "{} ms, {:.2} us per {}",
                        self.server_cpu_ms,
                        self.server_cpu_us_per_op,
                        if scenario == "fanout" {
                            "delivery"
                        } else {
                            "publish"
                        }
                    ),
                ));
                rows.push(("generator CPU", format!("{} ms", self.client_cpu_ms)));
                rows.push(("elapsed", format!("{:.3} s", self.elapsed_s)));
            }
        }
        if !self.first_error.is_empty() {
            rows.push(("first error", self.first_error.clone()));
        }
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<14} {v}");
        }
        out
    }
}
