#!/usr/bin/env bash
# Runs the whole test suite against real services: a SecantusDB (MongoDB wire protocol) started
# here in a pinned virtualenv, and a Redis (the local one, or one started here); headless Chromium
# (installed here if missing) renders the /ops page.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started_services EXIT

ensure_venv
ensure_redis
ensure_chromium
MONGO_PORT=$(free_port)
start_secantus "$MONGO_PORT"

export TEST_MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT"
export TEST_REDIS_HOST="$REDIS_TEST_HOST" TEST_REDIS_PORT="$REDIS_TEST_PORT"
export TEST_PYTHON="$VENV/bin/python"
cd "$ROOT"
timeout 3000 cargo test --workspace --all-features --locked "$@"
