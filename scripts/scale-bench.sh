#!/usr/bin/env bash
# How the service's costs grow with its users (issue 32), on the embedded store: for each size,
# USERS users are written straight into a fresh users.db (as the service stores them; its
# triggers index them for search), then the release binary is started on it and measured:
# start-up (to /health/ready), a login (p50/p95, cost 4), /auth/me, administrator searches (no
# match, few matches, a match of every user, a two-letter substring, a status), and its RSS.
# Prints one Markdown table. Run it alone: it measures latency.
# Usage: scripts/scale-bench.sh     Env: BIN (default target/release/cs-user-management),
#        SIZES (default "10000 100000 1000000"), REPS (requests per figure, default 20)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
BIN="${BIN:-$ROOT/target/release/cs-user-management}"
SIZES="${SIZES:-10000 100000 1000000}"; REPS="${REPS:-20}"
[ -x "$BIN" ] || timeout 1800 cargo build -q --release --locked -p cs-user-management
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; }
trap cleanup EXIT
OUT="$RUN_DIR/scale-bench"; mkdir -p "$OUT"
echo "| users | start-up | login p50/p95 | \`/auth/me\` p50 | search, no match p50/p95 | search \`user12345\` p50/p95 | search \`user\` (every user) p50/p95 | search \`12\` (two letters: slices) | search suspended p50/p95 | RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for USERS in $SIZES; do
  DIR="$OUT/$USERS"; rm -rf "$DIR"; mkdir -p "$DIR"
  PORT=$(free_port)
  run_env=(env APP_ENV=test HOST=127.0.0.1 PORT="$PORT" DATA_DIR="$DIR" STORAGE_BACKEND=embedded
    TOKENS_BACKEND=embedded BCRYPT_COST=4 AUTH_RATE_LIMIT=0 RUST_LOG=warn
    BOOTSTRAP_ADMIN_EMAIL=scale-admin@example.com BOOTSTRAP_ADMIN_USERNAME=scale_admin
    BOOTSTRAP_ADMIN_PASSWORD=correct-horse-9 JWT_SECRET_KEY=benchmark-secret-key-0123456789abcdef)
  timeout 120 "${run_env[@]}" "$BIN" migrate >/dev/null
  # The users, one registered a minute going back from now; one in a thousand suspended (a
  # status search with few candidates).
  timeout 1200 python3 - "$DIR/users.db" "$USERS" <<'PY'
import sqlite3, sys, time, os
path, users = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(path)
now = int(time.time() * 1000) - 60_000
started = time.monotonic()
rows = []
def flush():
    c.executemany(
        "INSERT INTO users (id, email, email_key, username, username_lower, password_hash, "
        "status, role, created_at, updated_at, login_count, credential_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'user', ?, ?, 0, 0)", rows)
    rows.clear()
for i in range(users):
    name = f"user{i}"
    email = f"{name}@example.com"
    at = now - 60_000 * i
    rows.append(("%08x%016x" % (0x5f000000, i), email, email, name, name,
                 "$2b$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva",
                 "suspended" if i % 1000 == 7 else "active", at, at))
    if len(rows) == 10_000:
        flush()
flush()
c.commit()
print(f"inserted {users} users in {time.monotonic() - started:.1f} s", file=sys.stderr)
PY
  started=$(date +%s.%N)
  "${run_env[@]}" "$BIN" >"$DIR/service.log" 2>&1 &
  PID=$!
  deadline=$((SECONDS + 120))
  until curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { log "the service did not start"; cat "$DIR/service.log"; exit 1; }
    sleep 0.05
  done
  startup=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f} s')" \
    "$started" "$(date +%s.%N)")
  python3 - "http://127.0.0.1:$PORT" "$USERS" "$REPS" "$startup" "$PID" <<'PY'
import json, statistics, sys, time, urllib.request
url, users, reps, startup, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", "Bearer " + token)
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=300) as r:
        data = json.load(r)
    return data, (time.monotonic() - started) * 1000

def timed(method, path, body=None, token=None, n=reps):
    took = sorted(call(method, path, body, token)[1] for _ in range(n))
    return took[len(took) // 2], took[max(0, round(len(took) * 0.95) - 1)]

admin, _ = call("POST", "/auth/login", {"email": "scale-admin@example.com", "password": "correct-horse-9"})
admin = admin["data"]["access_token"]
call("POST", "/auth/register", {"username": "probe_user", "email": "probe@example.com", "password": "correct-horse-9"})
login = timed("POST", "/auth/login", {"email": "probe@example.com", "password": "correct-horse-9"})
me = timed("GET", "/auth/me", token=admin)
def search(query, n=reps):
    answer, _ = call("POST", "/users/search", query, admin)
    return timed("POST", "/users/search", query, admin, n), answer["total"]
none, t0 = search({"username": "zz-nobody"})
few, t1 = search({"username": "user12345"})
every, t2 = search({"username": "user"})
two, t3 = search({"username": "12"}, n=3)
suspended, t4 = search({"status": "suspended"})
rss = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
f = lambda p: f"{p[0]:.1f} / {p[1]:.1f} ms"
print(f"| {users:,} | {startup} | {f(login)} | {me[0]:.1f} ms | {f(none)} | {f(few)} ({t1}) "
      f"| {f(every)} ({t2}) | {two[0]:.0f} ms ({t3}) | {f(suspended)} ({t4}) | {int(rss) // 1024} MiB |")
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done
echo
echo "(release build, embedded store; figures in ms are p50 / p95 of $REPS requests; totals in brackets)"
