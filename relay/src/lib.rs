//! Edgewire, a minimal edge relay: browser peers meet in rooms over WebSocket,
//! SSE or POST on one authenticated path; the relay fans out their messages and
//! tracks presence.
//!
//! Map of the modules:
//! - [`config`]: settings from flags and environment, one table.
//! - [`auth`]: tokens (header, subprotocol, query), keys, room rights.
//! - [`protocol`]: names, ids, ops and events (serialized once), close codes.
//! - [`topic`]: topic names and `+`/`*` filters.
//! - [`guard`]: admission control: connection caps, auth-failure and publish limits.
//! - [`error`]: the contract's error codes, statuses and close codes in one place.
//! - [`idempotency`]: keys that make a retried write happen once.
//! - [`hub`]: sessions, presence and rights over the broker; local fan-out.
//! - [`broker`]: the seam shared by relay instances (memory today).
//! - [`transport`]: WebSocket, SSE and HTTP adapters onto the hub.
//! - [`routes`]: the router; [`server`]: `serve`; [`shutdown`]: signals.
//! - [`redact`]: keeps tokens out of logs.
//! - [`metrics`]: Prometheus counters; [`cli`]: the `serve` and `token` commands.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod guard;
pub mod hub;
pub mod idempotency;
pub mod metrics;
pub mod pattern;
pub mod protocol;
pub mod random;
pub mod redact;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod token;
pub mod topic;
pub mod transport;

pub use config::Config;
pub use server::{Relay, ServeError, serve};
