//! Integration tests over real sockets: one test binary, many modules.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod auth;
mod harness;
mod transcripts;
