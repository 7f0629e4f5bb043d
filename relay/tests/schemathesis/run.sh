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

work="$(mktemp -d)"
cleanup() {
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
secret="schemathesis-$(date +%s%N)"
token="$(EDGEWIRE_JWT_SECRET="$secret" "$bin" token --sub schemathesis --room '*=read,write,retain')"
# No publish limit: generated requests come fast from one user.
EDGEWIRE_JWT_SECRET="$secret" EDGEWIRE_LISTEN="127.0.0.1:$port" EDGEWIRE_PUBLISH_RATE=1000000 \
  EDGEWIRE_LOG=warn "$bin" serve >"$work/relay.log" 2>&1 &
relay_pid=$!
for _ in $(seq 1 200); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then break; fi
  sleep 0.05
done
echo "== schemathesis ($examples examples per operation)"
# Accept: application/json asks for the JSON answers: the event streams
# (text/event-stream) never end, and are tested over real sockets elsewhere.
cd "$work"
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "$root/relay/docs/openapi.json" \
  --url "http://127.0.0.1:$port" \
  -H "Authorization: Bearer $token" -H "Accept: application/json" \
  --max-examples "$examples" --no-shrink
