//! Integration tests over real sockets: one test binary, many modules.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auth;
mod cli;
mod codes;
mod harness;
mod rooms;
mod transcripts;
