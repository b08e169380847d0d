#!/usr/bin/env bash
# `make bench`: tests/bench/run.sh BUILD_DIR
#
# Measures depth-realtime and the Node references (socket.io 4.8: node-reference.mjs,
# node-chat-reference.mjs) with the same load generator, on loopback, and ends with
# the table of issue 12's targets: target, depth-realtime, Node, one line per row.
# BENCH_SCENARIOS (default: all of them, in this order) picks what runs:
#   warmup    BENCH_WARMUP (1000) connections opened and dropped first, not reported
#   idle      BENCH_CONNECTIONS (10000) connections on / and /chat (bench.conf, 2
#             workers): RSS and CPU per connection, and, held for BENCH_SETTLE (30 s:
#             a ping interval), the CPU an idle connection costs per second
#   echo      BENCH_ECHO_CONNECTIONS x BENCH_ECHO_RATE (200 x 50 = 10,000) acked
#             bench:echo/s: CPU per ack and latency at a fixed load
#   echo_max  BENCH_MAX_CONNECTIONS (100) clients closed loop (BENCH_MAX_WINDOW 1 ack
#             in flight each): throughput, CPU per ack
#   broadcast one process, BENCH_BROADCAST_CONNECTIONS (1000) subscribers of one
#             room: CPU per delivered message at BENCH_BROADCAST_RATE (100) msg/s of
#             BENCH_BROADCAST_PAYLOAD (200) B (broadcast_cpu), latency p99 at
#             BENCH_BROADCAST_P99_RATE (20) msg/s (broadcast_p99)
#   idle_redis   the idle figures with Redis on (bench.conf on a private
#             redis-server; Node with @socket.io/redis-adapter)
#   idle_shipped the same with the shipped conf and every module in
#             conf/modules-enabled (Node: node-chat-reference.mjs)
#   scale     BENCH_SCALE_CONNECTIONS (100000; 0: skipped) connections on
#             BENCH_SCALE_NAMESPACES (/,/chat) held over a ping cycle with the shipped
#             conf on a private Redis: several loadgens (15,000 each, one source
#             address each: the hard descriptor limit), one destination address per
#             25,000 (127.0.0.1, .2, ...: the server listens on each), one worker per
#             14,000; connections held and dropped, RSS per connection, CPU per
#             connect and idle, Redis used_memory and Pub/Sub channels per client, the
#             kernel's TCP memory and slab per connection (not in any RSS). Node: as
#             many as one process may hold (the descriptor limit less 2,000)
#   chat      BENCH_CHAT_CONVERSATIONS x BENCH_CHAT_MEMBERS (50 x 20) through the chat
#             module (chat.conf) and node-chat-reference.mjs, each on a private
#             redis-server: messages/s closed loop (BENCH_CHAT_WINDOW 1 per sender, one
#             sender per conversation), CPU and Redis CPU per message (chat_max); ack
#             and delivery latency at BENCH_CHAT_RATE (200) messages/s (chat_rate)
#   allocs    heap allocations per chat:message (1 conversation of BENCH_CHAT_MEMBERS)
#             and per bench:echo, both with Redis and recovery on: one worker with
#             libdr_malloc_count.so preloaded, over BENCH_ALLOC_MESSAGES (5000) events
# and, with Redis (depth-realtime only):
#   fanout    two depth-realtime processes on one private redis-server;
#             BENCH_FANOUT_CONNECTIONS (1000) clients spread over both join one
#             room and one of them broadcasts BENCH_FANOUT_RATE (20) messages/s
#             to it: delivered messages/s, latency p50/p99, CPU per delivery
#   fanout_cluster the same through a 3-master Redis Cluster (sharded Pub/Sub;
#             `redis cluster=...`), Redis CPU summed over the three
#   recovery  one depth-realtime process on a private redis-server,
#             recovery_window 120s and then 0: connect cost of
#             BENCH_RECOVERY_CONNECTIONS (2000) connections (idle), and the Redis
#             commands and session writes per connect, join, leave, several
#             joins in one event and disconnect (recovery-cost.mjs)
#   ratelimit two depth-realtime processes on a private redis-server: Redis
#             commands per 1,000 admitted events of a user far from the limit, ack
#             latency near the limit (ratelimit-cost.mjs)
# e.g. BENCH_SCENARIOS=chat tests/bench/run.sh build (or make bench BENCH_SCENARIOS=chat).
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
BENCH_SCENARIOS=${BENCH_SCENARIOS:-"warmup idle echo echo_max broadcast idle_redis idle_shipped scale chat allocs fanout fanout_cluster recovery ratelimit"}
BENCH_SCALE_CONNECTIONS=${BENCH_SCALE_CONNECTIONS:-100000}
BENCH_SCALE_NAMESPACES=${BENCH_SCALE_NAMESPACES:-/,/chat}
BENCH_HELD_TIMEOUT=${BENCH_HELD_TIMEOUT:-600}  # seconds a held-connections run may take to connect
BENCH_BROADCAST_CONNECTIONS=${BENCH_BROADCAST_CONNECTIONS:-1000}
BENCH_BROADCAST_RATE=${BENCH_BROADCAST_RATE:-100}
BENCH_BROADCAST_P99_RATE=${BENCH_BROADCAST_P99_RATE:-20}
BENCH_BROADCAST_PAYLOAD=${BENCH_BROADCAST_PAYLOAD:-200}
BENCH_BROADCAST_DURATION=${BENCH_BROADCAST_DURATION:-10}
BENCH_CHAT_CONVERSATIONS=${BENCH_CHAT_CONVERSATIONS:-50}
BENCH_CHAT_MEMBERS=${BENCH_CHAT_MEMBERS:-20}
BENCH_CHAT_WINDOW=${BENCH_CHAT_WINDOW:-1}
BENCH_CHAT_RATE=${BENCH_CHAT_RATE:-200}
BENCH_CHAT_PAYLOAD=${BENCH_CHAT_PAYLOAD:-64}
BENCH_CHAT_DURATION=${BENCH_CHAT_DURATION:-10}
BENCH_ALLOC_MESSAGES=${BENCH_ALLOC_MESSAGES:-5000}
BENCH_ECHO_CONNECTIONS=${BENCH_ECHO_CONNECTIONS:-200}
BENCH_ECHO_RATE=${BENCH_ECHO_RATE:-50}
BENCH_ECHO_DURATION=${BENCH_ECHO_DURATION:-10}
BENCH_MAX_CONNECTIONS=${BENCH_MAX_CONNECTIONS:-100}
BENCH_MAX_WINDOW=${BENCH_MAX_WINDOW:-1}
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
want() { [[ " $BENCH_SCENARIOS " == *" $1 "* ]]; }

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
  cmake --build "$BUILD" --target dr_loadgen dr_malloc_count
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
if [ ! -f tests/node_modules/socket.io/package.json ] || [ ! -f tests/node_modules/ioredis/package.json ]; then
  scripts/deps.sh || { log "scripts/deps.sh failed"; exit 1; }
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dr-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  stop_server
  stop_private_redis
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

# The shipped conf (conf/ with every module in modules-enabled), copied with
# one listen line per loopback address 127.0.0.1..N and N workers; the rest
# as shipped. Prints the copy's path.
shipped_conf() {  # shipped_conf PORT ADDRESSES WORKERS
  local dir="$TMP/conf-shipped" i
  rm -rf "$dir"
  cp -rL conf "$dir"
  awk -v port="$1" -v n="$2" -v w="$3" '
    /^[ \t]*listen \$\{LISTEN_ADDRESS/ { for (i = 1; i <= n; i++) printf "    listen 127.0.0.%d:%s;\n", i, port; next }
    /^worker_processes / { print "worker_processes " w ";"; next }
    { print }' conf/depth-realtime.conf >"$dir/depth-realtime.conf"
  echo "$dir/depth-realtime.conf"
}

# start_server KIND PORT: sets SERVER_PID, or writes why not to $TMP/KIND.status.
#   depth-realtime  bench.conf (START_REDIS: its Redis, else off)
#   dr-redis        bench.conf on START_REDIS
#   dr-shipped      the shipped conf and every module on START_REDIS, START_ADDRESSES listen addresses
#   dr-chat         chat.conf (the chat module) on START_REDIS
#   node            node-reference.mjs (START_REDIS_PORT: with the Redis adapter)
#   node-redis      the same on START_REDIS_PORT
#   node-chat       node-chat-reference.mjs on START_REDIS_PORT
# START_WORKERS overrides BENCH_WORKERS; START_PRELOAD is preloaded into the
# daemon (libdr_malloc_count.so, counting into $TMP/mc).
start_server() {
  local name=$1 port=$2 logf="$TMP/$1.log" conf workers=${START_WORKERS:-$BENCH_WORKERS}
  local envs=(PORT="$port" DR_BENCH_WORKERS="$workers" DR_BENCH_PID="$TMP/dr.pid" DR_BENCH_REDIS="${START_REDIS:-off}"
    API_KEY=bench-api-key REDIS_HOST=127.0.0.1 REDIS_PORT="${START_REDIS_PORT:-6379}")
  [ -n "${START_PRELOAD:-}" ] && envs+=(LD_PRELOAD="$START_PRELOAD" DR_MALLOC_COUNT_DIR="$TMP/mc")
  rm -f "$TMP/dr.pid"
  case $name in
    depth-realtime | dr-redis | dr-shipped | dr-chat)
      if [ ! -x "$BUILD/depth-realtime" ]; then
        echo "binary missing: $BUILD/depth-realtime" >"$TMP/$name.status"
        return 1
      fi
      case $name in
        dr-shipped) conf=$(shipped_conf "$port" "${START_ADDRESSES:-1}" "$workers") ;;
        dr-chat) conf=tests/bench/chat.conf ;;
        *) conf=tests/bench/bench.conf ;;
      esac
      echo "$BUILD/depth-realtime -c ${conf#"$TMP/"} -M $BUILD/modules (workers: $workers${START_REDIS:+, redis-server $(redis-server --version | awk '{print $3}')})" >"$TMP/$name.command"
      env "${envs[@]}" "$BUILD/depth-realtime" -c "$conf" -M "$BUILD/modules" >"$logf" 2>&1 &
      ;;
    node | node-redis)
      echo "node tests/bench/node-reference.mjs ($(node --version)${START_REDIS_PORT:+, @socket.io/redis-adapter over ioredis})" >"$TMP/$name.command"
      if [ -n "${START_REDIS_PORT:-}" ]; then
        PORT=$port REDIS_PORT=$START_REDIS_PORT node tests/bench/node-reference.mjs >"$logf" 2>&1 &
      else
        PORT=$port node tests/bench/node-reference.mjs >"$logf" 2>&1 &
      fi
      ;;
    node-chat)
      echo "node tests/bench/node-chat-reference.mjs ($(node --version), ioredis, @socket.io/redis-adapter)" >"$TMP/$name.command"
      PORT=$port REDIS_PORT=$START_REDIS_PORT node tests/bench/node-chat-reference.mjs >"$logf" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  if ! wait_ready "$port" "$SERVER_PID"; then
    echo "failed to start (no answer on 127.0.0.1:$port): $(tail -n 2 "$logf" | tr '\n"' '  ')" >"$TMP/$name.status"
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

if want warmup || want idle || want echo || want echo_max || want broadcast; then
  for server in $BENCH_SERVERS; do
    PORT=$(free_port)
    log "starting $server on 127.0.0.1:$PORT"
    if ! start_server "$server" "$PORT"; then
      log "$server: $(cat "$TMP/$server.status")"
      [ "$server" = node ] || [ "$BENCH_STRICT" = 1 ] && FAILED=1
      continue
    fi
    if [ "$BENCH_WARMUP" -gt 0 ] && { want warmup || want idle; }; then
      run_scenario "$server" warmup idle --connections "$BENCH_WARMUP" --settle 0 --max-seconds 60
    fi
    want idle && run_scenario "$server" idle idle --connections "$BENCH_CONNECTIONS" --concurrency "$BENCH_CONCURRENCY" \
      --namespaces /,/chat --settle "$BENCH_SETTLE" --max-seconds 300
    want echo && run_scenario "$server" echo echo --connections "$BENCH_ECHO_CONNECTIONS" --rate "$BENCH_ECHO_RATE" \
      --duration "$BENCH_ECHO_DURATION" --max-seconds 120
    want echo_max && run_scenario "$server" echo_max echo --connections "$BENCH_MAX_CONNECTIONS" --rate 0 \
      --window "$BENCH_MAX_WINDOW" --duration "$BENCH_ECHO_DURATION" --max-seconds 120
    if want broadcast; then
      # One process: what a delivered broadcast costs, and its latency at a lower rate.
      run_scenario "$server" broadcast_cpu fanout --namespaces / --connections "$BENCH_BROADCAST_CONNECTIONS" \
        --rate "$BENCH_BROADCAST_RATE" --payload "$BENCH_BROADCAST_PAYLOAD" --duration "$BENCH_BROADCAST_DURATION" \
        --settle 1 --max-seconds 120
      run_scenario "$server" broadcast_p99 fanout --namespaces / --connections "$BENCH_BROADCAST_CONNECTIONS" \
        --rate "$BENCH_BROADCAST_P99_RATE" --payload "$BENCH_BROADCAST_PAYLOAD" --duration "$BENCH_BROADCAST_DURATION" \
        --settle 1 --max-seconds 120
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "exited during the benchmark" >"$TMP/$server.status"
      log "$server exited during the benchmark"
    fi
    stop_server
  done
fi

# ------------------------------------------ a private Redis for one scenario

PRIVATE_REDIS_PID=""
PRIVATE_REDIS_PORT=""
start_private_redis() {  # start_private_redis LABEL: sets PRIVATE_REDIS_PORT/PID
  PRIVATE_REDIS_PORT=$(free_port)
  redis-server --port "$PRIVATE_REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --maxclients 10000 \
    >"$TMP/redis-$1.log" 2>&1 &
  PRIVATE_REDIS_PID=$!
  for _ in $(seq 1 50); do redis-cli -p "$PRIVATE_REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
stop_private_redis() {
  [ -n "$PRIVATE_REDIS_PID" ] || return 0
  kill -TERM "$PRIVATE_REDIS_PID" 2>/dev/null
  wait "$PRIVATE_REDIS_PID" 2>/dev/null
  PRIVATE_REDIS_PID=""
}

# redis_stats PORT: what Redis holds for the cluster (memory, Pub/Sub channels), as JSON.
redis_stats() {
  local p=$1 mem ch sch pat clients
  mem=$(redis-cli -p "$p" info memory | tr -d '\r' | sed -n 's/^used_memory:\([0-9]*\)/\1/p')
  ch=$(redis-cli -p "$p" pubsub channels '*' | grep -c .)
  sch=$(redis-cli -p "$p" pubsub shardchannels '*' 2>/dev/null | grep -c .)
  pat=$(redis-cli -p "$p" pubsub numpat | tr -d '\r')
  clients=$(redis-cli -p "$p" info clients | tr -d '\r' | sed -n 's/^connected_clients:\([0-9]*\)/\1/p')
  printf '{"used_memory":%s,"channels":%s,"shard_channels":%s,"patterns":%s,"connected_clients":%s}' \
    "${mem:-null}" "${ch:-0}" "${sch:-0}" "${pat:-0}" "${clients:-null}"
}

# ------------------------------- held connections: 10,000 and at scale

tree_sum() {  # tree_sum PID FIELD: utime+stime ticks (cpu) or VmRSS kB (rss) over PID and its descendants
  local p total=0
  for p in $1 $(descendants "$1"); do
    if [ "$2" = cpu ]; then total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    else total=$(( total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0) )); fi
  done
  echo "$total"
}
# The kernel's TCP memory (pages, both ends of every loopback connection) and its slab.
sockstat_pages() { awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

# run_held SERVER KIND NAME N ADDRESSES NAMESPACES: N connections on KIND's
# server (start_server), opened by as many loadgens as the descriptor limit
# needs (one source address each), to ADDRESSES loopback destinations (the
# server listens on 127.0.0.1..ADDRESSES), held for BENCH_SETTLE (a ping
# cycle); KIND's Redis (if any) is private to the run. $TMP/SERVER.NAME.json.
run_held() {
  local server=$1 kind=$2 name=$3 n=$4 addrs=$5 nsps=$6 out="$TMP/$1.$3.json" per=$LARGE_PER_PROC
  local procs workers port i p pids="" c host redis0="{}" redis1="{}" rss0 rss1 cpu0 cpu1 cpu2 cpu3 t0 t1 t2 t3 k0 k1 s0 s1
  procs=$(( (n + per - 1) / per ))
  workers=$(( (n + 13999) / 14000 )); [ "$workers" -lt "$BENCH_WORKERS" ] && workers=$BENCH_WORKERS
  case $kind in node*) workers=1; addrs=1 ;; esac
  START_REDIS="" START_REDIS_PORT="" START_WORKERS=$workers START_ADDRESSES=$addrs
  if [ "$kind" != depth-realtime ] && [ "$kind" != node ]; then
    start_private_redis "$name" || { echo "{\"error\":\"redis-server did not start\"}" >"$out"; return 1; }
    START_REDIS="127.0.0.1:$PRIVATE_REDIS_PORT" START_REDIS_PORT=$PRIVATE_REDIS_PORT
  fi
  port=$(free_port)
  PORT=$port
  log "$server: $name ($n connections on $nsps from $procs loadgens to $addrs addresses; $kind on $workers workers)"
  if ! start_server "$kind" "$port"; then
    echo "{\"error\":\"$kind did not start: $(cat "$TMP/$kind.status")\"}" >"$out"
    stop_private_redis
    return 1
  fi
  # RSS from before a warm-up (Node's JIT) that is not reported: the memory
  # those connections leave behind is what the measured ones reuse.
  rss0=$(tree_sum "$SERVER_PID" rss)
  [ "$BENCH_WARMUP" -gt 0 ] && "$LOADGEN" idle --port "$port" --secret "$JWT_SECRET" --connections "$BENCH_WARMUP" \
    --namespaces "$nsps" --settle 0 --max-seconds 60 --quiet >/dev/null 2>&1
  sleep "$BENCH_PAUSE"
  [ -n "$START_REDIS_PORT" ] && redis0=$(redis_stats "$START_REDIS_PORT")
  cpu0=$(tree_sum "$SERVER_PID" cpu); t0=$(date +%s.%N)
  k0=$(sockstat_pages); s0=$(slab_kb)
  rm -f "$TMP/$name"-*.err "$TMP/$name"-*.out
  for i in $(seq 1 "$procs"); do
    c=$(( i < procs ? per : n - per * (procs - 1) ))
    host=127.0.0.$(( 1 + (i - 1) % addrs ))
    "$LOADGEN" idle --host "$host" --port "$port" --secret "$JWT_SECRET" --connections "$c" \
      --concurrency "$BENCH_CONCURRENCY" --namespaces "$nsps" --source-first $(( 10 + i )) \
      --user-offset $(( (i - 1) * per )) --settle 100000 --max-seconds $(( BENCH_HELD_TIMEOUT + BENCH_SETTLE + 120 )) \
      >"$TMP/$name-$i.out" 2>"$TMP/$name-$i.err" &
    pids="$pids $!"
  done
  # Connected once every loadgen has established its connections (or gave up).
  for _ in $(seq 1 $(( BENCH_HELD_TIMEOUT * 10 ))); do
    [ "$(grep -l '^loadgen: established' "$TMP/$name"-*.err 2>/dev/null | wc -l)" -ge "$procs" ] && break
    sleep 0.1
  done
  cpu1=$(tree_sum "$SERVER_PID" cpu); t1=$(date +%s.%N)
  sleep "$BENCH_PAUSE"
  rss1=$(tree_sum "$SERVER_PID" rss); k1=$(sockstat_pages); s1=$(slab_kb)
  [ -n "$START_REDIS_PORT" ] && redis1=$(redis_stats "$START_REDIS_PORT")
  cpu2=$(tree_sum "$SERVER_PID" cpu); t2=$(date +%s.%N)
  sleep "$BENCH_SETTLE"
  cpu3=$(tree_sum "$SERVER_PID" cpu); t3=$(date +%s.%N)
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  kill -0 "$SERVER_PID" 2>/dev/null || echo "exited while holding the connections" >"$TMP/$kind.status"
  cp "$TMP/$kind.command" "$TMP/$server.$name.command" 2>/dev/null
  stop_server
  stop_private_redis
  node -e '
    const fs = require("fs");
    const [n, rss0, rss1, cpu0, cpu1, cpu2, cpu3, t0, t1, t2, t3, k0, k1, s0, s1, tck, procs, workers, addrs] =
      process.argv.slice(1, 20).map(Number);
    const [name, nsps, r0, r1, tmp, status] = process.argv.slice(20);
    const lg = []; for (let i = 1; i <= procs; i++) {
      try { lg.push(JSON.parse(fs.readFileSync(`${tmp}/${name}-${i}.out`, "utf8"))); } catch { lg.push({}); }
    }
    const sum = (k) => lg.reduce((a, r) => a + (r[k] ?? 0), 0);
    const est = sum("established"), lost = sum("lost_after_connect"), failed = sum("failures");
    const ms = (a, b) => (b - a) * 1000 / tck;
    const redis0 = JSON.parse(r0), redis1 = JSON.parse(r1);
    const page = 4096, held = t3 - t2;
    const channels = redis1.channels !== undefined ? redis1.channels + redis1.shard_channels : null;
    const out = {
      scenario: name, connections: n, established: est, failures: failed, dropped: lost,
      held: est - lost, namespaces: nsps.split(","), loadgens: procs, server_workers: workers,
      destination_addresses: addrs, server_status: status,
      connect_seconds: +(t1 - t0).toFixed(2),
      first_error: lg.map((r) => r.first_error).find(Boolean), first_lost: lg.map((r) => r.first_lost).find(Boolean),
      rss_before_kb: rss0, rss_after_kb: rss1,
      rss_per_conn_bytes: est ? Math.round((rss1 - rss0) * 1024 / est) : null,
      cpu_connect_ms: +ms(cpu0, cpu1).toFixed(1),
      cpu_per_conn_us: est ? +(ms(cpu0, cpu1) * 1000 / est).toFixed(1) : null,
      held_seconds: +held.toFixed(1), idle_cpu_ms: +ms(cpu2, cpu3).toFixed(1),
      idle_cpu_per_conn_per_s_us: est ? +(ms(cpu2, cpu3) * 1000 / est / held).toFixed(3) : null,
      // Not in any RSS: the kernel buffers of both ends of each loopback connection, and slab (machine-wide).
      kernel_tcp_mem_per_conn_bytes: est && Number.isFinite(k1 - k0) ? Math.round((k1 - k0) * page / est) : null,
      kernel_slab_per_conn_bytes: est && Number.isFinite(s1 - s0) ? Math.round((s1 - s0) * 1024 / est) : null,
    };
    if (redis1.used_memory !== undefined) {
      out.redis = { before: redis0, held: redis1 };
      out.redis_memory_per_conn_bytes = est ? Math.round((redis1.used_memory - redis0.used_memory) / est) : null;
      out.redis_channels = channels;
      out.redis_channels_per_client = est ? +(channels / est).toFixed(3) : null;
    }
    console.log(JSON.stringify(out));' "$n" "$rss0" "$rss1" "$cpu0" "$cpu1" "$cpu2" "$cpu3" "$t0" "$t1" "$t2" "$t3" \
      "${k0:-NaN}" "${k1:-NaN}" "${s0:-NaN}" "${s1:-NaN}" "$(getconf CLK_TCK)" "$procs" "$workers" "$addrs" \
      "$name" "$nsps" "$redis0" "$redis1" "$TMP" "$(cat "$TMP/$kind.status" 2>/dev/null)" >"$out"
  START_REDIS="" START_REDIS_PORT="" START_WORKERS="" START_ADDRESSES=""
  sleep "$BENCH_PAUSE"
}

# The Node references: as many connections as one process may hold.
node_cap() { local n=$1 cap=$(( NOFILE - 2000 )); echo $(( n < cap ? n : cap )); }

if want idle_redis; then
  for server in $BENCH_SERVERS; do
    case $server in depth-realtime) k=dr-redis ;; node) k=node-redis ;; esac
    run_held "$server" "$k" idle_redis "$(node_cap "$BENCH_CONNECTIONS")" 1 /,/chat || FAILED=1
  done
fi
if want idle_shipped; then
  for server in $BENCH_SERVERS; do
    case $server in depth-realtime) k=dr-shipped ;; node) k=node-chat ;; esac
    run_held "$server" "$k" idle_shipped "$(node_cap "$BENCH_CONNECTIONS")" 1 /,/chat || FAILED=1
  done
fi
if want scale && [ "$BENCH_SCALE_CONNECTIONS" -gt 0 ]; then
  for server in $BENCH_SERVERS; do
    case $server in
      depth-realtime)
        run_held "$server" dr-shipped scale "$BENCH_SCALE_CONNECTIONS" \
          "$(( (BENCH_SCALE_CONNECTIONS + 24999) / 25000 ))" "$BENCH_SCALE_NAMESPACES" || FAILED=1 ;;
      node)
        # One Node process holds no more descriptors than the hard limit.
        run_held "$server" node-chat scale "$(node_cap "$BENCH_SCALE_CONNECTIONS")" 1 "$BENCH_SCALE_NAMESPACES" || FAILED=1 ;;
    esac
  done
fi

# ------------------------------------------------- chat through Redis

# run_chat SERVER: conversations x members through the chat module (or the
# Node chat reference) on a private Redis: closed loop, then a fixed rate.
run_chat() {
  local server=$1 kind k j line
  case $server in depth-realtime) kind=dr-chat ;; node) kind=node-chat ;; esac
  start_private_redis chat || { echo '{"error":"redis-server did not start"}' >"$TMP/$server.chat_max.json"; return 1; }
  # Members: conversation b<k> holds u<k*M> .. u<k*M + M-1> (the loadgen's users).
  for k in $(seq 0 $(( BENCH_CHAT_CONVERSATIONS - 1 ))); do
    line="SADD depth:conversation:b$k:members"
    for j in $(seq 0 $(( BENCH_CHAT_MEMBERS - 1 ))); do line="$line u$(( k * BENCH_CHAT_MEMBERS + j ))"; done
    echo "$line"
  done | redis-cli -p "$PRIVATE_REDIS_PORT" >/dev/null
  START_REDIS="127.0.0.1:$PRIVATE_REDIS_PORT" START_REDIS_PORT=$PRIVATE_REDIS_PORT
  PORT=$(free_port)
  if ! start_server "$kind" "$PORT"; then
    echo "{\"error\":\"$kind did not start: $(cat "$TMP/$kind.status")\"}" >"$TMP/$server.chat_max.json"
    stop_private_redis
    START_REDIS="" START_REDIS_PORT=""
    return 1
  fi
  cp "$TMP/$kind.command" "$TMP/$server.chat.command"
  local args=(chat --namespaces /chat --conversations "$BENCH_CHAT_CONVERSATIONS" --members "$BENCH_CHAT_MEMBERS"
    --payload "$BENCH_CHAT_PAYLOAD" --duration "$BENCH_CHAT_DURATION" --settle 1 --max-seconds 180
    --redis-pids "$PRIVATE_REDIS_PID")
  run_scenario "$server" chat_warmup "${args[@]}" --rate 0 --window "$BENCH_CHAT_WINDOW" --duration 2
  run_scenario "$server" chat_max "${args[@]}" --rate 0 --window "$BENCH_CHAT_WINDOW"
  run_scenario "$server" chat_rate "${args[@]}" --rate "$BENCH_CHAT_RATE"
  stop_server
  stop_private_redis
  START_REDIS="" START_REDIS_PORT=""
}

if want chat && command -v redis-server >/dev/null; then
  for server in $BENCH_SERVERS; do run_chat "$server" || FAILED=1; done
fi

# --------------------------------- heap allocations per event (1 worker)

# run_allocs: depth-realtime on one worker with libdr_malloc_count.so
# preloaded; allocations counted over a fixed number of events, divided.
MALLOC_COUNT_LIB="$BUILD/tests/bench/libdr_malloc_count.so"
run_allocs() {
  local k j line
  mkdir -p "$TMP/mc"
  START_PRELOAD=$MALLOC_COUNT_LIB START_WORKERS=1
  # chat:message: stored, acked, broadcast to a conversation of BENCH_CHAT_MEMBERS.
  start_private_redis allocs || return 1
  line="SADD depth:conversation:b0:members"
  for j in $(seq 0 $(( BENCH_CHAT_MEMBERS - 1 ))); do line="$line u$j"; done
  echo "$line" | redis-cli -p "$PRIVATE_REDIS_PORT" >/dev/null
  START_REDIS="127.0.0.1:$PRIVATE_REDIS_PORT" START_REDIS_PORT=$PRIVATE_REDIS_PORT
  PORT=$(free_port)
  if start_server dr-chat "$PORT"; then
    local args=(chat --namespaces /chat --conversations 1 --members "$BENCH_CHAT_MEMBERS" --rate 0 --window 1
      --duration 300 --settle 0.5 --max-seconds 400 --malloc-count-dir "$TMP/mc")
    run_scenario depth-realtime allocs_chat_warmup "${args[@]}" --messages 200
    run_scenario depth-realtime allocs_chat "${args[@]}" --messages "$BENCH_ALLOC_MESSAGES"
    stop_server
  fi
  # bench:echo on bench.conf, on the same Redis (recovery on, as for chat).
  PORT=$(free_port)
  if start_server dr-redis "$PORT"; then
    local eargs=(echo --namespaces / --connections 10 --rate 0 --window 1 --duration 300 --max-seconds 400
      --malloc-count-dir "$TMP/mc")
    run_scenario depth-realtime allocs_echo_warmup "${eargs[@]}" --messages 1000
    run_scenario depth-realtime allocs_echo "${eargs[@]}" --messages "$BENCH_ALLOC_MESSAGES"
    stop_server
  fi
  stop_private_redis
  START_REDIS="" START_REDIS_PORT="" START_PRELOAD="" START_WORKERS=""
}

if want allocs && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]]; then
  if [ ! -f "$MALLOC_COUNT_LIB" ] && ! cmake --build "$BUILD" --target dr_malloc_count >/dev/null; then
    log "allocs: cannot build libdr_malloc_count.so; skipped"
  else
    run_allocs || FAILED=1
  fi
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

if want fanout && [ "$BENCH_FANOUT" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]]; then
  if ! command -v redis-server >/dev/null; then
    log "fanout: redis-server is not installed (scripts/deps.sh installs it); skipped"
  elif [ ! -x "$BUILD/depth-realtime" ]; then
    log "fanout: $BUILD/depth-realtime is missing; skipped"
  else
    run_fanout single || FAILED=1
    if want fanout_cluster && [ "$BENCH_FANOUT_CLUSTER" = 1 ]; then run_fanout cluster || FAILED=1; fi
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

if want recovery && [ "$BENCH_RECOVERY" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]]; then
  if ! command -v redis-server >/dev/null; then
    log "recovery: redis-server is not installed (scripts/deps.sh installs it); skipped"
  elif [ ! -x "$BUILD/depth-realtime" ]; then
    log "recovery: $BUILD/depth-realtime is missing; skipped"
  else
    run_recovery || FAILED=1
  fi
fi

# ------------------------------------- exact rate limit: budget leases (Redis)

if want ratelimit && [ "$BENCH_RATELIMIT" = 1 ] && [[ " $BENCH_SERVERS " == *" depth-realtime "* ]] &&
  command -v redis-server >/dev/null && [ -x "$BUILD/depth-realtime" ]; then
  log "depth-realtime: rate limit leases: Redis commands per 1,000 events, latency at the limit"
  node tests/bench/ratelimit-cost.mjs --build "$BUILD" >"$TMP/ratelimit.json" 2>"$TMP/ratelimit.err" || FAILED=1
fi

# ------------------------------------------------------------ results

mkdir -p bench-results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULT="bench-results/bench-$STAMP.json"

# Every BENCH_* setting goes into the JSON.
export "${!BENCH_@}"
BENCH_TMP="$TMP" BENCH_STAMP="$STAMP" node tests/bench/report.mjs "$RESULT"
[ $? -eq 0 ] || { log "could not write the results"; exit 1; }

exit $FAILED
