#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the Rust unit and
# integration tests (real sockets, in-process relays, the real binary, real
# redis-server processes), the JS SDK's tests, and a short fuzzing pass.
# Installs what the tests need, idempotently; safe to run on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real redis-server processes are started by the tests, and the SDK's browser
# tests drive Debian's chromium (never a downloaded browser).
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
if [ -n "$missing" ]; then
  echo "== installing$missing"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The package may start a system service; the tests never use it (each starts
# its own server on a free port), so it is left as it is.

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

# The README's first command is `cargo run --release -- serve`; its test
# (relay/tests/readme.rs) runs that command as written, so the release build
# is made here once, where its time is plain to see.
echo "== cargo build --release"
cargo build --locked --release

echo "== cargo test"
cargo test --locked --workspace --all-targets

# RFC 6455 conformance of the release binary: Autobahn|Testsuite's
# fuzzingclient (Python 2.7 from pyenv; the script installs the suite).
# Cases that expect an echo are informational; every other case must pass.
relay/tests/autobahn/run.sh target/release/edgewire

# The HTTP API against its OpenAPI document (relay/docs/openapi.json):
# Schemathesis, 30 generated requests per operation, every check.
relay/tests/schemathesis/run.sh target/release/edgewire 30

# Known vulnerabilities in the dependency tree: cargo-deny against the RustSec
# advisory database snapshot beside the checkout (../shared, a git repository;
# the network to its home is closed here, so it is used offline and its age is
# expected). The snapshot is unpacked into a temp folder, never committed.
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "== installing cargo-deny"
  cargo install cargo-deny --locked --quiet
fi
echo "== cargo deny check advisories (offline)"
advisories=../shared/advisory-db.tar.gz
if [ ! -f "$advisories" ]; then
  echo "missing $advisories (the RustSec snapshot beside the checkout)" >&2
  exit 1
fi
dbs=$(mktemp -d)
trap 'rm -rf "$dbs"' EXIT
tar xzf "$advisories" -C "$dbs"
# cargo-deny finds the default database under <db-path>/advisory-db-<hash of its URL>.
mv "$dbs/advisory-db" "$dbs/advisory-db-3157b0e258782691"
printf '[advisories]\ndb-path = "%s"\ndb-urls = ["https://github.com/rustsec/advisory-db"]\nmaximum-db-staleness = "P3650D"\n' \
  "$dbs" > "$dbs/deny.toml"
# Metadata for every target must resolve offline: fetch the locked crates first.
cargo fetch --locked --quiet
cargo deny --offline --config "$dbs/deny.toml" check advisories

# The JS SDK: build, unit tests, and tests against the relay binary that
# cargo test has just built (node and npm come with the machine).
echo "== sdk-js"
(cd sdk-js && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent && npm test --silent)

# A short bounded fuzzing pass over the parsers clients reach (op frames,
# topics and filters, token extraction and verification, WebSocket frames). cargo-fuzz needs
# nightly flags; the machine has only the stable toolchain, so RUSTC_BOOTSTRAP
# enables them for this build alone. Longer runs: see README, "Fuzzing".
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
# --dev skips optimisation: it halves the build (about 3 min on 2 cores) at
# the cost of fewer runs per second, which suits a smoke pass. Long runs use
# the optimised build (README, "Fuzzing").
echo "== cargo fuzz (5 s per target)"
for target in ops topics tokens ws_frames; do
  (cd relay && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" -- -max_total_time=5 2>&1 | tail -n 1)
done
echo "fuzz: 4 passed, 0 failed"
