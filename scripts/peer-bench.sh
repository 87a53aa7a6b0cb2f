#!/usr/bin/env bash
# Side by side with the FastAPI-Users peer (../shared/peers), in one run on one machine, both on
# SecantusDB (each its own server), bcrypt cost 10, no rate limit, driven by the peer's own wrk
# harness (loadtest.py) with the same request mix:
#   - logins/s and p99 at c=16 and c=64: three alternating runs each (ours, the peer's, ...),
#     the median reported; registrations/s at c=16 likewise;
#   - a concurrency sweep (1, 4, 16, 64, 256) of logins and of the "me" read, one run per level
#     and service, drawn as docs/peer-sweep.svg (throughput and p99 per level).
# Writes the section "Beside the FastAPI-Users peer" of docs/benchmarks.md (replacing an older one)
# and docs/peer-sweep.svg. About 15 minutes; run it alone (the harness waits for a quiet host).
# Env: PEERS (default ../shared/peers), BIN (default target/release/cs-user-management),
#      D (seconds per measurement, default 12), SWEEP_D (default 8), REPS (default 3).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
PEERS="${PEERS:-$ROOT/../shared/peers}"
BIN="${BIN:-$ROOT/target/release/cs-user-management}"
D="${D:-12}"; SWEEP_D="${SWEEP_D:-8}"; REPS="${REPS:-3}"
[ -f "$PEERS/loadtest.py" ] || { log "no peer harness at $PEERS"; exit 1; }
LT="$ROOT/target/release/loadtest"
[ -x "$BIN" ] && [ -x "$LT" ] || timeout 1800 cargo build -q --release --locked -p cs-user-management -p loadtest
OUT="$RUN_DIR/peer-bench"; rm -rf "$OUT"; mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "$PEERS/fastapi-users/stop.sh" >/dev/null 2>&1 || true
  stop_started_services
}
trap cleanup EXIT

ensure_venv
ensure_redis
"$PEERS/fastapi-users/setup.sh"
FRESH=1 WORKERS=2 "$PEERS/fastapi-users/start.sh"
PEER_PID=$(cat /tmp/peer/run/uvicorn.pid); PEER_DB_PID=$(cat /tmp/peer/run/secantus.pid)

MONGO_PORT=$(free_port); start_secantus "$MONGO_PORT"
OUR_DB_PID=$(cat "$RUN_DIR/secantus-$MONGO_PORT.pid")
PORT=$(free_port); RUN_ID="p$(date +%s)"
env APP_ENV=production HOST=127.0.0.1 PORT="$PORT" BCRYPT_COST=10 AUTH_RATE_LIMIT=0 RUST_LOG=warn \
  MAX_CONCURRENT_SESSIONS=100000 \
  MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/peer_bench?directConnection=true" \
  REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="$RUN_ID:" \
  JWT_SECRET_KEY="benchmark-secret-key-0123456789abcdef" "$BIN" >"$OUT/service.log" 2>&1 &
OUR_PID=$!; PIDS+=("$OUR_PID")
deadline=$((SECONDS + 60))
until curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; do
  [ $SECONDS -ge $deadline ] && { log "the service did not start"; cat "$OUT/service.log"; exit 1; }
  sleep 0.2
done

PY="$VENV/bin/python"
ours() { "$PY" "$PEERS/loadtest.py" --profile rust --base "http://127.0.0.1:$PORT" "$@"; }
peer() { "$PY" "$PEERS/loadtest.py" --profile fastapi-users --base "http://127.0.0.1:8300" "$@"; }
log "seeding 256 users on each"
ours seed --users 256 --prefix "${RUN_ID}u" --out "$OUT/seed-ours.json" >/dev/null
peer seed --users 256 --prefix "${RUN_ID}u" --out "$OUT/seed-peer.json" >/dev/null
# run SERVICE LABEL SCENARIO CONCURRENCY DURATION
run() {
  local who="$1" label="$2" scenario="$3" c="$4" d="$5" pid db
  if [ "$who" = ours ]; then pid=$OUR_PID; db=$OUR_DB_PID; else pid=$PEER_PID; db=$PEER_DB_PID; fi
  "$who" run "$scenario" -c "$c" -d "$d" -w 3 --seed "$OUT/seed-$who.json" --pid "$pid" \
    --db-pid "$db" --label "$label" --results "$RESULTS" >/dev/null 2>>"$OUT/harness.log"
}

log "logins at c=16 and c=64, registrations at c=16: $REPS alternating runs each"
for rep in $(seq 1 "$REPS"); do
  for who in ours peer; do
    run "$who" "$who login c16" login 16 "$D"
    run "$who" "$who login c64" login 64 "$D"
    run "$who" "$who register c16" register 16 "$D"
  done
done
log "sweep: logins and me at 1, 4, 16, 64, 256"
for c in 1 4 16 64 256; do
  for who in ours peer; do
    run "$who" "$who sweep login" login "$c" "$SWEEP_D"
    run "$who" "$who sweep me" me "$c" "$SWEEP_D"
  done
done
/tmp/peer/venv/bin/python "$PEERS/loadtest.py" bcrypt --cost 10 --procs "$(nproc)" -d 10 >"$OUT/bcrypt.json"
# Our kernel's ceilings: one hash at a time, and in batches of 8 as the hashing pool runs them.
"$LT" bcrypt --cost 10 --duration 10 --json >"$OUT/bcrypt-ours.json"
"$LT" bcrypt --cost 10 --duration 10 --batch 0 --json >"$OUT/bcrypt-ours-batch.json"

"$PY" "$ROOT/scripts/peer_report.py" "$RESULTS" "$OUT/bcrypt.json" "$ROOT/docs/peer-sweep.svg" \
  "$OUT/bcrypt-ours.json" "$OUT/bcrypt-ours-batch.json" >"$OUT/section.md"
"$PY" - "$ROOT/docs/benchmarks.md" "$OUT/section.md" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
heading = "## Beside the FastAPI-Users peer"
# The section sits after the header, before the runs; a newer one replaces the older.
text = re.sub(rf"{heading}.*?(?=\n## |\Z)", "", text, flags=re.S)
first_run = text.find("## Run of")
if first_run < 0:
    first_run = len(text)
text = text[:first_run].rstrip() + "\n\n" + section.strip() + "\n\n" + text[first_run:]
open(path, "w").write(text)
PY
log "wrote the peer section of docs/benchmarks.md and docs/peer-sweep.svg; update its \"Latest figures\" by hand"
