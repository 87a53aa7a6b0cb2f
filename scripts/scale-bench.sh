#!/usr/bin/env bash
# How the service's costs grow with its users (issue 32). For each size, USERS users are written
# straight into a fresh store as the service stores them (on the embedded store its triggers
# index them; on MongoDB their search keys and slot are written with them), then the release
# binary is started on it and measured: start-up (to /health/ready), on MongoDB how long the
# search memory takes to fill (logins sent meanwhile), a login (p50/p95, cost 4), /auth/me,
# administrator searches (no match, few matches, the first search of a key every user
# holds with a login sent 150 ms into it, a match of every user, a status),
# a two-letter search (too short for any index: read in slices) and a login sent 150 ms into
# it, and the service's RSS; on the embedded store then, the same store without its search index
# started again: how long filling it takes, and the logins sent meanwhile. Prints Markdown
# tables. Run it alone: it measures latency.
# Usage: scripts/scale-bench.sh
# Env: BACKEND (embedded, the default, or mongodb: SecantusDB + Redis), BIN (default
#      target/release/cs-user-management), SIZES (default "10000 100000 1000000" embedded,
#      "10000 100000" mongodb), REPS (requests per figure, default 20), SAME_DATE=1 (every
#      user registered in the same millisecond, as a bulk import may leave them), MEMORY
#      (MongoDB: APP__ACTORS__SEARCH_MEMORY, default 2000000; 0 measures the indexes alone),
#      SETTLE (seconds of pause between writing the users and starting the service, default 0)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
BIN="${BIN:-$ROOT/target/release/cs-user-management}"
BACKEND="${BACKEND:-embedded}"; REPS="${REPS:-20}"; SAME_DATE="${SAME_DATE:-0}"
MEMORY="${MEMORY:-2000000}"; SETTLE="${SETTLE:-0}"
if [ "$BACKEND" = mongodb ]; then SIZES="${SIZES:-10000 100000}"; else SIZES="${SIZES:-10000 100000 1000000}"; fi
[ -x "$BIN" ] || timeout 1800 cargo build -q --release --locked -p cs-user-management
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; stop_started_services; }
trap cleanup EXIT
ensure_venv
OUT="$RUN_DIR/scale-bench"; mkdir -p "$OUT"; rm -f "$OUT/backfill.md"
if [ "$BACKEND" = mongodb ]; then
  ensure_redis
  MONGO_PORT=$(free_port)
  start_secantus "$MONGO_PORT"
fi
echo "| users | start-up | search memory filled (logins meanwhile p50 / max) | login p50/p95 | \`/auth/me\` p50 | search, no match p50/p95 | search \`user12345\` p50/p95 | first search \`user\`, a login sent during it | search \`user\` (every user) p50/p95 | search suspended p50/p95 | search \`12\` (slices) | a login sent during it | RSS |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for USERS in $SIZES; do
  DIR="$OUT/$BACKEND-$USERS"; rm -rf "$DIR"; mkdir -p "$DIR"
  PORT=$(free_port); DB="scale_${USERS}_$(date +%s)"
  run_env=(env APP_ENV=test HOST=127.0.0.1 PORT="$PORT" DATA_DIR="$DIR" BCRYPT_COST=4
    AUTH_RATE_LIMIT=0 RUST_LOG=warn BOOTSTRAP_ADMIN_EMAIL=scale-admin@example.com
    BOOTSTRAP_ADMIN_USERNAME=scale_admin BOOTSTRAP_ADMIN_PASSWORD=correct-horse-9
    JWT_SECRET_KEY=benchmark-secret-key-0123456789abcdef)
  if [ "$BACKEND" = mongodb ]; then
    run_env+=(MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/$DB?directConnection=true"
      REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="$DB:"
      APP__ACTORS__SEARCH_MEMORY="$MEMORY")
  else
    run_env+=(STORAGE_BACKEND=embedded TOKENS_BACKEND=embedded)
  fi
  timeout 120 "${run_env[@]}" "$BIN" migrate >/dev/null
  # The users, one registered a minute going back from now (or all at once: SAME_DATE=1); one
  # in a thousand suspended (a status search with few candidates).
  timeout 3000 "$VENV/bin/python" - "$BACKEND" "$DIR/users.db" \
    "mongodb://127.0.0.1:${MONGO_PORT:-0}/?directConnection=true" "$DB" "$USERS" "$SAME_DATE" <<'PY'
import datetime, sqlite3, sys, time
backend, path, uri, db, users, same_date = sys.argv[1:7]
users, same_date = int(users), same_date == "1"
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) - datetime.timedelta(minutes=1)
hash_ = "$2b$04$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva"
def keys(value):
    v = value.lower()
    return sorted({v[i:i + n] for n in (3, 5) for i in range(len(v) - n + 1)})
def slot(oid):  # search_slot in actors/src/domain/search_keys.rs
    m = 0xFFFFFFFFFFFFFFFF
    h = 0xcbf29ce484222325
    for b in oid.binary:
        h = ((h ^ b) * 0x100000001b3) & m
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & m
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & m
    h ^= h >> 33
    return h >> 40
def user(i):
    name = f"user{i}"
    at = now if same_date else now - datetime.timedelta(minutes=i)
    return name, f"{name}@example.com", "suspended" if i % 1000 == 7 else "active", at
started = time.monotonic()
if backend == "mongodb":
    import pymongo
    from bson import ObjectId
    coll = pymongo.MongoClient(uri)[db]["users"]
    batch = []
    for i in range(users):
        name, email, status, at = user(i)
        oid = ObjectId()
        batch.append({"_id": oid, "email": email, "email_key": email, "username": name,
                      "username_lower": name, "username_keys": keys(name), "email_keys": keys(email),
                      "search_slot": slot(oid),
                      "password_hash": hash_, "status": status, "role": "user", "created_at": at,
                      "updated_at": at, "last_login_at": None, "login_count": 0,
                      "credential_version": 0})
        if len(batch) == 5000 or i + 1 == users:
            coll.insert_many(batch)
            batch = []
else:
    c = sqlite3.connect(path)
    rows = []
    for i in range(users):
        name, email, status, at = user(i)
        ms = int(at.timestamp() * 1000)
        rows.append(("%08x%016x" % (0x5f000000, i), email, email, name, name, hash_, status, ms, ms))
        if len(rows) == 10_000 or i + 1 == users:
            c.executemany(
                "INSERT INTO users (id, email, email_key, username, username_lower, password_hash, "
                "status, role, created_at, updated_at, login_count, credential_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'user', ?, ?, 0, 0)", rows)
            rows = []
    c.commit()
print(f"inserted {users} users in {time.monotonic() - started:.1f} s", file=sys.stderr)
PY
  # SecantusDB works off a bulk insert for minutes after it is acknowledged (pings of 0.2-1.1 s):
  # SETTLE seconds of pause keep that out of the service's figures.
  sleep "$SETTLE"
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
  "$VENV/bin/python" - "http://127.0.0.1:$PORT" "$USERS" "$REPS" "$startup" "$PID" "$BACKEND" "$MEMORY" <<'PY'
import json, sys, threading, time, urllib.request
url, users, reps, startup, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
backend, remember = sys.argv[6], sys.argv[7] != "0"

def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, json.dumps(body).encode() if body is not None else None,
                                 method=method, headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", "Bearer " + token)
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=600) as r:
        data = json.load(r)
    return data, (time.monotonic() - started) * 1000

def timed(method, path, body=None, token=None, n=reps):
    took = sorted(call(method, path, body, token)[1] for _ in range(n))
    return took[len(took) // 2], took[max(0, round(len(took) * 0.95) - 1)]

admin = call("POST", "/auth/login", {"email": "scale-admin@example.com", "password": "correct-horse-9"})[0]
admin = admin["data"]["access_token"]
call("POST", "/auth/register", {"username": "probe_user", "email": "probe@example.com", "password": "correct-horse-9"})
probe = {"email": "probe@example.com", "password": "correct-horse-9"}
def memory_fill():
    """On MongoDB: how long until the search memory serves, and the logins sent meanwhile."""
    started, logins = time.monotonic(), []
    while time.monotonic() - started < 900:
        try:
            with urllib.request.urlopen(url + "/health", timeout=10) as r:
                held = json.load(r)["details"].get("search_memory_users")
        except Exception:
            held = None
        if held is not None:
            if not logins:
                return f"{time.monotonic() - started:.1f} s"
            logins.sort()
            return (f"{time.monotonic() - started:.1f} s ({logins[len(logins) // 2]:.0f} / "
                    f"{logins[-1]:.0f} ms)")
        if not remember:
            return "off"
        logins.append(call("POST", "/auth/login", probe)[1])
    return "not within 900 s"
fill = memory_fill() if backend == "mongodb" else "—"
login = timed("POST", "/auth/login", probe)
me = timed("GET", "/auth/me", token=admin)
def search(query, n=reps):
    answer, _ = call("POST", "/users/search", query, admin)
    return timed("POST", "/users/search", query, admin, n), answer["total"]
def during_search(query):
    """A search and a login sent 150 ms into it: (the search's ms, its total, the login's ms)."""
    result = {}
    def slow():
        answer, took = call("POST", "/users/search", query, admin)
        result["took"], result["total"] = took, answer["total"]
    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.15)
    during = call("POST", "/auth/login", probe)[1]
    thread.join()
    return result["took"], result["total"], during
none, t0 = search({"username": "zz-nobody"})
few, t1 = search({"username": "user12345"})
# The first search of a key every user holds (the service learns then that the key is broad).
first = during_search({"username": "user"})
every, t2 = search({"username": "user"}, n=max(3, reps // 4))
suspended, t4 = search({"status": "suspended"})
# A two-letter search (slices) and a login sent 150 ms into it.
took, total, during = during_search({"username": "12"})
rss = next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
f = lambda p: f"{p[0]:.1f} / {p[1]:.1f} ms"
print(f"| {users:,} | {startup} | {fill} | {f(login)} | {me[0]:.1f} ms | {f(none)} | {f(few)} ({t1}) "
      f"| {first[0]:.0f} ms / {first[2]:.0f} ms | {f(every)} ({t2}) | {f(suspended)} ({t4}) "
      f"| {took:.0f} ms ({total}) "
      f"| {during:.0f} ms | {int(rss) // 1024} MiB |")
PY
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  if [ "$BACKEND" = embedded ]; then
    # The same store as a version before the search index left it: started on it, the
    # service fills the index in steps while serving; logins are sent all along.
    python3 - "$DIR/users.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.executescript("DROP TRIGGER users_search_insert; DROP TRIGGER users_search_update; "
                "DROP TRIGGER users_search_delete; DROP TABLE users_search; DROP TABLE search_backfill;")
PY
    "${run_env[@]}" "$BIN" >"$DIR/service-backfill.log" 2>&1 &
    PID=$!
    "$VENV/bin/python" - "http://127.0.0.1:$PORT" "$DIR/users.db" "$USERS" <<'PY' >>"$OUT/backfill.md"
import json, sqlite3, sys, time, urllib.request
url, path, users = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 120
while True:
    try:
        urllib.request.urlopen(url + "/health/ready", timeout=1)
        break
    except Exception:
        if time.monotonic() > deadline:
            sys.exit("the service did not start")
        time.sleep(0.05)
started = time.monotonic()
db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
body = json.dumps({"email": "probe@example.com", "password": "correct-horse-9"}).encode()
took = []
while db.execute("SELECT COUNT(*) FROM search_backfill").fetchone()[0] > 0:
    req = urllib.request.Request(url + "/auth/login", body, headers={"content-type": "application/json"})
    sent = time.monotonic()
    urllib.request.urlopen(req, timeout=60).read()
    took.append((time.monotonic() - sent) * 1000)
    time.sleep(0.1)
filled = time.monotonic() - started
took.sort()
p50 = took[len(took) // 2] if took else 0
print(f"| {users:,} | {filled:.1f} s | {len(took)} | {p50:.1f} ms | {max(took, default=0):.1f} ms |")
PY
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  fi
done
if [ -s "$OUT/backfill.md" ]; then
  echo
  echo "Filling the search index at start-up (the store as a version before it left it), logins sent every 100 ms meanwhile:"
  echo
  echo "| users | filled in | logins during it | login p50 | slowest login |"
  echo "|---|---|---|---|---|"
  cat "$OUT/backfill.md"
fi
echo
echo "(release build, backend $BACKEND$([ "$SAME_DATE" = 1 ] && echo ", every user of one date"); p50 / p95 of $REPS requests (a quarter of them for the search of every user); totals in brackets; the login during the two-letter search is one, sent 150 ms into it)"
