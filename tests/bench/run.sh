#!/usr/bin/env bash
# `make bench`: tests/bench/run.sh BUILD_DIR
#
# Measures depth-realtime (bench.conf, 2 workers) and the Node reference
# (node-reference.mjs, socket.io 4.8) with the same load generator, on loopback:
#   idle      BENCH_CONNECTIONS (10000) connections on / and /chat: RSS and CPU per
#             connection, and, held for BENCH_SETTLE (30 s: a ping interval), the
#             CPU an idle connection costs per second
#   idle_large BENCH_LARGE_CONNECTIONS (100000; 0: skipped) idle connections on /,
#             opened by several loadgens (15,000 each, one source address each:
#             a process may hold no more descriptors than the hard limit), on
#             enough workers for the same reason: RSS per connection and the CPU
#             an idle connection costs per second over BENCH_SETTLE
#   echo      BENCH_ECHO_CONNECTIONS x BENCH_ECHO_RATE acked events/s: latency at a fixed load
#   echo_max  closed loop (BENCH_MAX_WINDOW acks in flight per connection): throughput
# each after a warm-up of BENCH_WARMUP (1000) connections that is not reported.
# Then, with Redis (BENCH_FANOUT=1, when redis-server is installed):
#   fanout    two depth-realtime processes on one private redis-server;
#             BENCH_FANOUT_CONNECTIONS (1000) clients spread over both join one
#             room and one of them broadcasts BENCH_FANOUT_RATE (20) messages/s
#             to it: delivered messages/s, latency p50/p99, CPU per delivery
#   fanout_cluster (BENCH_FANOUT_CLUSTER=1) the same through a 3-master Redis
#             Cluster (sharded Pub/Sub; `redis cluster=...`), Redis CPU summed
#             over the three
#   recovery  (BENCH_RECOVERY=1) one depth-realtime process on a private
#             redis-server, recovery_window 120s and then 0: connect cost of
#             BENCH_RECOVERY_CONNECTIONS (2000) connections (idle), and the Redis
#             commands and session writes per connect, join, leave, several
#             joins in one event and disconnect (recovery-cost.mjs)
#   ratelimit (BENCH_RATELIMIT=1) two depth-realtime processes on a private
#             redis-server: Redis commands per 1,000 admitted events of a user
#             far from the limit, ack latency near the limit (ratelimit-cost.mjs)
# Writes bench-results/bench-<timestamp>.json and bench-results/latest.json.
#
# A daemon that is missing or does not start is recorded, and Node is still
# measured (BENCH_STRICT=1 makes that an error). Exit status is non-zero only
# when a scenario could not run at all.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD=${1:-build}
case $BUILD in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac

BENCH_SERVERS=${BENCH_SERVERS:-"depth-realtime node"}
BENCH_CONNECTIONS=${BENCH_CONNECTIONS:-10000}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-200}
BENCH_SETTLE=${BENCH_SETTLE:-30}
BENCH_LARGE_CONNECTIONS=${BENCH_LARGE_CONNECTIONS:-100000}
BENCH_ECHO_CONNECTIONS=${BENCH_ECHO_CONNECTIONS:-200}
BENCH_ECHO_RATE=${BENCH_ECHO_RATE:-50}
BENCH_ECHO_DURATION=${BENCH_ECHO_DURATION:-10}
BENCH_MAX_CONNECTIONS=${BENCH_MAX_CONNECTIONS:-200}
BENCH_MAX_WINDOW=${BENCH_MAX_WINDOW:-8}
BENCH_WORKERS=${BENCH_WORKERS:-2}
BENCH_WARMUP=${BENCH_WARMUP:-1000}  # connections opened and dropped first, so JIT warm-up is not measured
BENCH_PAUSE=${BENCH_PAUSE:-2}   # lets a server finish closing the previous scenario's sockets
BENCH_STRICT=${BENCH_STRICT:-0}
BENCH_FANOUT=${BENCH_FANOUT:-1}
BENCH_FANOUT_CONNECTIONS=${BENCH_FANOUT_CONNECTIONS:-1000}
BENCH_FANOUT_RATE=${BENCH_FANOUT_RATE:-20}
BENCH_FANOUT_DURATION=${BENCH_FANOUT_DURATION:-10}
BENCH_FANOUT_PAYLOAD=${BENCH_FANOUT_PAYLOAD:-64}
BENCH_FANOUT_CLUSTER=${BENCH_FANOUT_CLUSTER:-1}
BENCH_RECOVERY=${BENCH_RECOVERY:-1}
BENCH_RECOVERY_CONNECTIONS=${BENCH_RECOVERY_CONNECTIONS:-2000}
BENCH_RATELIMIT=${BENCH_RATELIMIT:-1}
export JWT_SECRET=${JWT_SECRET:-bench-secret-not-for-production}

log() { echo "bench: $*" >&2; }

# Descriptors: as many as the hard limit allows (a machine may forbid raising it).
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
LARGE_PER_PROC=$(( NOFILE - 2000 < 15000 ? NOFILE - 2000 : 15000 ))

# ------------------------------------------------------------ prerequisites

LOADGEN=${BENCH_LOADGEN:-"$BUILD/tests/bench/dr_loadgen"}  # BENCH_LOADGEN: measure another build's daemon with this one
build_loadgen() {
  [ -n "${BENCH_LOADGEN:-}" ] && [ -x "$LOADGEN" ] && return 0
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || return 1
  fi
  cmake --build "$BUILD" --target dr_loadgen
}
if ! build_loadgen; then
  # The loadgen has no dependency on the daemon's sources: when the tree does
  # not build yet, compile it alone so Node can still be measured.
  log "cmake could not build dr_loadgen; compiling it directly"
  mkdir -p "$(dirname "$LOADGEN")"
  ${CXX:-c++} -std=c++20 -O2 -Wall -Wextra tests/bench/loadgen.cc -luv -lcrypto -o "$LOADGEN" || {
    log "cannot build the load generator"
    exit 1
  }
fi

command -v node >/dev/null || { log "node is required (scripts/deps.sh installs it)"; exit 1; }
if [ ! -f tests/node_modules/socket.io/package.json ]; then
  scripts/deps.sh || { log "scripts/deps.sh failed"; exit 1; }
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dr-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  stop_server
  stop_cluster
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ server control

free_port() {
  node -e 'const s = require("net").createServer();
           s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# Every descendant of $1 (the daemon's workers), deepest last.
descendants() {
  local kids k
  kids=$(pgrep -P "$1" 2>/dev/null) || return 0
  for k in $kids; do
    echo "$k"
    descendants "$k"
  done
}

# Waits until the server answers an Engine.IO handshake, or gives up.
wait_ready() {
  local port=$1 pid=$2 i code
  for i in $(seq 1 100); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/socket.io/?EIO=4&transport=polling" || true)
    [ "$code" = 200 ] && return 0
    # The master may have exited after daemonizing: then the pid file tells.
    if ! kill -0 "$pid" 2>/dev/null && [ ! -s "$TMP/dr.pid" ]; then return 1; fi
    sleep 0.2
  done
  return 1
}

# start_server NAME PORT: sets SERVER_PID, or writes why not to $TMP/NAME.status.
start_server() {
  local name=$1 port=$2 logf="$TMP/$1.log"
  case $name in
    depth-realtime)
      if [ ! -x "$BUILD/depth-realtime" ]; then
        echo "binary missing: $BUILD/depth-realtime" >"$TMP/$name.status"
        return 1
      fi
      echo "$BUILD/depth-realtime -c tests/bench/bench.conf -M $BUILD/modules (workers: $BENCH_WORKERS)" >"$TMP/$name.command"
      PORT=$port DR_BENCH_WORKERS=$BENCH_WORKERS DR_BENCH_PID="$TMP/dr.pid" \
        "$BUILD/depth-realtime" -c tests/bench/bench.conf -M "$BUILD/modules" >"$logf" 2>&1 &
      ;;
    node)
      echo "node tests/bench/node-reference.mjs ($(node --version))" >"$TMP/$name.command"
      PORT=$port node tests/bench/node-reference.mjs >"$logf" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  if ! wait_ready "$port" "$SERVER_PID"; then
    echo "failed to start (no answer on 127.0.0.1:$port)" >"$TMP/$name.status"
    stop_server
    return 1
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null && [ -s "$TMP/dr.pid" ]; then
    SERVER_PID=$(cat "$TMP/dr.pid")
  fi
  echo ok >"$TMP/$name.status"
  return 0
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid=$SERVER_PID kids i
  SERVER_PID=""
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null
  # Workers that outlived their master are ours too.
  for k in $kids; do kill -KILL "$k" 2>/dev/null; done
  wait "$pid" 2>/dev/null
  return 0
}

# ------------------------------------------------------------ scenarios

FAILED=0

# run_scenario SERVER NAME LOADGEN_ARGS...: $TMP/SERVER.NAME.json holds the result.
run_scenario() {
  local server=$1 name=$2 out="$TMP/$1.$2.json" err="$TMP/$1.$2.err" rc
  shift 2
  log "$server: $name"
  "$LOADGEN" "$@" --port "$PORT" --secret "$JWT_SECRET" --server-pid-tree "$SERVER_PID" >"$out" 2>"$err"
  rc=$?
  if [ $rc -ne 0 ] || ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$out" 2>/dev/null; then
    log "$server: $name could not run (loadgen exit $rc): $(tail -n 3 "$err" | tr '\n' ' ')"
    [ -s "$out" ] || echo "{\"error\":\"loadgen exit $rc\"}" >"$out"
    FAILED=1
  fi
  sleep "$BENCH_PAUSE"
}

for server in $BENCH_SERVERS; do
  PORT=$(free_port)
  log "starting $server on 127.0.0.1:$PORT"
  if ! start_server "$server" "$PORT"; then
    log "$server: $(cat "$TMP/$server.status")"
    [ "$server" = node ] || [ "$BENCH_STRICT" = 1 ] && FAILED=1
    continue
  fi
  if [ "$BENCH_WARMUP" -gt 0 ]; then
    run_scenario "$server" warmup idle --connections "$BENCH_WARMUP" --settle 0 --max-seconds 60
  fi
  run_scenario "$server" idle idle --connections "$BENCH_CONNECTIONS" --concurrency "$BENCH_CONCURRENCY" \
    --namespaces /,/chat --settle "$BENCH_SETTLE" --max-seconds 300
  run_scenario "$server" echo echo --connections "$BENCH_ECHO_CONNECTIONS" --rate "$BENCH_ECHO_RATE" \
    --duration "$BENCH_ECHO_DURATION" --max-seconds 120
  run_scenario "$server" echo_max echo --connections "$BENCH_MAX_CONNECTIONS" --rate 0 \
    --window "$BENCH_MAX_WINDOW" --duration "$BENCH_ECHO_DURATION" --max-seconds 120
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "exited during the benchmark" >"$TMP/$server.status"
    log "$server exited during the benchmark"
  fi
  stop_server
done

# ------------------------------------------------------- idle at scale

tree_sum() {  # tree_sum PID FIELD: utime+stime ticks (cpu) or VmRSS kB (rss) over PID and its descendants
  local p total=0
  for p in $1 $(descendants "$1"); do
    if [ "$2" = cpu ]; then total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    else total=$(( total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); fi
  done
  echo "$total"
}

# run_idle_large SERVER: $TMP/SERVER.idle_large.json
run_idle_large() {
  local server=$1 out="$TMP/$1.idle_large.json" n=$BENCH_LARGE_CONNECTIONS per=$LARGE_PER_PROC
  local procs=$(( (n + per - 1) / per )) workers port i pids="" est=0 rss0 rss1 cpu0 cpu1 t0 t1 waited
  if [ "$server" = node ] && [ "$n" -gt $((NOFILE - 1000)) ]; then
    echo "{\"skipped\":\"one Node process cannot hold $n connections with $NOFILE descriptors (the hard limit here)\"}" >"$out"
    return 0
  fi
  workers=$(( procs > BENCH_WORKERS ? procs : BENCH_WORKERS ))
  port=$(free_port)
  log "$server: idle_large ($n connections from $procs loadgens; depth-realtime on $workers workers)"
  BENCH_WORKERS_SAVED=$BENCH_WORKERS
  BENCH_WORKERS=$workers
  PORT=$port
  if ! start_server "$server" "$port"; then
    BENCH_WORKERS=$BENCH_WORKERS_SAVED
    echo "{\"error\":\"$server did not start for idle_large\"}" >"$out"
    return 1
  fi
  BENCH_WORKERS=$BENCH_WORKERS_SAVED
  rss0=$(tree_sum "$SERVER_PID" rss)
  for i in $(seq 1 "$procs"); do
    local c=$(( i < procs ? per : n - per * (procs - 1) ))
    "$LOADGEN" idle --port "$port" --secret "$JWT_SECRET" --connections "$c" --concurrency 100 --namespaces / \
      --source-first "$i" --settle 100000 --max-seconds 100000 >"$TMP/large-$i.json" 2>"$TMP/large-$i.err" &
    pids="$pids $!"
  done
  # Held once every loadgen has established its connections (or gave up).
  for waited in $(seq 1 600); do
    [ "$(grep -l '^loadgen: established' "$TMP"/large-*.err 2>/dev/null | wc -l)" -ge "$procs" ] && break
    sleep 1
  done
  sleep "$BENCH_PAUSE"
  for i in $(seq 1 "$procs"); do
    est=$(( est + $(sed -n 's/^loadgen: established \([0-9]*\)\/.*/\1/p' "$TMP/large-$i.err" | head -n 1 | grep . || echo 0) ))
  done
  rss1=$(tree_sum "$SERVER_PID" rss)
  cpu0=$(tree_sum "$SERVER_PID" cpu); t0=$(date +%s.%N)
  sleep "$BENCH_SETTLE"
  cpu1=$(tree_sum "$SERVER_PID" cpu); t1=$(date +%s.%N)
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  stop_server
  node -e '
    const [n, est, rss0, rss1, cpu0, cpu1, t0, t1, tck, procs, workers] = process.argv.slice(1).map(Number);
    const held = t1 - t0, cpuMs = (cpu1 - cpu0) * 1000 / tck;
    console.log(JSON.stringify({
      scenario: "idle_large", connections: n, established: est, loadgens: procs, server_workers: workers,
      rss_per_conn_bytes: est ? Math.round((rss1 - rss0) * 1024 / est) : null,
      held_seconds: +held.toFixed(1), idle_cpu_ms: +cpuMs.toFixed(1),
      idle_cpu_per_conn_per_s_us: est ? +(cpuMs * 1000 / est / held).toFixed(3) : null,
    }));' "$n" "$est" "$rss0" "$rss1" "$cpu0" "$cpu1" "$t0" "$t1" "$(getconf CLK_TCK)" "$procs" "$workers" >"$out"
  sleep "$BENCH_PAUSE"
}

if [ "$BENCH_LARGE_CONNECTIONS" -gt 0 ]; then
  for server in $BENCH_SERVERS; do run_idle_large "$server" || FAILED=1; done
fi

# ---------------------------------------------- cross-process fan-out (Redis)

CLUSTER_PIDS=""
REDIS_PIDS=""
stop_cluster() {
  local p k kids=""
  for p in $CLUSTER_PIDS; do kids="$kids $(descendants "$p")"; kill -TERM "$p" 2>/dev/null; done
  for p in $CLUSTER_PIDS; do
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null
  done
  for k in $kids; do kill -KILL "$k" 2>/dev/null; done
  CLUSTER_PIDS=""
  for p in $REDIS_PIDS; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  REDIS_PIDS=""
  return 0
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
redis_ticks() { local p t=0; for p in $REDIS_PIDS; do t=$((t + $(cpu_ticks "$p"))); done; echo "$t"; }

# One redis-server (`redis HOST:PORT`), or (cluster) three with cluster mode
# joined by `redis-cli --cluster create` (`redis cluster=...`). Sets REDIS_PIDS
# and REDIS_ARG (the `redis` directive's argument); not in a subshell, so that
# the servers' pids are known to stop_cluster.
REDIS_ARG=""
start_redis_for_fanout() {
  local mode=$1 n=1 i rport ports=() dir="$TMP/rcluster"
  [ "$mode" = cluster ] && n=3
  mkdir -p "$dir"
  for i in $(seq 1 "$n"); do
    rport=$(free_port)
    if [ "$mode" = cluster ]; then
      redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --cluster-enabled yes \
        --cluster-config-file "$dir/nodes-$rport.conf" >"$TMP/redis-$rport.log" 2>&1 &
    else
      redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis-$rport.log" 2>&1 &
    fi
    REDIS_PIDS="$REDIS_PIDS $!"
    ports+=("127.0.0.1:$rport")
    for j in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  if [ "$mode" = cluster ]; then
    redis-cli --cluster create "${ports[@]}" --cluster-replicas 0 --cluster-yes >"$TMP/rcluster.log" 2>&1 || return 1
    for j in $(seq 1 100); do
      redis-cli -p "${ports[0]##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
    REDIS_ARG="cluster=$(IFS=,; echo "${ports[*]}")"
  else
    REDIS_ARG="${ports[0]}"
  fi
}

# run_fanout single|cluster: two processes, one room, one publisher.
run_fanout() {
  local mode=$1 sfx="" p i port pids="" ports=() t0 t1
  [ "$mode" = cluster ] && sfx="_cluster"
  start_redis_for_fanout "$mode" || {
    echo "{\"error\":\"the Redis Cluster could not be created: $(tail -n 2 "$TMP/rcluster.log" | tr '\n"' '  ')\"}" >"$TMP/depth-realtime.fanout$sfx.json"
    stop_cluster
    return 1
  }
  for i in 1 2; do
    port=$(free_port)
    PORT=$port DR_BENCH_WORKERS=$BENCH_WORKERS DR_BENCH_PID="$TMP/dr-fanout-$i.pid" DR_BENCH_REDIS="$REDIS_ARG" \
      "$BUILD/depth-realtime" -c tests/bench/bench.conf -M "$BUILD/modules" >"$TMP/fanout$sfx-$i.log" 2>&1 &
    p=$!
    CLUSTER_PIDS="$CLUSTER_PIDS $p"
    ports+=("$port")
    if ! wait_ready "$port" "$p"; then
      echo "{\"error\":\"process $i did not start: $(tail -n 2 "$TMP/fanout$sfx-$i.log" | tr '\n"' '  ')\"}" >"$TMP/depth-realtime.fanout$sfx.json"
      stop_cluster
      return 1
    fi
    # Ready means joined to the cluster through Redis.
    for j in $(seq 1 100); do
      [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
      sleep 0.1
    done
  done
  for p in $CLUSTER_PIDS; do pids="$pids,$p$(descendants "$p" | tr '\n' ',' | sed 's/^/,/; s/,$//')"; done
  if [ "$mode" = cluster ]; then
    echo "$BUILD/depth-realtime x2 (workers: $BENCH_WORKERS each) on a 3-master Redis Cluster $(redis-server --version | awk '{print $3}')" \
      >"$TMP/fanout$sfx.command"
  else
    echo "$BUILD/depth-realtime x2 (workers: $BENCH_WORKERS each) on redis-server $(redis-server --version | awk '{print $3}')" \
      >"$TMP/fanout$sfx.command"
  fi
  log "depth-realtime: fanout$sfx ($BENCH_FANOUT_CONNECTIONS clients on 2 processes, $BENCH_FANOUT_RATE msg/s)"
  t0=$(redis_ticks)
  "$LOADGEN" fanout --port "${ports[0]}" --port2 "${ports[1]}" --secret "$JWT_SECRET" --namespaces / \
    --connections "$BENCH_FANOUT_CONNECTIONS" --rate "$BENCH_FANOUT_RATE" --duration "$BENCH_FANOUT_DURATION" \
    --payload "$BENCH_FANOUT_PAYLOAD" --settle 1 --max-seconds 120 --server-pids "${pids#,}" \
    >"$TMP/depth-realtime.fanout$sfx.json" 2>"$TMP/fanout$sfx.err"
  local rc=$?
  t1=$(redis_ticks)
  echo "$(( (t1 - t0) * 1000 / $(getconf CLK_TCK) ))" >"$TMP/fanout$sfx.redis_cpu_ms"
  stop_cluster
  [ $rc -eq 0 ] || { log "fanout$sfx could not run (loadgen exit $rc): $(tail -n 3 "$TMP/fanout$sfx.err" | tr '\n' ' ')"; return 1; }
  return 0
}

if [ "$BENCH_FANOUT" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]]; then
  if ! command -v redis-server >/dev/null; then
    log "fanout: redis-server is not installed (scripts/deps.sh installs it); skipped"
  elif [ ! -x "$BUILD/depth-realtime" ]; then
    log "fanout: $BUILD/depth-realtime is missing; skipped"
  else
    run_fanout single || FAILED=1
    if [ "$BENCH_FANOUT_CLUSTER" = 1 ]; then run_fanout cluster || FAILED=1; fi
  fi
fi

# ------------------------------- connection state recovery cost (Redis)

# One process on a fresh Redis per setting: recovery on (120s) and off (0).
run_recovery() {
  local mode window rport port p rc=0
  for mode in on off; do
    [ "$mode" = on ] && window=120s || window=0
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$TMP/redis-recovery.log" 2>&1 &
    REDIS_PIDS=$!
    for i in $(seq 1 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    port=$(free_port)
    PORT=$port DR_BENCH_WORKERS=$BENCH_WORKERS DR_BENCH_PID="$TMP/dr-recovery.pid" DR_BENCH_REDIS="127.0.0.1:$rport" \
      DR_BENCH_RECOVERY_WINDOW=$window \
      "$BUILD/depth-realtime" -c tests/bench/bench.conf -M "$BUILD/modules" >"$TMP/recovery-$mode.log" 2>&1 &
    p=$!
    CLUSTER_PIDS="$p"
    if ! wait_ready "$port" "$p"; then
      echo "{\"error\":\"did not start: $(tail -n 2 "$TMP/recovery-$mode.log" | tr '\n"' '  ')\"}" >"$TMP/recovery.$mode.idle.json"
      stop_cluster
      rc=1
      continue
    fi
    log "depth-realtime: recovery $mode ($window): connect cost, $BENCH_RECOVERY_CONNECTIONS connections"
    "$LOADGEN" idle --port "$port" --secret "$JWT_SECRET" --namespaces / --connections "$BENCH_RECOVERY_CONNECTIONS" \
      --concurrency "$BENCH_CONCURRENCY" --settle 1 --max-seconds 120 --server-pid-tree "$p" \
      >"$TMP/recovery.$mode.idle.json" 2>"$TMP/recovery.$mode.idle.err" || rc=1
    sleep "$BENCH_PAUSE"
    log "depth-realtime: recovery $mode: Redis commands per connect / join / leave / disconnect"
    node tests/bench/recovery-cost.mjs --port "$port" --redis-port "$rport" \
      >"$TMP/recovery.$mode.cost.json" 2>"$TMP/recovery.$mode.cost.err" || rc=1
    stop_cluster
  done
  return $rc
}

if [ "$BENCH_RECOVERY" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]]; then
  if ! command -v redis-server >/dev/null; then
    log "recovery: redis-server is not installed (scripts/deps.sh installs it); skipped"
  elif [ ! -x "$BUILD/depth-realtime" ]; then
    log "recovery: $BUILD/depth-realtime is missing; skipped"
  else
    run_recovery || FAILED=1
  fi
fi

# ------------------------------------- exact rate limit: budget leases (Redis)

if [ "$BENCH_RATELIMIT" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]] &&
  command -v redis-server >/dev/null && [ -x "$BUILD/depth-realtime" ]; then
  log "depth-realtime: rate limit leases: Redis commands per 1,000 events, latency at the limit"
  node tests/bench/ratelimit-cost.mjs --build "$BUILD" >"$TMP/ratelimit.json" 2>"$TMP/ratelimit.err" || FAILED=1
fi

# ------------------------------------------------------------ results

mkdir -p bench-results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULT="bench-results/bench-$STAMP.json"

BENCH_SETTINGS=$(printf '{"connections":%s,"concurrency":%s,"settle_s":%s,"echo_connections":%s,"echo_rate":%s,"echo_duration_s":%s,"max_connections":%s,"max_window":%s,"workers":%s,"fanout_connections":%s,"fanout_rate":%s,"fanout_duration_s":%s,"fanout_payload":%s}' \
  "$BENCH_CONNECTIONS" "$BENCH_CONCURRENCY" "$BENCH_SETTLE" "$BENCH_ECHO_CONNECTIONS" "$BENCH_ECHO_RATE" \
  "$BENCH_ECHO_DURATION" "$BENCH_MAX_CONNECTIONS" "$BENCH_MAX_WINDOW" "$BENCH_WORKERS" \
  "$BENCH_FANOUT_CONNECTIONS" "$BENCH_FANOUT_RATE" "$BENCH_FANOUT_DURATION" "$BENCH_FANOUT_PAYLOAD")

BENCH_TMP="$TMP" BENCH_STAMP="$STAMP" BENCH_SETTINGS="$BENCH_SETTINGS" BENCH_SERVERS="$BENCH_SERVERS" \
node --input-type=module - "$RESULT" <<'EOF'
import fs from "node:fs";
import os from "node:os";

const tmp = process.env.BENCH_TMP;
const read = (f) => (fs.existsSync(`${tmp}/${f}`) ? fs.readFileSync(`${tmp}/${f}`, "utf8").trim() : null);
const readJson = (f) => {
  const t = read(f);
  try { return t ? JSON.parse(t) : null; } catch { return { error: "unparsable loadgen output" }; }
};

const servers = {};
for (const name of ["depth-realtime", "node"]) {
  if (!process.env.BENCH_SERVERS.split(/\s+/).includes(name)) continue;
  const s = { status: read(`${name}.status`) ?? "not run", command: read(`${name}.command`) };
  for (const sc of ["idle", "idle_large", "echo", "echo_max"]) {
    const r = readJson(`${name}.${sc}.json`);
    if (r) s[sc] = r;
  }
  const logText = read(`${name}.log`);
  if (s.status !== "ok" && logText) s.log_tail = logText.split("\n").slice(-20).join("\n");
  // Cross-process fan-out through one Redis, and through a 3-master Redis
  // Cluster (depth-realtime only).
  for (const sc of ["fanout", "fanout_cluster"]) {
    const fanout = readJson(`${name}.${sc}.json`);
    if (!fanout) continue;
    const redisCpu = Number(read(`${sc}.redis_cpu_ms`));
    fanout.command = read(`${sc}.command`);
    if (Number.isFinite(redisCpu)) {
      fanout.redis_cpu_ms = redisCpu;
      if (fanout.delivered > 0) fanout.redis_cpu_per_delivered_us = +(redisCpu * 1000 / fanout.delivered).toFixed(3);
    }
    s[sc] = fanout;
  }
  // Connection state recovery on and off (depth-realtime only).
  const recovery = {};
  for (const mode of ["on", "off"]) {
    const idle = readJson(`recovery.${mode}.idle.json`);
    const cost = readJson(`recovery.${mode}.cost.json`);
    if (name === "depth-realtime" && (idle || cost)) recovery[mode] = { idle, redis: cost };
  }
  if (Object.keys(recovery).length) s.recovery = recovery;
  const ratelimit = name === "depth-realtime" ? readJson("ratelimit.json") : null;
  if (ratelimit) s.ratelimit = ratelimit;
  servers[name] = s;
}

const ours = servers["depth-realtime"] ?? {}, node = servers.node ?? {};
const ratio = (a, b) => (typeof a === "number" && typeof b === "number" && b > 0 ? +(a / b).toFixed(2) : null);
const ratios = {
  // > 1 means depth-realtime is better
  rss_per_conn_node_over_ours: ratio(node.idle?.rss_per_conn_bytes, ours.idle?.rss_per_conn_bytes),
  cpu_per_conn_node_over_ours: ratio(node.idle?.cpu_per_conn_us, ours.idle?.cpu_per_conn_us),
  idle_cpu_node_over_ours: ratio(node.idle?.idle_cpu_per_conn_per_s_us, ours.idle?.idle_cpu_per_conn_per_s_us),
  idle_large_cpu_node_over_ours: ratio(node.idle_large?.idle_cpu_per_conn_per_s_us, ours.idle_large?.idle_cpu_per_conn_per_s_us),
  echo_throughput_ours_over_node: ratio(ours.echo_max?.acks_per_sec, node.echo_max?.acks_per_sec),
  echo_cpu_per_ack_node_over_ours: ratio(node.echo?.cpu_per_ack_us, ours.echo?.cpu_per_ack_us),
  echo_p99_node_over_ours: ratio(node.echo?.latency_p99_ms, ours.echo?.latency_p99_ms),
};

// The loadgen shares the machine with the server: when it is near a full core,
// the throughput it reports is a lower bound for the server.
const warnings = [];
for (const [name, s] of Object.entries(servers)) {
  for (const sc of ["echo", "echo_max"]) {
    const r = s[sc];
    if (!r?.loadgen_cpu_echo_ms || !r.duration_seconds) continue;
    const busy = r.loadgen_cpu_echo_ms / (r.duration_seconds * 1000);
    if (busy > 0.8) warnings.push(`${name} ${sc}: the loadgen was ${Math.round(busy * 100)}% busy; acks/s is a lower bound`);
  }
  for (const sc of ["idle", "idle_large", "echo", "echo_max"]) {
    const r = s[sc];
    if (r?.failures > 0) warnings.push(`${name} ${sc}: ${r.failures} connections failed (${r.first_error ?? "?"})`);
    if (r?.lost_after_connect > 0) warnings.push(`${name} ${sc}: ${r.lost_after_connect} connections dropped after connecting`);
    if (r?.unacked > 0) warnings.push(`${name} ${sc}: ${r.unacked} events never acked`);
  }
  for (const sc of ["fanout", "fanout_cluster"]) {
    const fo = s[sc];
    if (fo?.error) warnings.push(`${name} ${sc}: ${fo.error}`);
    if (fo && typeof fo.delivered_ratio === "number" && fo.delivered_ratio < 1)
      warnings.push(`${name} ${sc}: ${fo.expected_deliveries - fo.delivered} of ${fo.expected_deliveries} deliveries missing`);
    if (fo?.loadgen_cpu_ms && fo.duration_seconds && fo.loadgen_cpu_ms / (fo.duration_seconds * 1000) > 0.8)
      warnings.push(`${name} ${sc}: the loadgen was busy over 80%; latency includes its queueing`);
  }
}

const result = {
  timestamp: process.env.BENCH_STAMP,
  machine: { cpus: os.cpus().length, memory_mb: Math.round(os.totalmem() / 2 ** 20), kernel: os.release(), node: process.version },
  settings: JSON.parse(process.env.BENCH_SETTINGS),
  servers,
  ratios,
  warnings,
};
const text = JSON.stringify(result, null, 2) + "\n";
fs.writeFileSync(process.argv[2], text);
fs.writeFileSync("bench-results/latest.json", text);

// Short human summary.
const f = (v, d = 1) => (typeof v === "number" ? v.toFixed(d) : "-");
const kb = (v) => (typeof v === "number" ? (v / 1024).toFixed(1) + " KB" : "-");
const rows = [
  ["idle: connections established", (s) => s.idle ? `${s.idle.established}/${s.idle.connections}` : "-", null],
  ["idle: connect time (s)", (s) => f(s.idle?.connect_seconds, 2), null],
  ["idle: RSS per connection", (s) => kb(s.idle?.rss_per_conn_bytes), ratios.rss_per_conn_node_over_ours],
  ["idle: CPU per connection (us)", (s) => f(s.idle?.cpu_per_conn_us), ratios.cpu_per_conn_node_over_ours],
  ["idle: CPU/conn/s held (us)", (s) => f(s.idle?.idle_cpu_per_conn_per_s_us, 3), ratios.idle_cpu_node_over_ours],
  ["idle_large: established", (s) => s.idle_large ? `${s.idle_large.established}/${s.idle_large.connections}` : "-", null],
  ["idle_large: RSS per connection", (s) => kb(s.idle_large?.rss_per_conn_bytes), null],
  ["idle_large: CPU/conn/s held (us)", (s) => f(s.idle_large?.idle_cpu_per_conn_per_s_us, 3), ratios.idle_large_cpu_node_over_ours],
  ["echo: acks/s at fixed rate", (s) => f(s.echo?.acks_per_sec, 0), null],
  ["echo: latency p50 / p99 (ms)", (s) => `${f(s.echo?.latency_p50_ms, 2)} / ${f(s.echo?.latency_p99_ms, 2)}`, ratios.echo_p99_node_over_ours],
  ["echo: server CPU per ack (us)", (s) => f(s.echo?.cpu_per_ack_us), ratios.echo_cpu_per_ack_node_over_ours],
  ["echo_max: acks/s (closed loop)", (s) => f(s.echo_max?.acks_per_sec, 0), ratios.echo_throughput_ours_over_node],
  ["fanout: delivered msgs/s", (s) => (s.fanout ? `${f(s.fanout.delivered_per_sec, 0)} (${f(100 * (s.fanout.delivered_ratio ?? 0), 2)}%)` : "-"), null],
  ["fanout: latency p50 / p99 (ms)", (s) => (s.fanout ? `${f(s.fanout.latency_p50_ms, 2)} / ${f(s.fanout.latency_p99_ms, 2)}` : "-"), null],
  ["fanout: CPU/delivery (us)", (s) => f(s.fanout?.cpu_per_delivered_us, 2), null],
  ["fanout: Redis CPU/deliv. (us)", (s) => f(s.fanout?.redis_cpu_per_delivered_us, 3), null],
  ["fanout 3-shard: delivered/s", (s) => (s.fanout_cluster ? `${f(s.fanout_cluster.delivered_per_sec, 0)} (${f(100 * (s.fanout_cluster.delivered_ratio ?? 0), 2)}%)` : "-"), null],
  ["fanout 3-shard: p50 / p99 (ms)", (s) => (s.fanout_cluster ? `${f(s.fanout_cluster.latency_p50_ms, 2)} / ${f(s.fanout_cluster.latency_p99_ms, 2)}` : "-"), null],
  ["fanout 3-shard: CPU/deliv. (us)", (s) => f(s.fanout_cluster?.cpu_per_delivered_us, 2), null],
  ["fanout 3-shard: Redis CPU/dl", (s) => f(s.fanout_cluster?.redis_cpu_per_delivered_us, 3), null],
  ["recovery on/off: connect (s)", (s) => (s.recovery ? `${f(s.recovery.on?.idle?.connect_seconds, 2)} / ${f(s.recovery.off?.idle?.connect_seconds, 2)}` : "-"), null],
  ["recovery on/off: CPU/conn (us)", (s) => (s.recovery ? `${f(s.recovery.on?.idle?.cpu_per_conn_us)} / ${f(s.recovery.off?.idle?.cpu_per_conn_us)}` : "-"), null],
  ["recovery: session writes/join", (s) => f(s.recovery?.on?.redis?.join?.session_writes, 2), null],
  ["recovery: session writes/leave", (s) => f(s.recovery?.on?.redis?.leave?.session_writes, 2), null],
  ["recovery on/off: cmds/join", (s) => (s.recovery ? `${f(s.recovery.on?.redis?.join?.redis_commands, 2)} / ${f(s.recovery.off?.redis?.join?.redis_commands, 2)}` : "-"), null],
  ["recovery on/off: cmds/connect", (s) => (s.recovery ? `${f(s.recovery.on?.redis?.connect?.redis_commands, 2)} / ${f(s.recovery.off?.redis?.connect?.redis_commands, 2)}` : "-"), null],
  ["ratelimit: Redis cmds/1000 events", (s) => f(s.ratelimit?.far?.redis_commands_per_1000_events, 2), null],
  ["ratelimit: at limit p50/p99 (us)", (s) => (s.ratelimit ? `${f(s.ratelimit.at_limit?.last_quarter?.p50_us, 0)} / ${f(s.ratelimit.at_limit?.last_quarter?.p99_us, 0)}` : "-"), null],
];
const pad = (t, n) => String(t).padEnd(n);
console.log(`\n${pad("", 32)}${pad("depth-realtime", 18)}${pad("node", 18)}ratio (>1: ours better)`);
for (const [label, get, r] of rows) {
  console.log(`${pad(label, 32)}${pad(get(ours), 18)}${pad(get(node), 18)}${r ?? ""}`);
}
for (const [name, s] of Object.entries(servers)) if (s.status !== "ok") console.log(`${name}: ${s.status}`);
for (const w of warnings) console.log(`warning: ${w}`);
console.log(`\nresults: ${process.argv[2]} (and bench-results/latest.json)`);
EOF
[ $? -eq 0 ] || { log "could not write the results"; exit 1; }

exit $FAILED
