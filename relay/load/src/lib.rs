//! `edgewire-load`: a load generator for relays that speak WebSocket, SSE and
//! HTTP POST on URL templates (Edgewire, Nchan and alike). Scenarios:
//! `fanout` (subscribers over rooms, publishers POSTing stamped messages),
//! `connect` (many idle subscribers, the server's RSS before and after) and
//! `publish` (POST throughput with no subscribers); `delay-proxy` makes a
//! loopback Redis answer like a distant one. Each run yields a
//! [`Report`]: one JSON line and a readable table.

pub mod compare;
pub mod connect;
pub mod delay;
pub mod fanout;
pub mod payload;
pub mod presence;
pub mod procstat;
pub mod publish;
pub mod publisher;
pub mod report;
pub mod stats;
pub mod subscriber;
pub mod target;

pub use report::Report;

use serde::{Deserialize, Serialize};

/// How subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket: one message per text frame.
    Ws,
    /// Server-Sent Events: one message per `data:` line.
    Sse,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A URL template that is not `ws://` or `http://` with a host.
    #[error("bad URL template: {0}")]
    Url(String),
    /// A TCP connection or name lookup failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// A handshake or request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with a status other than success.
    #[error("unexpected status {0}")]
    Status(u16),
    /// Subscribers did not all connect within the deadline.
    #[error(
        "only {ready} of {wanted} subscribers were ready after {seconds} s ({failed} failed: {first_error})"
    )]
    NotReady {
        /// Subscribers ready.
        ready: u64,
        /// Subscribers asked for.
        wanted: u64,
        /// Subscribers that failed.
        failed: u64,
        /// Seconds waited.
        seconds: u64,
        /// The first failure seen.
        first_error: String,
    },
}
