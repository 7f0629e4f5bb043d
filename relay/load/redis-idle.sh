#!/usr/bin/env bash
# What Redis-backed relays cost while nothing happens (#16): INSTANCES relays
# on one redis-server, ROOMS rooms each holding TOPICS retained topics,
# nobody connected, nothing published. Reports Redis commands per second,
# Redis CPU and each relay's CPU over WINDOW seconds. A benchmark, run by
# hand (not a test):
#
#   relay/load/redis-idle.sh                           # 2,000 rooms x 1 topic, 2 relays
#   ROOMS=10000 TOPICS=10 INSTANCES=3 relay/load/redis-idle.sh
#
# With PEERS=N it then holds N idle WebSocket peers over PEER_ROOMS rooms
# (spread over the relays) and measures the same while they sit there.
#
# Then, unless COSTS=0, it measures what one operation costs in Redis
# commands (those inside scripts counted) and in bytes into and out of Redis
# (pub/sub deliveries to the instances included), less the idle rate, and
# Redis CPU time per operation (clock ticks, so coarse for few ops): a
# publish, a retained set, and a WebSocket peer's join and leave.
#
# With CLUSTER=1 the relays use a Redis Cluster of three masters on
# loopback (redis+cluster:// URL) instead of one server; counts and CPU are
# summed over the three.
#
# The script installs redis-server when it is missing, builds the release
# binaries, and stops everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROOMS=${ROOMS:-2000}
TOPICS=${TOPICS:-1}
INSTANCES=${INSTANCES:-2}
WINDOW=${WINDOW:-10}
OUT=${OUT:-$ROOT/target/bench}
PORT_REDIS=${PORT_REDIS:-18479}
PORT_BASE=${PORT_BASE:-18180}

# shellcheck source=relay/load/redis-setup.sh
. "$ROOT/relay/load/redis-setup.sh"
TOKEN=$(EDGEWIRE_JWT_SECRET=$SECRET "$RELAY" token --sub idle --room '*=read,write,retain' --ttl 1d)
export EDGEWIRE_LOAD_TOKEN=$TOKEN

# CPU ticks (utime + stime) of a process.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLUSTER=${CLUSTER:-0}
if [ "$CLUSTER" = 1 ]; then
  REDIS_PORTS=("$PORT_REDIS" $((PORT_REDIS + 1)) $((PORT_REDIS + 2)))
else
  REDIS_PORTS=("$PORT_REDIS")
fi
# stat NAME: a counter of Redis's INFO stats, summed over the nodes.
stat() {
  local port total=0 v
  for port in "${REDIS_PORTS[@]}"; do
    v=$(redis-cli -p "$port" info stats | awk -F: -v n="$1" '$1 == n {print $2+0}')
    total=$((total + v))
  done
  echo "$total"
}
# Commands Redis has processed so far.
commands() { stat total_commands_processed; }
# Redis's CPU ticks, summed over the nodes.
redis_ticks() {
  local pid total=0
  for pid in "${REDIS_PIDS[@]}"; do total=$((total + $(ticks "$pid"))); done
  echo "$total"
}

REDIS_PIDS=()
CLUSTER_DIR=$(mktemp -d)
TEMP_DIRS+=("$CLUSTER_DIR")
for port in "${REDIS_PORTS[@]}"; do
  cluster_args=()
  [ "$CLUSTER" = 1 ] && cluster_args=(--cluster-enabled yes --cluster-config-file "$CLUSTER_DIR/nodes-$port.conf")
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode no --dir "$CLUSTER_DIR" "${cluster_args[@]}" >"$OUT/redis-idle-$port.log" 2>&1 &
  REDIS_PIDS+=("$!")
  PIDS+=("$!")
  wait_port "$port"
done
if [ "$CLUSTER" = 1 ]; then
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-yes >/dev/null
  until redis-cli -p "$PORT_REDIS" cluster info | grep -q cluster_state:ok; do sleep 0.2; done
  REDIS_URL="redis+cluster://$(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}" | sed 's/,$//')"
else
  REDIS_URL="redis://127.0.0.1:$PORT_REDIS/"
fi

RELAY_PIDS=()
for i in $(seq 0 $((INSTANCES - 1))); do
  port=$((PORT_BASE + i))
  env EDGEWIRE_JWT_SECRET="$SECRET" EDGEWIRE_LISTEN="127.0.0.1:$port" \
    EDGEWIRE_REDIS_URL="$REDIS_URL" EDGEWIRE_REDIS_PREFIX=idle \
    EDGEWIRE_PUBLISH_RATE=1000000 EDGEWIRE_MAX_TOPICS=100000 EDGEWIRE_LOG=warn \
    EDGEWIRE_MAX_CONNECTIONS_PER_USER=100000 EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS=100000 \
    EDGEWIRE_NEW_CONNECTIONS_PER_SECOND=1000000 \
    "$RELAY" serve >>"$OUT/relay-idle-$port.log" 2>&1 &
  PIDS+=("$!")
  RELAY_PIDS+=("$!")
  wait_port "$port"
done

echo "== filling $ROOMS rooms with $TOPICS retained topics each"
for t in $(seq 0 $((TOPICS - 1))); do
  "$LOAD" publish --label fill --room-prefix idle- --rooms "$ROOMS" --messages "$ROOMS" \
    --publishers 32 --size 64 \
    --pub-url "http://127.0.0.1:$PORT_BASE/rooms/{room}?topic=status/$t&retain=1&token={token}" \
    >"$OUT/redis-idle-fill.log" 2>&1
done

# measure_window: over WINDOW seconds, sets PER_S (Redis commands/s), REDIS_CPU
# and RELAYS_CPU (each relay's share, space-separated).
hz=$(getconf CLK_TCK)
cpu_share() { awk -v a="$1" -v b="$2" -v hz="$hz" -v w="$WINDOW" 'BEGIN {printf "%.1f%%", (b - a) * 100 / hz / w}'; }
measure_window() {
  local c0 r0 c1 r1 i
  local -a q0
  c0=$(commands); r0=$(redis_ticks)
  for i in "${!RELAY_PIDS[@]}"; do q0[$i]=$(ticks "${RELAY_PIDS[$i]}"); done
  sleep "$WINDOW"
  c1=$(commands); r1=$(redis_ticks)
  RELAYS_CPU=""
  for i in "${!RELAY_PIDS[@]}"; do
    RELAYS_CPU+="$(cpu_share "${q0[$i]}" "$(ticks "${RELAY_PIDS[$i]}")") "
  done
  PER_S=$(( (c1 - c0) / WINDOW ))
  REDIS_CPU=$(cpu_share "$r0" "$r1")
}
echo "== measuring ${WINDOW}s of idle"
sleep 2
measure_window
echo "| rooms | topics | instances | Redis commands/s | per instance | Redis CPU | each relay's CPU |"
echo "|---:|---:|---:|---:|---:|---:|---|"
echo "| $ROOMS | $((ROOMS * TOPICS)) | $INSTANCES | $PER_S | $((PER_S / INSTANCES)) | $REDIS_CPU | $RELAYS_CPU|"

PEERS=${PEERS:-0}
if [ "$PEERS" -gt 0 ]; then
  PEER_ROOMS=${PEER_ROOMS:-1000}
  ulimit -n "$(ulimit -Hn)"
  urls=()
  for i in $(seq 0 $((INSTANCES - 1))); do
    urls+=(--sub-url "ws://127.0.0.1:$((PORT_BASE + i))/rooms/{room}?token={token}")
  done
  # Held open for the wait, the window and a margin, then closed.
  "$LOAD" connect --label peers --room-prefix peer- --rooms "$PEER_ROOMS" --connections "$PEERS" \
    --sources 4 --ready-marker welcome --settle-ms $(( (WINDOW + 40) * 1000 )) "${urls[@]}" \
    >"$OUT/redis-idle-peers.log" 2>&1 &
  LOAD_PID=$!
  PIDS+=("$LOAD_PID")
  for _ in $(seq 1 600); do
    live=0
    for i in $(seq 0 $((INSTANCES - 1))); do
      n=$(curl -s "http://127.0.0.1:$((PORT_BASE + i))/metrics" |
        awk '/^edgewire_sessions\{transport="websocket"\}/ {print $2}')
      live=$((live + ${n:-0}))
    done
    [ "$live" -ge "$PEERS" ] && break
    sleep 0.1
  done
  sleep 2
  echo
  echo "| $PEERS idle peers over $PEER_ROOMS rooms | Redis commands/s | Redis CPU | each relay's CPU |"
  echo "|---|---:|---:|---|"
  measure_window
  echo "| connected ($live), idle | $PER_S | $REDIS_CPU | $RELAYS_CPU|"
  kill "$LOAD_PID" 2>/dev/null || true
  wait "$LOAD_PID" 2>/dev/null || true
  sleep 3
fi

[ "${COSTS:-1}" = 1 ] || exit 0
idle_per_s=$PER_S
# Bytes into and out of Redis per second while idle.
i0=$(stat total_net_input_bytes); o0=$(stat total_net_output_bytes)
sleep "$WINDOW"
idle_in=$(( ($(stat total_net_input_bytes) - i0) / WINDOW ))
idle_out=$(( ($(stat total_net_output_bytes) - o0) / WINDOW ))
echo
echo "Idle: $idle_in bytes/s into Redis, $idle_out bytes/s out, over ${WINDOW}s."
# cost NAME OPS COMMAND...: Redis commands and bytes per operation while
# COMMAND runs, less what idling costs over the same time.
cost() {
  local name=$1 ops=$2
  shift 2
  local c0 i0 o0 r0 t0 c1 i1 o1 r1 t1
  c0=$(commands); i0=$(stat total_net_input_bytes); o0=$(stat total_net_output_bytes)
  r0=$(redis_ticks); t0=$(date +%s%N)
  "$@" >"$OUT/redis-cost.log" 2>&1
  sleep 1 # what the operation set going in the background (leaves) lands
  c1=$(commands); i1=$(stat total_net_input_bytes); o1=$(stat total_net_output_bytes)
  r1=$(redis_ticks); t1=$(date +%s%N)
  awk -v n="$name" -v ops="$ops" -v s=$(( (t1 - t0) )) \
    -v c=$((c1 - c0)) -v ic="$idle_per_s" -v i=$((i1 - i0)) -v ii="$idle_in" \
    -v o=$((o1 - o0)) -v io="$idle_out" -v r=$((r1 - r0)) -v hz="$hz" \
    'BEGIN {w = s / 1e9; printf "| %s | %.1f | %.0f | %.0f | %.0f |\n", n, (c - ic * w) / ops, (i - ii * w) / ops, (o - io * w) / ops, r * 1e6 / hz / ops}'
}
N=${OPS:-2000}
echo
echo "| operation | Redis commands per operation | bytes into Redis | bytes out of Redis | Redis CPU µs |"
echo "|---|---:|---:|---:|---:|"
cost "publish (POST, 100 rooms)" "$N" "$LOAD" publish --label cost --room-prefix cost- --rooms 100 \
  --messages "$N" --publishers 8 --size 64 \
  --pub-url "http://127.0.0.1:$PORT_BASE/rooms/{room}?token={token}"
cost "retained set (POST retain=1, 100 rooms)" "$N" "$LOAD" publish --label cost --room-prefix cost- \
  --rooms 100 --messages "$N" --publishers 8 --size 64 \
  --pub-url "http://127.0.0.1:$PORT_BASE/rooms/{room}?topic=t&retain=1&token={token}"
cost "WebSocket peer: join, then leave (1,000 over 100 rooms)" 1000 "$LOAD" connect --label cost \
  --room-prefix peers- --rooms 100 --connections 1000 --ready-marker welcome --settle-ms 0 \
  --sub-url "ws://127.0.0.1:$PORT_BASE/rooms/{room}?token={token}"
