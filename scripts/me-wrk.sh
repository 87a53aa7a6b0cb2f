#!/usr/bin/env bash
# GET /auth/me under wrk (-t1 -c64, an efficient loader that leaves the service the cores)
# beside a bare actix-web JSON handler, in one run on one machine, rounds interleaved.
# The service runs on SecantusDB + Redis (a signed-in user; /auth/me checks the token in Redis
# on every request and reads the user from the 2 s cache).
# Usage: scripts/me-wrk.sh [SECONDS] [ROUNDS]
#   BIN=path      the service binary (default: target/release, built here)
#   OTHER_BIN=p   a second build measured in the same rounds (e.g. the previous commit's)
#   OTHER_ENV="K=V …"  settings of that second instance (OTHER_BIN defaults to BIN then), e.g.
#                 OTHER_ENV=JWT_ALGORITHM=EdDSA: /auth/me with Ed25519 tokens beside HS256
set -euo pipefail
source "$(dirname "$0")/lib.sh"
D="${1:-10}"; ROUNDS="${2:-3}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_started_services; }
trap cleanup EXIT
cd "$ROOT"
if [ -z "${BIN:-}" ]; then
  timeout 1800 cargo build -q --release --locked -p cs-user-management -p loadtest
  BIN="$ROOT/target/release/cs-user-management"
fi
LT="${LT:-$ROOT/target/release/loadtest}"
command -v wrk >/dev/null || timeout 600 apt-get install -y -q wrk >/dev/null
ensure_venv
ensure_redis
MONGO_PORT=$(free_port)
start_secantus "$MONGO_PORT"
OUT="$RUN_DIR/me-wrk"; mkdir -p "$OUT"
RUN_ID="w$(date +%s)"

# start NAME BINARY [K=V …]: the service on its own database and key prefix (and data directory,
# where a development key pair is kept); sets URL_NAME, TOKEN_NAME.
start() {
  local name="$1" bin="$2" port; port=$(free_port)
  shift 2
  env APP_ENV=test HOST=127.0.0.1 PORT="$port" BCRYPT_COST=4 AUTH_RATE_LIMIT=0 RUST_LOG=warn \
    MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/wrk_$name?directConnection=true" \
    REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="$RUN_ID:$name:" \
    DATA_DIR="$OUT/$name-data" JWT_SECRET_KEY="benchmark-secret-key-0123456789abcdef" "$@" \
    "$bin" >"$OUT/$name.log" 2>&1 &
  PIDS+=("$!")
  local url="http://127.0.0.1:$port" deadline=$((SECONDS + 60))
  until curl -fsS "$url/health/ready" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { log "$name did not start"; cat "$OUT/$name.log"; exit 1; }
    sleep 0.2
  done
  curl -fsS -XPOST "$url/auth/register" -H 'content-type: application/json' \
    -d '{"username":"wrk_user","email":"wrk@example.com","password":"correct-horse-9"}' >/dev/null
  local token
  token=$(curl -fsS -XPOST "$url/auth/login" -H 'content-type: application/json' \
    -d '{"email":"wrk@example.com","password":"correct-horse-9"}' \
    | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_token"])')
  printf -v "URL_$name" '%s' "$url"
  printf -v "TOKEN_$name" '%s' "$token"
}

start_baseline "$LT" "$OUT/baseline.log"
start this "$BIN"
NAMES=(bare this)
if [ -n "${OTHER_BIN:-}" ] || [ -n "${OTHER_ENV:-}" ]; then
  # shellcheck disable=SC2086  # OTHER_ENV is a list of K=V words
  start other "${OTHER_BIN:-$BIN}" ${OTHER_ENV:-}
  NAMES+=(other)
fi
URL_bare="http://127.0.0.1:$BASE_PORT"; TOKEN_bare="none"

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '$1 == "99%" {print $2}' "$1"; }
for round in $(seq 1 "$ROUNDS"); do
  for name in "${NAMES[@]}"; do
    url_var="URL_$name"; token_var="TOKEN_$name"
    path=/auth/me; [ "$name" = bare ] && path=/
    wrk -t1 -c64 -d"${D}s" --latency -H "Authorization: Bearer ${!token_var}" \
      "${!url_var}$path" >"$OUT/$name-$round.txt"
    echo "round $round $name: $(rps "$OUT/$name-$round.txt") requests/s, p99 $(p99 "$OUT/$name-$round.txt")"
  done
done
"$VENV/bin/python" - "$OUT" "$ROUNDS" "${NAMES[@]}" <<'PY'
import re, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def rps(name, r):
    text = open(f"{out}/{name}-{r}.txt").read()
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    assert not non2xx, f"{name} round {r}: {non2xx.group(0)}"
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
for name in names[1:]:
    ratios = [rps(name, r) / rps("bare", r) for r in range(1, rounds + 1)]
    print(f"{name}: /auth/me ÷ bare per round {[round(x, 3) for x in ratios]}, "
          f"median {statistics.median(ratios):.3f}")
PY
