#!/usr/bin/env bash
# Sets up and runs the service on this machine for development: uses MONGODB_URI if set, else
# starts a SecantusDB (MongoDB wire protocol, pinned in .venv) keeping its data in
# ./data/mongodb; uses REDIS_HOST if set, else the local Redis on 6379 (or starts one).
# Everything it started is stopped when the service exits (Ctrl-C).
# Usage: scripts/run.sh [--release]   (extra environment: see config/default.toml)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_started_services EXIT

if [ -z "${MONGODB_URI:-}" ]; then
  ensure_venv
  MONGO_PORT=$(free_port)
  start_secantus "$MONGO_PORT" "$ROOT/data/mongodb"
  export MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/credit_system?directConnection=true"
fi
if [ -z "${REDIS_HOST:-}" ]; then
  ensure_redis
  export REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT"
fi
cd "$ROOT"
cargo run --locked --release -- "$@"
