# Sourced by the outside checkers' scripts (autobahn/, schemathesis/): starts
# the relay binary "$bin" on a free loopback port with a fresh secret and the
# settings given as arguments (NAME=value), waits until it accepts
# connections, and sets: work (a temp folder, removed on exit), port, token
# (for user "$checker" with the rights "$rights"). The relay is stopped on exit.
start_relay() {
  work="$(mktemp -d)"
  trap 'kill "${relay_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local secret="$checker-$(date +%s%N)"
  token="$(EDGEWIRE_JWT_SECRET="$secret" "$bin" token --sub "$checker" --room "*=$rights")"
  env EDGEWIRE_JWT_SECRET="$secret" EDGEWIRE_LISTEN="127.0.0.1:$port" EDGEWIRE_LOG=warn "$@" \
    "$bin" serve >"$work/relay.log" 2>&1 &
  relay_pid=$!
  for _ in $(seq 1 200); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  echo "$checker: the relay did not start:" >&2
  cat "$work/relay.log" >&2
  return 1
}
