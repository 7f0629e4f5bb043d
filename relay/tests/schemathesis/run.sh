#!/usr/bin/env bash
# Schemathesis against a live relay: every operation of relay/docs/openapi.json
# with a bounded number of generated requests (positive and negative), every
# check (no 5xx, documented status codes, content types, headers and bodies,
# valid input accepted, invalid input refused). Settings: schemathesis.toml.
# Usage: relay/tests/schemathesis/run.sh [RELAY_BINARY] [EXAMPLES_PER_OPERATION]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin="${1:-$root/target/release/edgewire}"
examples="${2:-30}"
version="4.32.5"

# A virtualenv of its own, kept under target/ between runs.
venv="$root/target/schemathesis-venv"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$version"; then
  echo "== installing schemathesis $version"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

# No publish limit: generated requests come fast from one user.
checker=schemathesis rights=read,write,retain
# shellcheck source=../relay-for-checkers.sh
source "$here/../relay-for-checkers.sh"
start_relay EDGEWIRE_PUBLISH_RATE=1000000
echo "== schemathesis ($examples examples per operation)"
# Accept: application/json asks for the JSON answers: the event streams
# (text/event-stream) never end, and are tested over real sockets elsewhere.
cd "$work"
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "$root/relay/docs/openapi.json" \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" -H "Accept: application/json" \
  --max-examples "$examples" --no-shrink
