#!/usr/bin/env bash
# Logins against the bcrypt ceiling, measured in one run on this machine (issue: every login at
# the kernel's ceiling at any concurrency, and a storm answered in bounded time):
#   - the ceiling: `loadtest bcrypt` verifies/s on all cores in batches of the widest kernel
#     that pays (AVX-512's 16 where the CPU has it), and one at a time; where AVX-512 is there,
#     also AVX2's 8-wide batches: the most 16 clients (8 in flight per core) can reach;
#   - logins/s at 1, 16, 64 and 256 clients and registrations/s at 16, 64 and 256
#     (BCRYPT_COST=10), each ÷ the batched ceiling; one client's login beside one verify;
#   - a storm: 256 clients for 20 s at BCRYPT_COST=12 and 10, clients that wait out Retry-After
#     (as a well-behaved client does), and at cost 12 clients that do not; the admitted logins'
#     p50/p99, the refusals' count and p99, and the goodput ÷ the ceiling at that cost.
# Usage: scripts/hasher-bench.sh [embedded|servers]   (default embedded: no database CPU
# competes with bcrypt; servers = SecantusDB + Redis)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BACKEND="${1:-embedded}"; D="${D:-12}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; stop_started_services; }
trap cleanup EXIT
cd "$ROOT"
timeout 1800 cargo build -q --release --locked -p cs-user-management -p loadtest
BIN="$ROOT/target/release/cs-user-management"; LT="$ROOT/target/release/loadtest"
ensure_venv
OUT="$RUN_DIR/hasher-bench"; rm -rf "$OUT"; mkdir -p "$OUT"
if [ "$BACKEND" = servers ]; then
  ensure_redis; MONGO_PORT=$(free_port); start_secantus "$MONGO_PORT"
fi

start() { # NAME COST: the service on a free port; sets URL
  local name="$1" cost="$2" port; port=$(free_port)
  local env=(APP_ENV=test HOST=127.0.0.1 PORT="$port" BCRYPT_COST="$cost" AUTH_RATE_LIMIT=0
    RUST_LOG=warn JWT_SECRET_KEY="benchmark-secret-key-0123456789abcdef")
  if [ "$BACKEND" = servers ]; then
    env+=(MONGODB_URI="mongodb://127.0.0.1:$MONGO_PORT/hb_$name?directConnection=true"
      REDIS_HOST="$REDIS_TEST_HOST" REDIS_PORT="$REDIS_TEST_PORT" REDIS_KEY_PREFIX="hb:$name:$$:")
  else
    env+=(STORAGE_BACKEND=embedded TOKENS_BACKEND=embedded DATA_DIR="$OUT/data-$name")
  fi
  env "${env[@]}" "$BIN" >"$OUT/service-$name.log" 2>&1 &
  PIDS+=("$!")
  local deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { cat "$OUT/service-$name.log"; exit 1; }
    sleep 0.2
  done
  URL="http://127.0.0.1:$port"
}
stop_last() { kill "${PIDS[-1]}" 2>/dev/null || true; wait "${PIDS[-1]}" 2>/dev/null || true; }

log "ceilings at cost 10 and 12 (batched, one at a time)"
for cost in 10 12; do
  "$LT" bcrypt --cost $cost --duration "$D" --batch 0 --json >"$OUT/ceiling-$cost.json"
  "$LT" bcrypt --cost $cost --duration "$D" --batch 1 --json >"$OUT/single-$cost.json"
done
if grep -qw avx512f /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo && [ -z "${BCRYPT_FORCE_BACKEND:-}" ]; then
  BCRYPT_FORCE_BACKEND=avx2 "$LT" bcrypt --cost 10 --duration "$D" --batch 0 --json >"$OUT/narrow-10.json"
fi
start c10 10
for c in 1 16 64 256; do
  log "logins at $c clients"
  "$LT" run --base-url "$URL" --scenario login --concurrency $c --users 256 --duration "$D" \
    --min-success 0 --json >"$OUT/login-$c.json"
done
for c in 16 64 256; do
  log "registrations at $c clients"
  "$LT" run --base-url "$URL" --scenario register --concurrency $c --duration "$D" \
    --min-success 0 --json >"$OUT/register-$c.json"
done
stop_last
for run in 12:honor 10:honor 12:ignore; do
  cost=${run%%:*}; how=${run##*:}
  start "s$cost$how" $cost
  log "storm: 256 clients, cost $cost, 20 s, Retry-After: $how"
  flags=(--min-success 0); [ "$how" = honor ] && flags+=(--honor-retry-after)
  "$LT" run --base-url "$URL" --scenario login --concurrency 256 --users 256 --duration 20 \
    "${flags[@]}" --json >"$OUT/storm-$cost-$how.json"
  stop_last
done

"$VENV/bin/python" - "$OUT" "$BACKEND" <<'PY'
import json, sys, os
out, backend = sys.argv[1], sys.argv[2]
j = lambda n: json.load(open(os.path.join(out, n)))
ceil = {c: j(f"ceiling-{c}.json")["per_sec"] for c in (10, 12)}
single = {c: j(f"single-{c}.json")["per_sec"] for c in (10, 12)}
ok = lambda r: r["statuses"].get("200", 0) / r["duration_s"]
lat = lambda r, s: r.get("latency_by_status", {}).get(s, {})
print(f"\n### Logins against the bcrypt ceiling ({backend}, cost 10)\n")
kernel = j("ceiling-10.json")
narrow = j("narrow-10.json")["per_sec"] if os.path.exists(os.path.join(out, "narrow-10.json")) else None
print(f"Ceiling: {ceil[10]:.1f} verifies/s in batches of {kernel['lanes']} ({kernel['kernel']}), "
      f"{single[10]:.1f}/s one at a time" + (f", {narrow:.1f}/s in AVX2 batches of 8" if narrow else "") + ".\n")
print("| request | clients | per s | ÷ batched ceiling | ÷ one-at-a-time |" + (" ÷ 8-wide ceiling |" if narrow else "") + " p50 ms | p99 ms | other statuses |")
print("|---|---|---|---|---|---|---|---|" + ("---|" if narrow else ""))
rows = [("login", c, "200") for c in (1, 16, 64, 256)] + [("register", c, "201") for c in (16, 64, 256)]
for kind, c, good in rows:
    r = j(f"{kind}-{c}.json"); l = lat(r, good)
    done = r["statuses"].get(good, 0) / r["duration_s"]
    other = {k: v for k, v in r["statuses"].items() if k != good}
    print(f"| {kind} | {c} | {done:.1f} | **{done/ceil[10]:.2f}** | {done/single[10]:.2f} | "
          + (f"{done/narrow:.2f} | " if narrow else "") + f"{l.get('p50_ms', 0):.0f} | {l.get('p99_ms', 0):.0f} | {other or '-'} |")
one = j("single-10.json"); verify_ms = 1000 * one["threads"] / one["per_sec"]
l1 = lat(j("login-1.json"), "200")
print(f"\nOne client: a login's p50 {l1.get('p50_ms', 0):.1f} ms, p99 {l1.get('p99_ms', 0):.1f} ms; "
      f"one verify at cost 10 takes {verify_ms:.1f} ms (target: ≤ {verify_ms + 5:.1f} ms).")
print(f"\n### Storm: 256 clients for 20 s ({backend})\n")
print("| cost | clients | admitted logins/s (goodput) | ÷ batched ceiling | admitted p50 / p99 ms | 503s | 503 p99 ms | other |")
print("|---|---|---|---|---|---|---|---|")
for cost, how in ((10, "honor"), (12, "honor"), (12, "ignore")):
    r = j(f"storm-{cost}-{how}.json"); a, x = lat(r, "200"), lat(r, "503")
    other = {k: v for k, v in r["statuses"].items() if k not in ("200", "503")}
    who = "wait out Retry-After" if how == "honor" else "retry at once"
    print(f"| {cost} | {who} | {ok(r):.1f} | **{ok(r)/ceil[cost]:.2f}** | {a.get('p50_ms', 0):.0f} / {a.get('p99_ms', 0):.0f} | "
          f"{r['statuses'].get('503', 0)} | {x.get('p99_ms', 0):.1f} | {other or '-'} |")
PY
