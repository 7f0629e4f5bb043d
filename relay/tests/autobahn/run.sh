#!/usr/bin/env bash
# Autobahn|Testsuite's fuzzingclient against the relay (RFC 6455 conformance).
# The relay is not an echo server: cases that expect their messages echoed
# are informational; every other case must pass (judge.py decides and prints
# the per-case table that relay/docs/autobahn.md records).
# Usage: relay/tests/autobahn/run.sh [RELAY_BINARY] [TABLE_OUT]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin="${1:-$root/target/release/edgewire}"
table="${2:-}"

# Autobahn 0.8.2 runs on Python 2.7 (pyenv has it on these machines).
py2=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 "$(command -v python2.7 || true)"; do
  # A pyenv shim exists even where no 2.7 is active: keep one that runs.
  if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
    py2="$candidate"
    break
  fi
done
if [ -z "$py2" ]; then
  echo "autobahn: no Python 2.7 found (pyenv install 2.7.18)" >&2
  exit 1
fi
bindir="$(dirname "$py2")"
if ! "$py2" -c 'import autobahntestsuite' >/dev/null 2>&1; then
  echo "== installing autobahntestsuite 0.8.2 (Python 2.7)"
  "$py2" -m pip install --quiet --disable-pip-version-check \
    autobahntestsuite==0.8.2 autobahn==0.10.9 Twisted==20.3.0 2>&1 | grep -v DEPRECATION || true
fi

# Large messages (Autobahn sends up to 16 MiB) and no publish limit: this run
# checks framing, not the relay's policies. A topic watch sends no welcome.
checker=autobahn rights=read,write
# shellcheck source=../relay-for-checkers.sh
source "$here/../relay-for-checkers.sh"
start_relay EDGEWIRE_MAX_MESSAGE_BYTES=16777216 EDGEWIRE_PUBLISH_RATE=1000000
cat >"$work/spec.json" <<JSON
{"outdir": "$work/reports",
 "servers": [{"agent": "edgewire", "url": "ws://127.0.0.1:$port/rooms/autobahn/topics/nothing?token=$token"}],
 "cases": ["*"],
 "exclude-cases": ["9.*", "12.*", "13.*"],
 "exclude-agent-cases": {}}
JSON
echo "== autobahn fuzzingclient (cases 1-7 and 10; 9 is performance, 12-13 compression)"
(cd "$work" && "$bindir/wstest" -m fuzzingclient -s spec.json >"$work/wstest.log" 2>&1) || {
  tail -n 20 "$work/wstest.log" >&2
  exit 1
}
python3 "$here/judge.py" "$work/reports" ${table:+--table "$table"}
