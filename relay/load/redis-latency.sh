#!/usr/bin/env bash
# A publish through a distant Redis (#16's cost model): two relays reach one
# redis-server through edgewire-load's delay-proxy, which adds RTT_MS to every
# round trip (half each way), as a Redis in another region would. For each
# RTT in RTTS it reports:
#   - POST publish latency (p50, p99) and throughput at 1, 16 and 64
#     concurrent publishers (100 rooms): each publish is one script call;
#   - delivery latency across instances: 100 WebSocket subscribers on relay
#     B over 10 rooms, 200 publishes/s POSTed to relay A.
# A benchmark, run by hand (not a test):
#
#   relay/load/redis-latency.sh                 # RTTS="direct 25"
#   RTTS="25 80" MESSAGES=4000 relay/load/redis-latency.sh
#
# `direct` connects the relays to Redis without the proxy; the proxy itself
# adds about 2 ms per round trip (its timer ticks), so "0" is not direct.
#
# The script installs redis-server when it is missing, builds the release
# binaries, and stops everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RTTS=${RTTS:-"direct 25"}
MESSAGES=${MESSAGES:-2000}
OUT=${OUT:-$ROOT/target/bench}
PORT_REDIS=${PORT_REDIS:-18579}
PORT_PROXY=${PORT_PROXY:-18580}
PORT_A=${PORT_A:-18581}
PORT_B=${PORT_B:-18582}

# shellcheck source=relay/load/redis-setup.sh
. "$ROOT/relay/load/redis-setup.sh"
TOKEN=$(EDGEWIRE_JWT_SECRET=$SECRET "$RELAY" token --sub latency --room '*=read,write' --ttl 1d)
export EDGEWIRE_LOAD_TOKEN=$TOKEN

redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
  --protected-mode no >"$OUT/redis-latency.log" 2>&1 &
PIDS+=("$!")
wait_port "$PORT_REDIS"

# field NAME: a number from the JSON report line on stdin.
field() { grep -o "\"$1\":[0-9.]*" | head -n 1 | cut -d: -f2; }

echo "| Redis RTT | publishers | publishes/s | p50 | p99 |"
echo "|---:|---:|---:|---:|---:|"
DELIVERY=()
for rtt in $RTTS; do
  if [ "$rtt" = direct ]; then
    redis_port=$PORT_REDIS
    PROXY=
  else
    "$LOAD" delay-proxy --listen "127.0.0.1:$PORT_PROXY" --upstream "127.0.0.1:$PORT_REDIS" \
      --rtt-ms "$rtt" &
    PROXY=$!
    PIDS+=("$PROXY")
    wait_port "$PORT_PROXY"
    redis_port=$PORT_PROXY
    rtt="$rtt ms"
  fi
  RELAYS=()
  for port in "$PORT_A" "$PORT_B"; do
    env EDGEWIRE_JWT_SECRET="$SECRET" EDGEWIRE_LISTEN="127.0.0.1:$port" \
      EDGEWIRE_REDIS_URL="redis://127.0.0.1:$redis_port/" EDGEWIRE_REDIS_PREFIX="lat${rtt%% *}" \
      EDGEWIRE_PUBLISH_RATE=1000000 EDGEWIRE_LOG=warn \
      "$RELAY" serve >>"$OUT/relay-latency-$port.log" 2>&1 &
    PIDS+=("$!")
    RELAYS+=("$!")
    wait_port "$port"
  done
  for publishers in 1 16 64; do
    report=$("$LOAD" publish --label "rtt${rtt%% *}" --rooms 100 --messages "$MESSAGES" \
      --publishers "$publishers" --size 64 \
      --pub-url "http://127.0.0.1:$PORT_A/rooms/{room}?token={token}" | tail -n 1)
    echo "| $rtt | $publishers | $(field publishes_per_s <<<"$report" | cut -d. -f1) |" \
      "$(( $(field p50_us <<<"$report") / 1000 )).$(( $(field p50_us <<<"$report") % 1000 / 100 )) ms |" \
      "$(( $(field p99_us <<<"$report") / 1000 )).$(( $(field p99_us <<<"$report") % 1000 / 100 )) ms |"
  done
  report=$("$LOAD" fanout --label "rtt${rtt%% *}" --rooms 10 --subs 100 --messages 1000 --rate 200 \
    --publishers 4 --size 64 --ready-marker welcome \
    --sub-url "ws://127.0.0.1:$PORT_B/rooms/{room}?token={token}" \
    --pub-url "http://127.0.0.1:$PORT_A/rooms/{room}?token={token}" | tail -n 1)
  DELIVERY+=("| $rtt | $(field delivered <<<"$report") of $(field expected <<<"$report") | $(( $(field p50_us <<<"$report") / 1000 )).$(( $(field p50_us <<<"$report") % 1000 / 100 )) ms | $(( $(field p99_us <<<"$report") / 1000 )).$(( $(field p99_us <<<"$report") % 1000 / 100 )) ms |")
  for pid in "${RELAYS[@]}" $PROXY; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
done
echo
echo "| Redis RTT | delivered across instances (A to B) | p50 | p99 |"
echo "|---:|---:|---:|---:|"
printf '%s\n' "${DELIVERY[@]}"
