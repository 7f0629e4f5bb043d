# Shared by the Redis benchmark scripts (sourced from the repository root,
# with ROOT and OUT set): installs redis-server when it is missing, builds
# the release binaries (RELAY, LOAD), reads the test secret (SECRET), and
# when the script exits kills the processes in PIDS and removes the folders
# in TEMP_DIRS. Brings wait_port along.
command -v redis-server >/dev/null || {
  echo "== installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}
echo "== building (release)"
cargo build --release --locked -p edgewire -p edgewire-load 2>&1 | tail -n 1
RELAY=$ROOT/target/release/edgewire
LOAD=$ROOT/target/release/edgewire-load
mkdir -p "$OUT"
SECRET=$(cat fixtures/keys/hs.secret)

PIDS=()
TEMP_DIRS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for dir in "${TEMP_DIRS[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

# shellcheck source=relay/load/wait-port.sh
. "$ROOT/relay/load/wait-port.sh"
