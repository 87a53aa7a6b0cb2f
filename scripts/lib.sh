# Shared helpers for scripts/test.sh and .ci/run: a pinned SecantusDB in a virtualenv and a
# Redis that answers. Sourced, not run. Every wait is bounded; every server started here is
# recorded by PID and stopped by `stop_started_services`.

SECANTUS_VERSION="0.7.0b3"
# Python's bcrypt, for the test that the stored hashes are readable by the seed's service.
PY_BCRYPT_VERSION="4.2.0"
# The OpenAPI document's checks: the validator, and a stock client generator whose client the
# tests drive (tests/api/docs.rs).
PY_OPENAPI_TOOLS=("openapi-spec-validator==0.9.0" "openapi-python-client==0.29.1")
# The OTLP receiver of the trace test (tests/otlp/receiver.py) decodes what the service sends.
PY_OTLP_PROTO=("opentelemetry-proto==1.45.2" "protobuf==7.36.2")
# A stock JWT verifier of another ecosystem (tests/jwks/verify.py) and the key pairs it checks.
PY_JWT=("PyJWT==2.15.1" "cryptography==51.0.1")
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
RUN_DIR="${RUN_DIR:-$ROOT/target/services}"
STARTED_PIDS=()

log() { echo "[services] $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ensure_venv() {
  if [ ! -x "$VENV/bin/secantusd-py" ]; then
    log "creating virtualenv $VENV with SecantusDB==$SECANTUS_VERSION"
    python3 -m venv "$VENV" >/dev/null
    timeout 600 "$VENV/bin/pip" install -q "SecantusDB==$SECANTUS_VERSION" "bcrypt==$PY_BCRYPT_VERSION" >&2
  fi
  if [ ! -x "$VENV/bin/openapi-python-client" ] || [ ! -x "$VENV/bin/openapi-spec-validator" ]; then
    log "installing ${PY_OPENAPI_TOOLS[*]} into $VENV"
    timeout 600 "$VENV/bin/pip" install -q "${PY_OPENAPI_TOOLS[@]}" >&2
  fi
  if ! "$VENV/bin/python" -c "import jwt, cryptography" 2>/dev/null; then
    log "installing ${PY_JWT[*]} into $VENV"
    timeout 600 "$VENV/bin/pip" install -q "${PY_JWT[@]}" >&2
  fi
  if ! "$VENV/bin/python" -c "import opentelemetry.proto" 2>/dev/null; then
    log "installing ${PY_OTLP_PROTO[*]} into $VENV"
    timeout 600 "$VENV/bin/pip" install -q "${PY_OTLP_PROTO[@]}" >&2
  fi
}

# start_secantus PORT [DATA_DIR]: starts SecantusDB, waits (<= 60 s) for a ping. Its WiredTiger
# cache is SECANTUS_CACHE_SIZE (default 4G, SecantusDB's own default 1G): in memory, the data, its
# indexes and the oplog all live in that cache, and a test suite's databases (two of 50,000
# users among them) filled 1G: writes slowed fourfold, then failed with WT_CACHE_FULL. (Dropping
# a test's database instead is no way out: dropping 50,000 users held the server for 29 s.)
start_secantus() {
  local port="$1" storage="${2:-:memory:}" extra=()
  mkdir -p "$RUN_DIR"
  if [ "$storage" != ":memory:" ]; then extra=(--sync-on-commit); mkdir -p "$storage"; fi
  "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path "$storage" \
    --cache-size "${SECANTUS_CACHE_SIZE:-4G}" --log-level WARNING "${extra[@]}" \
    >"$RUN_DIR/secantus-$port.log" 2>&1 &
  local pid=$!
  STARTED_PIDS+=("$pid")
  echo "$pid" >"$RUN_DIR/secantus-$port.pid"
  local deadline=$((SECONDS + 60))
  until "$VENV/bin/python" - "$port" >/dev/null 2>&1 <<'PY'
import sys, pymongo
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true", serverSelectionTimeoutMS=500)
c.admin.command("ping")
PY
  do
    if ! kill -0 "$pid" 2>/dev/null; then log "SecantusDB exited; see $RUN_DIR/secantus-$port.log"; return 1; fi
    if [ $SECONDS -ge $deadline ]; then log "SecantusDB did not answer within 60 s"; return 1; fi
    sleep 0.3
  done
  log "SecantusDB on 127.0.0.1:$port (pid $pid)"
}

# ensure_redis: sets REDIS_TEST_HOST/REDIS_TEST_PORT to a Redis that answers, starting one if
# needed (installing redis-server from Debian's packages when it is missing).
ensure_redis() {
  REDIS_TEST_HOST=127.0.0.1
  if command -v redis-cli >/dev/null && timeout 3 redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    REDIS_TEST_PORT=6379
    log "using the Redis on 127.0.0.1:6379"
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq redis-server) >/dev/null 2>&1 \
      || { log "could not install redis-server"; return 1; }
  fi
  REDIS_TEST_PORT=$(free_port)
  mkdir -p "$RUN_DIR"
  redis-server --port "$REDIS_TEST_PORT" --bind 127.0.0.1 --daemonize yes --save '' \
    --appendonly no --pidfile "$RUN_DIR/redis-$REDIS_TEST_PORT.pid" \
    --logfile "$RUN_DIR/redis-$REDIS_TEST_PORT.log" >/dev/null
  local deadline=$((SECONDS + 30))
  until timeout 2 redis-cli -p "$REDIS_TEST_PORT" ping 2>/dev/null | grep -q PONG; do
    if [ $SECONDS -ge $deadline ]; then log "Redis did not answer within 30 s"; return 1; fi
    sleep 0.2
  done
  STARTED_PIDS+=("$(cat "$RUN_DIR/redis-$REDIS_TEST_PORT.pid")")
  log "started Redis on 127.0.0.1:$REDIS_TEST_PORT"
}

# start_redis_cluster: a 3-primary Redis Cluster on loopback for the cluster pass of the tests;
# sets REDIS_CLUSTER_NODES (host:port,…). Each node also listens on its port + 10000 (the cluster
# bus), so both must be free. Nodes are added to STARTED_PIDS.
start_redis_cluster() {
  local ports=() port attempts=0 dir="$RUN_DIR/cluster"
  mkdir -p "$dir"
  while [ ${#ports[@]} -lt 3 ]; do
    attempts=$((attempts + 1))
    [ $attempts -le 50 ] || { log "no free port pair for a cluster node"; return 1; }
    port=$(python3 -c 'import random; print(random.randint(20000, 29999))')
    if python3 - "$port" <<'PY'
import socket, sys
p = int(sys.argv[1])
for q in (p, p + 10000):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", q))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
    then
      case " ${ports[*]} " in *" $port "*) ;; *) ports+=("$port") ;; esac
    fi
  done
  for port in "${ports[@]}"; do
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 5000 \
      --save '' --appendonly no --dir "$dir" --daemonize yes \
      --pidfile "$dir/redis-$port.pid" --logfile "$dir/redis-$port.log" >/dev/null
  done
  for port in "${ports[@]}"; do
    local deadline=$((SECONDS + 30)) up=1
    until timeout 2 redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do
      [ $SECONDS -lt $deadline ] || { up=0; break; }
      sleep 0.2
    done
    # Stopped at exit whether or not it answered.
    [ -s "$dir/redis-$port.pid" ] && STARTED_PIDS+=("$(cat "$dir/redis-$port.pid")")
    [ $up = 1 ] || { log "cluster node $port did not answer"; return 1; }
  done
  timeout 60 redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 0 \
    --cluster-yes >"$dir/create.log" 2>&1 || { log "redis-cli --cluster create failed; see $dir/create.log"; return 1; }
  local deadline=$((SECONDS + 60))
  for port in "${ports[@]}"; do
    until timeout 2 redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
      [ $SECONDS -lt $deadline ] || { log "the cluster did not reach cluster_state:ok"; return 1; }
      sleep 0.3
    done
  done
  REDIS_CLUSTER_NODES=$(printf '127.0.0.1:%s,' "${ports[@]}")
  REDIS_CLUSTER_NODES=${REDIS_CLUSTER_NODES%,}
  log "started a 3-primary Redis Cluster on $REDIS_CLUSTER_NODES"
}

# ensure_chromium: makes sure a `chromium` is on PATH for the browser test of /ops (tests/api/
# ops_page.rs), installing Debian's package when it is missing. CHROMIUM, if set, names the binary.
ensure_chromium() {
  local binary="${CHROMIUM:-chromium}"
  if command -v "$binary" >/dev/null; then
    return 0
  fi
  log "installing chromium"
  (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || { log "could not install chromium"; return 1; }
  command -v "$binary" >/dev/null || { log "chromium installed but \`$binary\` is not on PATH"; return 1; }
  log "installed $(chromium --version 2>/dev/null)"
}

# ensure_prometheus: makes sure `prometheus` and `promtool` are on PATH for the alert-rule tests
# (tests/api/alerts.rs), installing Debian's package when they are missing.
ensure_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return 0
  fi
  log "installing prometheus"
  (timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 \
    || { log "could not install prometheus"; return 1; }
  log "installed $(prometheus --version 2>&1 | head -n 1)"
}

stop_started_services() {
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# start_baseline LOADTEST LOG: the bare actix-web JSON handler the benchmarks compare against, on
# a free port (sets BASE_PORT, adds its PID to PIDS); waits (<= 30 s) until it answers.
start_baseline() {
  BASE_PORT=$(free_port)
  "$1" baseline --port "$BASE_PORT" >"$2" 2>&1 &
  PIDS+=("$!")
  local deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$BASE_PORT/" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && { log "baseline did not start"; return 1; }
    sleep 0.1
  done
}

