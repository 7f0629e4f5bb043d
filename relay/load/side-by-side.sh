#!/usr/bin/env bash
# Edgewire beside Nchan on this machine, in one run: installs Nchan (Debian's
# libnginx-mod-nchan) and redis-server when missing, builds the relay and the
# load generator (release), starts both servers on loopback with equivalent
# settings, runs every scenario against each in turn, and prints the ratio
# table (also written to $OUT/table.md; the raw report lines are in
# $OUT/results.jsonl).
#
#   relay/load/side-by-side.sh            # full run, about 10 minutes
#   QUICK=1 relay/load/side-by-side.sh    # smaller counts, for a first look
#   ONLY=fanout relay/load/side-by-side.sh  # only scenarios whose name matches
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench}
REPEAT=${REPEAT:-2}
ONLY=${ONLY:-}
QUICK=${QUICK:-0}
# The most idle connections one process may hold here: the open-files limit
# (20 000 on this machine) less what the servers and the generator use.
MAX_IDLE=${MAX_IDLE:-19000}
if [ "$QUICK" = 1 ]; then
  SUBS=200 MSGS_1=200 MSGS_100=4000 IDLE=2000 MAX_IDLE=0 PACED=100 POSTS=5000 REPEAT=1
  CONNECTS=2000 STORM=2000
else
  SUBS=1000 MSGS_1=600 MSGS_100=30000 IDLE=10000 PACED=300 POSTS=40000
  CONNECTS=10000 STORM=$MAX_IDLE
fi

PORT_RELAY=18080 PORT_NCHAN=18081
PORT_RELAY_A=18082 PORT_RELAY_B=18083 PORT_NCHAN_A=18084 PORT_NCHAN_B=18085
PORT_REDIS=18379 PORT_REDIS_NCHAN=18380

need_install=()
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need_install+=(nginx-light libnginx-mod-nchan)
command -v redis-server >/dev/null || need_install+=(redis-server)
if [ ${#need_install[@]} -gt 0 ]; then
  echo "== installing ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null
fi
# Debian starts nginx on port 80 when it installs it where an init runs; ours
# runs from its own prefix, so a system nginx does not matter.

echo "== building (release)"
cargo build --release --locked -p edgewire -p edgewire-load 2>&1 | tail -n 1
RELAY=$ROOT/target/release/edgewire
LOAD=$ROOT/target/release/edgewire-load

ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
SECRET=$(cat fixtures/keys/hs.secret)
TOKEN=$(EDGEWIRE_JWT_SECRET=$SECRET "$RELAY" token --sub bench --room '*=read,write' --ttl 1d)
export EDGEWIRE_LOAD_TOKEN=$TOKEN

# Servers are started inside $(...), so their pids are kept in a file.
STARTED=$OUT/started.pids
: > "$STARTED"
cleanup() {
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$STARTED"
}
trap cleanup EXIT

# shellcheck source=relay/load/wait-port.sh
. "$ROOT/relay/load/wait-port.sh"

# start_relay PORT [REDIS_URL]: the relay with limits lifted for the bench
# (one token opens every connection, from four loopback addresses).
start_relay() {
  local port=$1 redis=${2:-}
  env EDGEWIRE_JWT_SECRET="$SECRET" EDGEWIRE_LISTEN="127.0.0.1:$port" \
    EDGEWIRE_MAX_CONNECTIONS=100000 EDGEWIRE_MAX_CONNECTIONS_PER_ADDRESS=100000 \
    EDGEWIRE_MAX_CONNECTIONS_PER_USER=100000 EDGEWIRE_NEW_CONNECTIONS_PER_SECOND=1000000 \
    EDGEWIRE_PUBLISH_RATE=1000000 EDGEWIRE_SHUTDOWN_GRACE=1s EDGEWIRE_LOG=warn \
    EDGEWIRE_PRESENCE_WINDOW="${PRESENCE_WINDOW:-50ms}" \
    ${redis:+EDGEWIRE_REDIS_URL=$redis} \
    "$RELAY" serve >>"$OUT/relay-$port.log" 2>&1 &
  local pid=$!
  echo "$pid" >>"$STARTED"
  wait_port "$port"
  echo "$pid"
}

# start_nchan PORT [REDIS_URL]: nginx with Nchan, one pub/sub location on the
# room path; memory storage, or Redis storage when a URL is given. Message
# buffer as the relay's history (1000 messages, 10 minutes).
start_nchan() {
  local port=$1 redis=${2:-} dir=$OUT/nchan-$1
  rm -rf "$dir" && mkdir -p "$dir/logs"
  local storage=""
  if [ -n "$redis" ]; then
    storage="nchan_redis_url \"$redis\"; nchan_use_redis on;"
  fi
  cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes auto;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
daemon off;
events { worker_connections 20000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location ~ ^/rooms/([^/]+)\$ {
      nchan_pubsub;
      nchan_channel_id \$1;
      nchan_message_buffer_length 1000;
      nchan_message_timeout 10m;
      nchan_subscriber_first_message newest;
      $storage
    }
  }
}
EOF
  nginx -c "$dir/nginx.conf" -p "$dir" >>"$dir/logs/out.log" 2>&1 &
  local master=$!
  echo "$master" >>"$STARTED"
  wait_port "$port"
  # Measure the master and its workers (one per core), once all are forked.
  local workers=""
  for _ in $(seq 1 200); do
    workers=$(pgrep -d, -P "$master" || true)
    [ "$(echo "$workers" | tr ',' '\n' | grep -c .)" -ge "$(nproc)" ] && break
    sleep 0.05
  done
  echo "$master,$workers"
}

stop_pids() {
  local pids=$1
  for pid in ${pids//,/ }; do kill "$pid" 2>/dev/null || true; done
  for pid in ${pids//,/ }; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  done
}

start_redis() {
  local port=$1
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --loglevel warning >>"$OUT/redis-$port.log" 2>&1 &
  echo $! >>"$STARTED"
  wait_port "$port"
}

urls() { # urls LABEL TRANSPORT PORT...: --sub-url/--pub-url flags
  local label=$1 transport=$2; shift 2
  local query="" scheme=http
  [ "$label" = edgewire ] && query='?token={token}'
  [ "$transport" = ws ] && scheme=ws
  for port in "$@"; do
    printf -- '--sub-url\n%s://127.0.0.1:%s/rooms/{room}%s\n' "$scheme" "$port" "$query"
    printf -- '--pub-url\nhttp://127.0.0.1:%s/rooms/{room}%s\n' "$port" "$query"
  done
}

selected() { [ -z "$ONLY" ] || [[ "$1" == *$ONLY* ]]; }

# fanout NAME LABEL PIDS TRANSPORT ROOMS SUBS MESSAGES [RATE] -- PORTS...
fanout() {
  local name=$1 label=$2 pids=$3 transport=$4 rooms=$5 subs=$6 messages=$7 rate=$8
  shift 9
  selected "$name" || return 0
  local extra=()
  [ "$label" = edgewire ] && extra+=(--ready-marker welcome)
  [ "$rate" != - ] && extra+=(--rate "$rate" --publishers 1)
  [ "$rate" = - ] && extra+=(--publishers "${PUBLISHERS:-8}")
  mapfile -t url_flags < <(urls "$label" "$transport" "$@")
  echo "== $name: $label"
  "$LOAD" fanout --name "$name" --label "$label" --server-pid "$pids" \
    --transport "$transport" --rooms "$rooms" --subs "$subs" --messages "$messages" \
    --size 128 --sources 4 --out "$RESULTS" "${extra[@]}" "${url_flags[@]}" | sed '$d'
}

# connect NAME LABEL PIDS TRANSPORT N [PEERS_PER_ROOM] -- PORT
# Connections come from 64 loopback addresses: the generator binds each
# socket to its source address, and bind(ip, 0) searches that address's
# ports past every socket in TIME_WAIT. With 4 addresses, the runs before
# left enough of them that the generator spent 20 s of kernel time finding
# ports and connects/s fell from 18,000 to under 1,000, at random.
connect() {
  local name=$1 label=$2 pids=$3 transport=$4 n=$5 per=100
  shift 5
  if [ "$1" != -- ]; then per=$1; shift; fi
  shift
  selected "$name" || return 0
  local extra=()
  [ "$label" = edgewire ] && extra+=(--ready-marker welcome)
  # In a storm, the relay's subscribers also wait until they see everyone.
  [ "$label" = edgewire ] && [[ "$name" == storm* ]] && extra+=(--follow-presence)
  mapfile -t url_flags < <(urls "$label" "$transport" "$@" | grep -A1 -- --sub-url | grep -v -- '^--$')
  echo "== $name: $label"
  "$LOAD" connect --name "$name" --label "$label" --server-pid "$pids" \
    --transport "$transport" --connections "$n" --rooms $((n / per > 0 ? n / per : 1)) \
    --sources 64 --settle-ms 1500 --out "$RESULTS" "${extra[@]}" "${url_flags[@]}" | sed '$d'
}

# publish NAME LABEL PIDS -- PORT
publish() {
  local name=$1 label=$2 pids=$3
  shift 4
  selected "$name" || return 0
  mapfile -t url_flags < <(urls "$label" ws "$@" | grep -A1 -- --pub-url | grep -v -- '^--$')
  echo "== $name: $label"
  "$LOAD" publish --name "$name" --label "$label" --server-pid "$pids" \
    --rooms 100 --messages "$POSTS" --publishers 8 --size 128 --out "$RESULTS" "${url_flags[@]}" | sed '$d'
}

echo "== memory storage: relay :$PORT_RELAY, nchan :$PORT_NCHAN"
for round in $(seq 1 "$REPEAT"); do
  for transport in ws sse; do
    for label in edgewire nchan; do
      if [ "$label" = edgewire ]; then pids=$(start_relay $PORT_RELAY); port=$PORT_RELAY
      else pids=$(start_nchan $PORT_NCHAN); port=$PORT_NCHAN; fi
      fanout "fanout 1x$SUBS $transport" $label "$pids" $transport 1 "$SUBS" "$MSGS_1" - -- $port
      # Large rooms at other publish concurrencies (the default above is 8).
      for publishers in 1 4 32; do
        PUBLISHERS=$publishers fanout "fanout 1x$SUBS $transport $publishers publishers" $label "$pids" $transport 1 "$SUBS" "$MSGS_1" - -- $port
      done
      fanout "fanout 100x$((SUBS / 100)) $transport" $label "$pids" $transport 100 "$SUBS" "$MSGS_100" - -- $port
      fanout "paced 50/s 1x$SUBS $transport" $label "$pids" $transport 1 "$SUBS" "$PACED" 50 -- $port
      [ "$transport" = ws ] && publish "publish" $label "$pids" -- $port
      stop_pids "$pids"
    done
  done
done

# RSS per idle connection, each on a fresh server so freed memory of an
# earlier scenario does not hide growth.
for n in "$IDLE" "$MAX_IDLE"; do
  [ "$n" -gt 0 ] || continue
  for transport in ws sse; do
    # A scenario left out by ONLY starts no server.
    selected "idle $n $transport" || continue
    for label in edgewire nchan; do
      if [ "$label" = edgewire ]; then pids=$(start_relay $PORT_RELAY); port=$PORT_RELAY
      else pids=$(start_nchan $PORT_NCHAN); port=$PORT_NCHAN; fi
      connect "idle $n $transport" $label "$pids" $transport "$n" -- $port
      stop_pids "$pids"
    done
  done
done

# Connection rate in rooms of 1, 10 and 100 peers, and a reconnect storm:
# $STORM clients in rooms of 100 connecting at once, with presence coalesced
# (the default 50 ms window) and without it (EDGEWIRE_PRESENCE_WINDOW=0, as
# before coalescing). Nchan has no presence: its figures are the same run.
for per in 1 10 100; do
  for transport in ws sse; do
    selected "connect $CONNECTS rooms of $per $transport" || continue
    for label in edgewire nchan; do
      if [ "$label" = edgewire ]; then pids=$(start_relay $PORT_RELAY); port=$PORT_RELAY
      else pids=$(start_nchan $PORT_NCHAN); port=$PORT_NCHAN; fi
      connect "connect $CONNECTS rooms of $per $transport" $label "$pids" $transport "$CONNECTS" "$per" -- $port
      stop_pids "$pids"
    done
  done
done
for window in 0 50ms; do
  for transport in ws sse; do
    selected "storm $STORM rooms of 100 $transport presence window $window" || continue
    for label in edgewire nchan; do
      if [ "$label" = edgewire ]; then pids=$(PRESENCE_WINDOW=$window start_relay $PORT_RELAY); port=$PORT_RELAY
      else pids=$(start_nchan $PORT_NCHAN); port=$PORT_NCHAN; fi
      connect "storm $STORM rooms of 100 $transport presence window $window" $label "$pids" $transport "$STORM" 100 -- $port
      stop_pids "$pids"
    done
  done
done

echo "== Redis storage: relays :$PORT_RELAY_A+:$PORT_RELAY_B, nchans :$PORT_NCHAN_A+:$PORT_NCHAN_B"
start_redis $PORT_REDIS
start_redis $PORT_REDIS_NCHAN
for round in $(seq 1 "$REPEAT"); do
  for transport in ws sse; do
    selected "fanout 1x$SUBS $transport redis" || selected "fanout 100x$((SUBS / 100)) $transport redis" || continue
    for label in edgewire nchan; do
      if [ "$label" = edgewire ]; then
        a=$(start_relay $PORT_RELAY_A redis://127.0.0.1:$PORT_REDIS)
        b=$(start_relay $PORT_RELAY_B redis://127.0.0.1:$PORT_REDIS)
        ports=($PORT_RELAY_A $PORT_RELAY_B)
      else
        a=$(start_nchan $PORT_NCHAN_A redis://127.0.0.1:$PORT_REDIS_NCHAN)
        b=$(start_nchan $PORT_NCHAN_B redis://127.0.0.1:$PORT_REDIS_NCHAN)
        ports=($PORT_NCHAN_A $PORT_NCHAN_B)
      fi
      # The Redis servers' CPU is not counted for either: both pay it.
      fanout "fanout 1x$SUBS $transport redis" $label "$a,$b" $transport 1 "$SUBS" "$MSGS_1" - -- "${ports[@]}"
      fanout "fanout 100x$((SUBS / 100)) $transport redis" $label "$a,$b" $transport 100 "$SUBS" "$MSGS_100" - -- "${ports[@]}"
      stop_pids "$a,$b"
    done
  done
done

# The kernel's floor for small-room fan-out: one 250-byte write per
# delivery on loopback TCP, from a C program with no relay (see its header).
if command -v cc >/dev/null; then
  cc -O2 -pthread -o "$OUT/kernel-floor" relay/load/floor/kernel-floor.c
  echo "== kernel floor: 250 B frames to 1000 loopback sockets, 1 and 4 frames per writev"
  for batch in 1 4; do "$OUT/kernel-floor" 1000 400000 250 "$batch" | tee -a "$OUT/floor.jsonl"; done
fi

echo
echo "== Edgewire beside Nchan ($(nproc) cores, $(uname -r), nginx $(nginx -v 2>&1 | sed 's/.*\///'))"
"$LOAD" compare "$RESULTS" | tee "$OUT/table.md"
