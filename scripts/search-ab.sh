#!/usr/bin/env bash
# Two release builds side by side on one embedded store: the administrator's search QUERY timed
# against each, alone, in alternating rounds (A, B, A, B, …), so both meet the same machine.
# The store is one scripts/scale-bench.sh left (its data directory of that size, users
# `user1`…`userN` and the administrator scale-admin@example.com). Prints a line per round and
# the median of the rounds' p50 and p95 for each build. Run it alone: it measures latency.
# Usage: scripts/search-ab.sh BIN_A BIN_B
# Env: DIR (default target/services/scale-bench/embedded-1000000), ROUNDS (default 6), REPS
#      (searches per round, default 30), QUERY (default {"username": "user"}: every user)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
A="$1"; B="$2"
DIR="${DIR:-$RUN_DIR/scale-bench/embedded-1000000}"
ROUNDS="${ROUNDS:-6}"; REPS="${REPS:-30}"; QUERY="${QUERY:-}"
[ -n "$QUERY" ] || QUERY='{"username": "user"}'
[ -f "$DIR/users.db" ] || { log "no store in $DIR: run scripts/scale-bench.sh first"; exit 1; }
ensure_venv
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null || true' EXIT
OUT=$(mktemp)
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin="$A"; [ "$side" = B ] && bin="$B"
    PORT=$(free_port)
    env APP_ENV=test HOST=127.0.0.1 PORT="$PORT" DATA_DIR="$DIR" BCRYPT_COST=4 AUTH_RATE_LIMIT=0 \
      RUST_LOG=warn MAX_CONCURRENT_SESSIONS=10 STORAGE_BACKEND=embedded TOKENS_BACKEND=embedded \
      BOOTSTRAP_ADMIN_EMAIL=scale-admin@example.com BOOTSTRAP_ADMIN_USERNAME=scale_admin \
      BOOTSTRAP_ADMIN_PASSWORD=correct-horse-9 JWT_SECRET_KEY=benchmark-secret-key-0123456789abcdef \
      "$bin" >/dev/null 2>&1 &
    PID=$!
    timeout 120 "$VENV/bin/python" - "$PORT" "$REPS" "$side" "$round" "$QUERY" <<'PY' | tee -a "$OUT"
import json, sys, time, urllib.request
port, reps, side, round_, query = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6]
query = json.loads(query)
def call(path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), headers)
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r:
        out = json.load(r)
    return out, (time.perf_counter() - started) * 1000
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2)
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("the service did not get ready within 60 s")
        time.sleep(0.2)
token = call("/auth/login", {"email": "scale-admin@example.com", "password": "correct-horse-9"})[0]
token = token["data"]["access_token"]
for _ in range(3):
    call("/users/search", query, token)
times = sorted(call("/users/search", query, token)[1] for _ in range(reps))
print(f"round {round_} {side}: p50 {times[reps // 2]:.1f} ms, p95 {times[int(reps * 0.95) - 1]:.1f} ms")
PY
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
done
"$VENV/bin/python" - "$OUT" "$A" "$B" <<'PY'
import re, statistics, sys
rounds = {"A": [], "B": []}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (A|B): p50 ([\d.]+) ms, p95 ([\d.]+) ms", line)
    if m:
        rounds[m[1]].append((float(m[2]), float(m[3])))
med = {k: (statistics.median(p for p, _ in v), statistics.median(q for _, q in v)) for k, v in rounds.items()}
for k, name in (("A", sys.argv[2]), ("B", sys.argv[3])):
    print(f"{k} ({name}): median of the rounds' p50 {med[k][0]:.1f} ms, p95 {med[k][1]:.1f} ms")
print(f"A ÷ B: p50 {med['A'][0] / med['B'][0]:.2f}, p95 {med['A'][1] / med['B'][1]:.2f}")
PY
rm -f "$OUT"
