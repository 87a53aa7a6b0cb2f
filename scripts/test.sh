#!/usr/bin/env bash
# Runs the whole test suite twice, the same test functions on each pair of backends:
#   1. embedded: every service under test keeps its data in its own SQLite data directory;
#   2. servers: a SecantusDB (MongoDB wire protocol) started here in a pinned virtualenv, and a
#      Redis (the local one, or one started here).
# Headless Chromium (installed here if missing) renders the /ops page; Prometheus and promtool
# (installed here if missing) check and run the alert rules.
# Usage: scripts/test.sh [extra cargo test arguments]
# TEST_BACKENDS="embedded" (or "servers") runs one pass only.
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

for backend in ${TEST_BACKENDS:-embedded servers}; do
  echo "== tests on the $backend backend" >&2
  if [ "$backend" = servers ]; then
    ensure_redis
    MONGO_PORT=$(free_port)
    start_secantus "$MONGO_PORT"
    export TEST_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
    export TEST_REDIS_HOST="$REDIS_TEST_HOST" TEST_REDIS_PORT="$REDIS_TEST_PORT"
    TEST_BACKEND=mongodb timeout 3000 cargo test --workspace --all-features --locked "$@"
  else
    TEST_BACKEND=embedded timeout 3000 cargo test --workspace --all-features --locked "$@"
  fi
done
