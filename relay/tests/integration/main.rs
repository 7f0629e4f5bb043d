//! Integration tests over real sockets: one test binary, many modules.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auth;
mod broker_contract;
mod browser;
mod cli;
mod cluster;
mod codes;
mod deploy;
mod faults;
mod guard;
mod harness;
mod hostile;
mod http_edges;
mod idempotency;
mod instances;
mod layers;
mod liveness;
mod load_smoke;
mod openapi;
mod presence;
mod redis_cluster;
mod redis_server;
mod rights;
mod rooms;
mod topics;
mod transcripts;
mod wills;
