#!/usr/bin/env bash
# Where a connect's microseconds go: starts a release relay, opens N idle
# connections in rooms of PER (64 loopback source addresses) while `perf`
# samples the relay, and groups the samples into the steps of a connect
# (system calls by name, user time by crate) scaled to the relay's CPU per
# connection.
#
#   relay/load/connect-profile.sh [N] [PER] [ws|sse]    # default 10000 1 ws
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000} PER=${2:-1} TRANSPORT=${3:-ws}
PORT=${PORT:-18097} OUT=${OUT:-target/bench/profile}
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --locked -q -p edgewire -p edgewire-load
mkdir -p "$OUT"
SECRET=$(cat fixtures/keys/hs.secret)
TOKEN=$(EDGEWIRE_JWT_SECRET=$SECRET target/release/edgewire token --sub bench --room '*=read,write' --ttl 1d)
ulimit -n "$(ulimit -Hn)"
env EDGEWIRE_JWT_SECRET="$SECRET" EDGEWIRE_LISTEN="127.0.0.1:$PORT" \
  EDGEWIRE_MAX_CONNECTIONS=100000 EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS=100000 \
  EDGEWIRE_MAX_CONNECTIONS_PER_USER=100000 EDGEWIRE_NEW_CONNECTIONS_PER_SECOND=1000000 \
  EDGEWIRE_SHUTDOWN_GRACE=1s EDGEWIRE_LOG=warn target/release/edgewire serve >"$OUT/relay.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
# shellcheck source=relay/load/wait-port.sh
. relay/load/wait-port.sh
wait_port "$PORT"
# Sampled for about the connect phase only (not the clients' hang-up after).
perf record -F 4999 -g -p "$PID" -o "$OUT/perf.data" -- sleep "${PERF_SECS:-0.5}" 2>/dev/null &
PERF=$!
sleep 0.2
scheme=http
[ "$TRANSPORT" = ws ] && scheme=ws
target/release/edgewire-load connect --name profile --label edgewire --server-pid "$PID" \
  --transport "$TRANSPORT" --connections "$N" --rooms $((N / PER > 0 ? N / PER : 1)) --sources 64 \
  --settle-ms 200 --ready-marker welcome --token "$TOKEN" \
  --sub-url "$scheme://127.0.0.1:$PORT/rooms/{room}?token={token}" --out "$OUT/result.jsonl" | sed '$d'
wait $PERF || true
CPU_MS=$(tail -n 1 "$OUT/result.jsonl" | grep -o '"server_cpu_ms":[0-9]*' | cut -d: -f2)
python3 relay/load/perf-breakdown.py "$OUT/perf.data" "$(( CPU_MS * 1000 / N ))"
