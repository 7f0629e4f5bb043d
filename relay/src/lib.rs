//! Edgewire, a minimal edge relay: browser peers meet in rooms over WebSocket,
//! SSE or POST on one authenticated path; the relay fans out their messages and
//! tracks presence.
//!
//! Map of the modules, lowest layer first (`docs/architecture.md` has the
//! picture; `tests/integration/layers.rs` checks that no module uses one
//! above it):
//! - [`clock`]: the one clock (tokio's); [`redact`]: keeps tokens out of
//!   logs; [`metrics`]: Prometheus counters.
//! - [`protocol`]: names, ids, payloads, events (serialized once), control
//!   messages, ops, close codes and WebSocket frames.
//! - [`error`]: the contract's error codes, statuses and close codes in one
//!   place; [`topic`]: topic names and `+`/`*` filters; [`idempotency`]:
//!   retried writes happen once; [`pattern`]: room patterns; [`random`]: ids
//!   and jittered waits.
//! - [`config`]: settings from flags and environment, one table;
//!   [`shutdown`]: signals and the drain.
//! - [`auth`]: tokens (header, subprotocol, query), keys, room rights;
//!   [`guard`]: connection caps, auth-failure and publish limits;
//!   [`delivery`]: local fan-out (room rings, presence windows, inboxes).
//! - [`broker`]: the seam shared by relay instances (memory or Redis);
//!   [`token`]: minting tokens.
//! - [`hub`]: sessions, presence and rights over the broker.
//! - [`transport`]: WebSocket, SSE and HTTP adapters onto the hub.
//! - [`routes`]: the router; [`server`]: `serve`; [`cli`]: the `serve` and
//!   `token` commands.

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
