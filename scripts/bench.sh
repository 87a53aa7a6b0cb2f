#!/usr/bin/env bash
# The benchmark: in one run on one machine, side by side, the five figures of docs/benchmarks.md.
#   1. login_ratio  logins/s through the service (BCRYPT_COST=10, concurrency 16 and 64) over
#                   bare bcrypt verifies/s at cost 10 on all cores, in batches of the batch
#                   kernel's width (the most the kernel does, as the hashing pool runs it under
#                   load); login p99 at 64 against 1.25 x (64 / that ceiling)
#   2. me_ratio     GET /auth/me/s (concurrency 64, Redis) over a bare actix-web JSON handler
#   3. queue_ratio  look-ups/s through the DbQueueActor over the driver called directly, on
#                   loopback and with the database one hop away (`loadtest delay-proxy`, 0.5 ms
#                   each way); logins/s at BCRYPT_COST=4 (the database, not bcrypt, the limit)
#                   on loopback and one hop away
#   4. mixed        GET /auth/me and /health p99 during a login storm at cost 12 (64 concurrent)
#   5. peak RSS     of the service processes
# Figures 1 and 2 are measured on both backends in the same run: MongoDB (SecantusDB) + Redis,
# and the embedded SQLite pair (the default on a machine with nothing configured).
# Usage: scripts/bench.sh            full run (about 3 minutes of load), adds a run to
#                                    docs/benchmarks.md
#        scripts/bench.sh --smoke    a few seconds per step with debug builds; proves it works
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SMOKE=0; [ "${1:-}" = "--smoke" ] && SMOKE=1
# Smoke mode uses debug builds, where bcrypt is many times slower: low costs keep it short.
if [ $SMOKE = 1 ]; then D=2; USERS=16; PROFILE=debug; LOW=4; HIGH=5
else D=15; USERS=128; PROFILE=release; LOW=10; HIGH=12; fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_started_services; }
trap cleanup EXIT

cd "$ROOT"
if [ $PROFILE = release ]; then
  timeout 1800 cargo build -q --release --locked -p cs-user-management -p loadtest
else
  timeout 1800 cargo build -q --locked -p cs-user-management -p loadtest
fi
BIN="$ROOT/target/$PROFILE/cs-user-management"
LT="$ROOT/target/$PROFILE/loadtest"

ensure_venv
ensure_redis
MONGO_PORT=$(free_port)
OUT="$RUN_DIR/bench"; mkdir -p "$OUT"
RUN_ID="b$(date +%s)"

# start_service NAME COST [embedded|far]: starts the service (on SecantusDB + Redis, on the
# embedded pair, or on SecantusDB through the delay proxy), sets URL_<NAME> and PID_<NAME>.
start_service() {
  local name="$1" cost="$2" port backend_env db_port="$MONGO_PORT"; port=$(free_port)
  [ "${3:-}" = far ] && db_port="$PROXY_PORT"
  if [ "${3:-}" = embedded ]; then
    backend_env=(STORAGE_BACKEND=embedded TOKENS_BACKEND=embedded DATA_DIR="$OUT/data-$RUN_ID-$name")
  else
    backend_env=(MONGODB_URI="mongodb://127.0.0.1:$db_port/bench_$name?directConnection=true"
      REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="$RUN_ID:$name:")
  fi
  env APP_ENV=test HOST=127.0.0.1 PORT="$port" BCRYPT_COST="$cost" AUTH_RATE_LIMIT=0 RUST_LOG=warn \
    "${backend_env[@]}" JWT_SECRET_KEY="benchmark-secret-key-0123456789abcdef" \
    "$BIN" >"$OUT/service-$name.log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { log "service $name did not start"; cat "$OUT/service-$name.log"; exit 1; }
    sleep 0.2
  done
  printf -v "URL_$name" '%s' "http://127.0.0.1:$port"
  printf -v "PID_$name" '%s' "$pid"
}

peak_rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
field() { "$VENV/bin/python" -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }


REDIS_PID=$(timeout 5 redis-cli -h "$REDIS_TEST_HOST" -p "$REDIS_TEST_PORT" info server 2>/dev/null \
  | tr -d '\r' | awk -F: '/^process_id/ {print $2}' || true)
REDIS_CPU=(); [ -n "$REDIS_PID" ] && REDIS_CPU=(--cpu-pid "$REDIS_PID")

log "1/5 login ratio (BCRYPT_COST=$LOW), 2/5 me ratio: the embedded pair first, alone"
"$LT" bcrypt --cost "$LOW" --duration "$D" --batch 0 --json >"$OUT/bcrypt-before.json"
# SecantusDB is not started yet, so nothing else runs on these cores while the embedded
# service is measured; it is stopped before SecantusDB starts.
start_service e10 "$LOW" embedded
"$LT" run --base-url "$URL_e10" --scenario login --concurrency 16 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}l" --json >"$OUT/login16-embedded.json"
"$LT" run --base-url "$URL_e10" --scenario login --concurrency 64 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}l" --cpu-pid "$PID_e10" \
  --json >"$OUT/login64-embedded.json"
"$LT" run --base-url "$URL_e10" --scenario me --concurrency 64 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}m" --json >"$OUT/me64-embedded.json"
RSSE=$(peak_rss_mib "$PID_e10")
kill "$PID_e10"

log "1/5 login ratio (BCRYPT_COST=$LOW), 2/5 me ratio: SecantusDB + Redis"
start_secantus "$MONGO_PORT"
SECANTUS_PID=$(cat "$RUN_DIR/secantus-$MONGO_PORT.pid")
start_service c10 "$LOW"
"$LT" run --base-url "$URL_c10" --scenario login --concurrency 16 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}l" --json >"$OUT/login16.json"
"$LT" run --base-url "$URL_c10" --scenario login --concurrency 64 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}l" --cpu-pid "$PID_c10" \
  --cpu-pid "$SECANTUS_PID" "${REDIS_CPU[@]}" --json >"$OUT/login64.json"
"$LT" bcrypt --cost "$LOW" --duration "$D" --batch 0 --json >"$OUT/bcrypt-after.json"
"$LT" run --base-url "$URL_c10" --scenario me --concurrency 64 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}m" --json >"$OUT/me64.json"
start_baseline "$LT" "$OUT/baseline.log"
"$LT" run --base-url "http://127.0.0.1:$BASE_PORT" --scenario get --path / --concurrency 64 \
  --duration "$D" --json >"$OUT/bare64.json"

log "3/5 queue ratio and cost-4 logins, on loopback and one hop away (+0.5 ms each way)"
"$LT" queue --mongodb-uri "mongodb://127.0.0.1:$MONGO_PORT/bench_queue?directConnection=true" \
  --concurrency 16 --duration "$D" --json >"$OUT/queue.json"
PROXY_PORT=$(free_port)
"$LT" delay-proxy --listen "$PROXY_PORT" --upstream "127.0.0.1:$MONGO_PORT" --delay-ms 0.5 \
  >"$OUT/proxy.log" 2>&1 &
PIDS+=("$!")
deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null; do
  [ $SECONDS -ge $deadline ] && { log "the delay proxy did not start"; cat "$OUT/proxy.log"; exit 1; }
  sleep 0.2
done
"$LT" queue --mongodb-uri "mongodb://127.0.0.1:$PROXY_PORT/bench_queue_far?directConnection=true" \
  --concurrency 16 --duration "$D" --json >"$OUT/queue-far.json"
start_service n4 4
"$LT" run --base-url "$URL_n4" --scenario login --concurrency 32 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}n" --json >"$OUT/login4-near.json"
kill "$PID_n4"
start_service f4 4 far
"$LT" run --base-url "$URL_f4" --scenario login --concurrency 32 --duration "$D" \
  --users "$USERS" --user-prefix "${RUN_ID}f" --json >"$OUT/login4-far.json"
kill "$PID_f4"

log "4/5 mixed load (login storm at BCRYPT_COST=$HIGH)"
start_service c12 "$HIGH"
# Seed and sign in the readers first (the storm's users are seeded by its own run).
# (--min-success 0: the seeding run's window is too short to judge, and the storm is meant to
# meet refusals.)
"$LT" run --base-url "$URL_c12" --scenario login --concurrency 8 --duration 0.1 \
  --users 64 --user-prefix "${RUN_ID}s" --min-success 0 --json >/dev/null
"$LT" run --base-url "$URL_c12" --scenario login --concurrency 64 --duration "$((D * 2))" \
  --users 64 --user-prefix "${RUN_ID}s" --min-success 0 --json >"$OUT/storm.json" &
STORM=$!
sleep 2
"$LT" run --base-url "$URL_c12" --scenario me --concurrency 4 --rate 40 --duration "$D" \
  --users 8 --user-prefix "${RUN_ID}r" --json >"$OUT/mixed-me.json" &
ME=$!
"$LT" run --base-url "$URL_c12" --scenario get --path /health --concurrency 2 --rate 20 \
  --duration "$D" --json >"$OUT/mixed-health.json"
wait "$ME" "$STORM"

log "5/5 peak RSS"
RSS10=$(peak_rss_mib "$PID_c10"); RSS12=$(peak_rss_mib "$PID_c12")

# Figures.
B=$("$VENV/bin/python" -c "import json; a=json.load(open('$OUT/bcrypt-before.json')); b=json.load(open('$OUT/bcrypt-after.json')); print((a['per_sec']+b['per_sec'])/2)")
"$VENV/bin/python" - "$OUT" "$B" "$RSS10" "$RSS12" "$SMOKE" "$D" "$RSSE" "$PID_c10" "$SECANTUS_PID" "${REDIS_PID:-0}" "$PID_e10" <<'PY' | tee "$OUT/summary.md"
import json, sys, platform, datetime, subprocess
out, ceiling, rss10, rss12, smoke, d = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
rsse = float(sys.argv[7])
service_pid, secantus_pid, redis_pid, embedded_pid = sys.argv[8:12]
j = lambda n: json.load(open(f"{out}/{n}.json"))
l16, l64, me, bare, q = j("login16"), j("login64"), j("me64"), j("bare64"), j("queue")
qf, n4, f4 = j("queue-far"), j("login4-near"), j("login4-far")
e16, e64, eme = j("login16-embedded"), j("login64-embedded"), j("me64-embedded")
storm, mme, mh = j("storm"), j("mixed-me"), j("mixed-health")
kb = j("bcrypt-before")
ok200 = lambda r: r["statuses"].get("200", 0) / max(r["duration_s"], 1e-9)
fair = 1.25 * 64 / ceiling * 1000
rows = [
  ("login_ratio @16", f"{ok200(l16):.1f}/s ÷ {ceiling:.1f}/s = **{ok200(l16)/ceiling:.3f}**", "≥ 0.97"),
  ("login_ratio @64", f"{ok200(l64):.1f}/s ÷ {ceiling:.1f}/s = **{ok200(l64)/ceiling:.3f}**", "≥ 0.97"),
  ("login p99 @64", f"**{l64['p99_ms']:.0f} ms** (1.25 × 64 ÷ ceiling = {fair:.0f} ms)", f"≤ {fair:.0f} ms"),
  ("me_ratio @64", f"{ok200(me):.0f}/s ÷ {ok200(bare):.0f}/s = **{ok200(me)/ok200(bare):.3f}**", "≥ 0.35"),
  ("queue_ratio @16", f"{q['queued_per_sec']:.0f}/s ÷ {q['direct_per_sec']:.0f}/s = **{q['queue_ratio']:.3f}**", "≥ 0.80"),
  ("queue_ratio @16, +1 ms round trip", f"{qf['queued_per_sec']:.0f}/s ÷ {qf['direct_per_sec']:.0f}/s = **{qf['queue_ratio']:.3f}**", "≥ 0.80"),
  ("logins/s @32 at cost 4, +1 ms ÷ loopback", f"{ok200(f4):.1f}/s ÷ {ok200(n4):.1f}/s = **{ok200(f4)/max(ok200(n4), 1e-9):.3f}**", "≥ 0.80"),
  ("mixed: /auth/me p99", f"**{mme['p99_ms']:.1f} ms** (storm: {ok200(storm):.1f} logins/s)", "< 20 ms"),
  ("mixed: /health p99", f"**{mh['p99_ms']:.1f} ms**", "< 20 ms"),
  ("peak RSS", f"**{max(rss10, rss12, rsse):.1f} MiB** (cost-10 instance {rss10:.1f}, cost-12 instance {rss12:.1f}, embedded {rsse:.1f})", "< 64 MiB"),
  ("login_ratio @16, embedded", f"{ok200(e16):.1f}/s ÷ {ceiling:.1f}/s = **{ok200(e16)/ceiling:.3f}**", "≥ 0.97"),
  ("login_ratio @64, embedded", f"{ok200(e64):.1f}/s ÷ {ceiling:.1f}/s = **{ok200(e64)/ceiling:.3f}**", "≥ 0.97"),
  ("login p99 @64, embedded", f"**{e64['p99_ms']:.0f} ms**", f"≤ {fair:.0f} ms"),
  ("me_ratio @64, embedded", f"{ok200(eme):.0f}/s ÷ {ok200(bare):.0f}/s = **{ok200(eme)/ok200(bare):.3f}**", "(≥ 0.35 is for Redis)"),
]
# CPU per login beyond the bcrypt verify (ncores / ceiling CPU-seconds each), during login @64.
import os
def per_login(run, service, others):
    logins = run["statuses"].get("200", 0)
    used = run.get("cpu_s", {})
    if not logins or service not in used: return "n/a"
    verify = (os.cpu_count() or 1) / ceiling
    parts = [f"service {1000 * (used[service] - logins * verify) / logins:.1f}"]
    parts += [f"{name} {1000 * used[pid] / logins:.1f}" for name, pid in others if pid in used]
    parts.append(f"load tool {1000 * used.get('loadtest', 0) / logins:.1f}")
    return ", ".join(parts) + " ms"
rows.append(("CPU per login @64 beyond bcrypt", per_login(l64, service_pid, [("SecantusDB", secantus_pid), ("Redis", redis_pid)]), "(explains the ratio)"))
rows.append(("CPU per login @64 beyond bcrypt, embedded", per_login(e64, embedded_pid, []), "(explains the ratio)"))
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
import os
print(f"## Run of {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC{' (smoke)' if smoke else ''}\n")
print(f"Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}. "
      f"Backends: SecantusDB 0.7.0b3 in memory (MongoDB wire protocol; 5–10× slower than mongod), "
      f"Redis on loopback; rows marked embedded: the SQLite pair on local disk, measured first, before SecantusDB starts. {d} s per measurement; {'debug build, low bcrypt costs: figures not meaningful' if smoke else 'release build'}. "
      f"The bcrypt ceiling: the {kb.get('kernel', '?')} batch kernel in batches of {kb.get('batch', 1)} on all cores"
      f"{' (BCRYPT_FORCE_BACKEND=' + os.environ['BCRYPT_FORCE_BACKEND'] + ')' if os.environ.get('BCRYPT_FORCE_BACKEND') else ''}.\n")
print("| figure | measured | target |\n|---|---|---|")
for r in rows: print(f"| {r[0]} | {r[1]} | {r[2]} |")
print()
print("Statuses: " + "; ".join(f"{n}: {j(n)['statuses']}" for n in ["login16","login64","me64","bare64","storm","mixed-me","mixed-health","login16-embedded","login64-embedded","me64-embedded","login4-near","login4-far"]))
PY

if [ $SMOKE = 0 ]; then
  # The new run goes above the previous runs, below the summary and the peer section.
  TARGET=docs/benchmarks.md
  [ -f "$TARGET" ] || printf '# Benchmarks\n\n' > "$TARGET"
  awk -v run="$OUT/summary.md" '
    function insert() { while ((getline line < run) > 0) print line; print ""; done = 1 }
    /^## Run of / && !done { insert() }
    { print }
    END { if (!done) { print ""; insert() } }
  ' "$TARGET" > "$OUT/benchmarks.new" && mv "$OUT/benchmarks.new" "$TARGET"
  log "added the run to $TARGET; update its \"Latest figures\" by hand if a figure changed"
fi
