#!/usr/bin/env bash
# Runs the whole test suite twice, the same test functions on each pair of backends:
#   1. embedded: every service under test keeps its data in its own SQLite data directory;
#   2. servers: a SecantusDB (MongoDB wire protocol) started here in a pinned virtualenv, and a
#      Redis (the local one, or one started here);
#   3. cluster: the same SecantusDB with a 3-primary Redis Cluster started here on loopback, for
#      the tests of everything the token store holds (sessions, tokens, lockout, rate limit).
# Headless Chromium (installed here if missing) renders the /ops page; Prometheus and promtool
# (installed here if missing) check and run the alert rules.
# Usage: scripts/test.sh [extra cargo test arguments]
# TEST_BACKENDS="embedded" (or "servers", or "cluster") runs one pass only.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TEST_DATA_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/cs-um-test-data.XXXXXX")
export TEST_DATA_ROOT
cleanup() {
  stop_started_services
  rm -rf "$TEST_DATA_ROOT"
}
trap cleanup EXIT

ensure_venv
ensure_chromium
ensure_prometheus
export TEST_PYTHON="$VENV/bin/python"
cd "$ROOT"

# The tests that exercise the token store, run again on the Redis Cluster.
CLUSTER_TESTS=(sessions:: session_api:: tokens:: login:: invariants:: cross_instance:: key_rotation::
  edge::one_address_beyond edge::rate_limited edge::two_instances register:: identity:: verify::)

for backend in ${TEST_BACKENDS:-embedded servers cluster}; do
  echo "== tests on the $backend backend" >&2
  if [ "$backend" = servers ] || [ "$backend" = cluster ]; then
    ensure_redis
    if [ -z "${TEST_MONGODB_URI:-}" ]; then
      MONGO_PORT=$(free_port)
      start_secantus "$MONGO_PORT"
      export TEST_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
    fi
    export TEST_REDIS_HOST="$REDIS_TEST_HOST" TEST_REDIS_PORT="$REDIS_TEST_PORT"
  fi
  if [ "$backend" = servers ]; then
    TEST_BACKEND=mongodb timeout 3000 cargo test --workspace --all-features --locked "$@"
  elif [ "$backend" = cluster ]; then
    start_redis_cluster
    TEST_BACKEND=mongodb TEST_REDIS_CLUSTER_NODES="$REDIS_CLUSTER_NODES" timeout 1800 \
      cargo test --all-features --locked --test api "$@" -- "${CLUSTER_TESTS[@]}"
  else
    TEST_BACKEND=embedded timeout 3000 cargo test --workspace --all-features --locked "$@"
  fi
done
