#!/usr/bin/env bash
# The long form of the fault tests (docs/faults.md): a registration + login load while MongoDB
# failpoints (`failCommand`: transient errors, step-down codes, closed connections, write concern
# errors) fire one after another and the server steps down, CHAOS_ROUNDS times; then a private
# Redis Cluster (3 primaries, 3 replicas) loses a primary under a login load, once with ends of
# sessions waiting for a replica and once without. Each part starts its own servers and prints
# the answers by status, the slowest answer, the longest outage and what the checks found.
# Usage: scripts/chaos.sh            (CHAOS_ROUNDS=5 by default)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TEST_DATA_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/cs-um-chaos.XXXXXX")
export TEST_DATA_ROOT
trap 'stop_started_services; rm -rf "$TEST_DATA_ROOT"' EXIT

ensure_venv
ensure_redis
# The cluster part keeps its users in a SecantusDB of its own (the MongoDB part starts another).
MONGO_PORT=$(free_port)
start_secantus "$MONGO_PORT"
export TEST_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
export TEST_PYTHON="$VENV/bin/python" TEST_BACKEND=mongodb
export TEST_REDIS_HOST="$REDIS_TEST_HOST" TEST_REDIS_PORT="$REDIS_TEST_PORT"
cd "$ROOT"
failed=0
run() {
  local out status=0
  out=$(mktemp)
  timeout 1800 cargo test --all-features --locked --test api -- "$1" --nocapture --test-threads 1 \
    >"$out" 2>&1 || status=$?
  grep -E '^(mongodb faults|redis cluster failover|  |test |test result|thread .* panicked)' "$out" || true
  rm -f "$out"
  [ "$status" = 0 ] || failed=1
}
echo "== MongoDB failpoints and step-downs, ${CHAOS_ROUNDS:=5} rounds"
CHAOS_ROUNDS=$CHAOS_ROUNDS run faults::mongodb_failpoints
echo "== a Redis Cluster primary killed under a login load, ends waiting for one replica"
CHAOS_REDIS_WAIT_REPLICAS=1 run faults::a_redis_cluster
echo "== the same, ends answered without waiting"
CHAOS_REDIS_WAIT_REPLICAS=0 run faults::a_redis_cluster
exit "$failed"
