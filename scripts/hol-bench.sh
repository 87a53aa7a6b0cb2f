#!/usr/bin/env bash
# Head-of-line in the database queue: with USERS users (default 50,000) written straight into
# SecantusDB, an administrator's substring search that matches nobody and is too short for the
# search keys ("zq": it reads every user, in slices) is sent, and 150 ms later a login; three
# rounds, the median reported, beside a login alone.
# Prints a Markdown table (the search's own time, the login's time during it, the login alone).
# Run it alone: it measures latency.
# Usage: scripts/hol-bench.sh          Env: BIN (default target/release/cs-user-management),
#        USERS (default 50000), ROUNDS (default 3), SLICE (APP__ACTORS__SEARCH_SLICE, default 250)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
BIN="${BIN:-$ROOT/target/release/cs-user-management}"
USERS="${USERS:-50000}"; ROUNDS="${ROUNDS:-3}"; SLICE="${SLICE:-250}"
[ -x "$BIN" ] || timeout 1800 cargo build -q --release --locked -p cs-user-management
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_started_services; }
trap cleanup EXIT
ensure_venv
ensure_redis
MONGO_PORT=$(free_port); PORT=$(free_port)
start_secantus "$MONGO_PORT"
OUT="$RUN_DIR/hol-bench"; mkdir -p "$OUT"
DB="hol_$(date +%s)"
env APP_ENV=test HOST=127.0.0.1 PORT="$PORT" BCRYPT_COST=10 AUTH_RATE_LIMIT=0 RUST_LOG=warn \
  APP__ACTORS__SEARCH_SLICE="$SLICE" \
  MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/$DB?directConnection=true" \
  REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="$DB:" \
  BOOTSTRAP_ADMIN_EMAIL=hol-admin@example.com BOOTSTRAP_ADMIN_USERNAME=hol_admin \
  BOOTSTRAP_ADMIN_PASSWORD=correct-horse-9 \
  JWT_SECRET_KEY="benchmark-secret-key-0123456789abcdef" "$BIN" >"$OUT/service.log" 2>&1 &
PIDS+=("$!")
deadline=$((SECONDS + 60))
until curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; do
  [ $SECONDS -ge $deadline ] && { log "the service did not start"; cat "$OUT/service.log"; exit 1; }
  sleep 0.2
done

"$VENV/bin/python" - "http://127.0.0.1:$PORT" "mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true" \
  "$DB" "$USERS" "$ROUNDS" "$SLICE" <<'PY'
import datetime, json, statistics, sys, threading, time, urllib.request
import pymongo
from bson import ObjectId

url, uri, db, users, rounds, slice_ = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]

def post(path, body, token=None):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    if token:
        req.add_header("authorization", "Bearer " + token)
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=120) as r:
        data = json.load(r)
    return data, time.monotonic() - started

# The users, as the service stores them, written straight into the database: one registered a
# minute going back from now (about five weeks of sign-ups for 50,000).
now = datetime.datetime.now(datetime.timezone.utc)
coll = pymongo.MongoClient(uri)[db]["users"]
started, batch = time.monotonic(), []
for i in range(users):
    name = f"bulk_{i}"
    at = now - datetime.timedelta(minutes=i)
    batch.append({"_id": ObjectId(), "email": f"{name}@example.com", "username": name,
                  "username_lower": name, "password_hash": "$2b$04$" + "x" * 53, "status": "active",
                  "role": "user", "created_at": at, "updated_at": at, "login_count": 0})
    if len(batch) == 5000 or i + 1 == users:
        coll.insert_many(batch)
        batch = []
print(f"inserted {users} users in {time.monotonic() - started:.1f} s", file=sys.stderr)

post("/auth/register", {"username": "hol_user", "email": "hol@example.com", "password": "correct-horse-9"})
login = {"email": "hol@example.com", "password": "correct-horse-9"}
admin = post("/auth/login", {"email": "hol-admin@example.com", "password": "correct-horse-9"})[0]
token = admin["data"]["access_token"]

alone, searches, during = [], [], []
for _ in range(rounds):
    alone.append(post("/auth/login", login)[1])
    result = {}
    def search():
        body, took = post("/users/search", {"username": "zq"}, token)
        result["total"], result["took"] = body.get("total"), took
    t = threading.Thread(target=search)
    t.start()
    time.sleep(0.15)
    during.append(post("/auth/login", login)[1])
    t.join()
    assert result["total"] == 0, result
    searches.append(result["took"])
ms = lambda xs: f"{1000 * statistics.median(xs):.0f} ms (rounds: {', '.join(f'{1000 * x:.0f}' for x in xs)})"
print(f"| figure ({users} users, SecantusDB + Redis, search slice {slice_}) | median of {rounds} |")
print("|---|---|")
print(f"| the search (reads every user) | {ms(searches)} |")
print(f"| a login sent 150 ms into it | **{ms(during)}** |")
print(f"| a login alone | {ms(alone)} |")
PY
