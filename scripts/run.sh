#!/usr/bin/env bash
# `make run`: the daemon in the foreground with the shipped conf. The app
# modules keep their data in Redis: when none answers at REDIS_HOST:REDIS_PORT
# (default 127.0.0.1:6379), a private redis-server is started on a free port
# for this run (no persistence) and stopped with the daemon.
#   scripts/run.sh BUILD_DIR CONF
set -euo pipefail
build=${1:-build}
conf=${2:-conf/depth-realtime.conf}
host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}

redis_pid=
cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT

if ! redis-cli -h "$host" -p "$port" ping >/dev/null 2>&1; then
  port=16379
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done  # first free port
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  host=127.0.0.1
  echo "make run: no Redis at ${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}; started one for this run on $host:$port" >&2
fi
export REDIS_HOST=$host REDIS_PORT=$port
# The address the conf listens on: LISTEN_ADDRESS (the Makefile's default is
# localhost: 127.0.0.1 and ::1, as the development secrets are public).
case ${LISTEN_ADDRESS:-[::]} in
  localhost) url_host=localhost where="loopback only (127.0.0.1 and ::1); LISTEN_ADDRESS=[::] for every address" ;;
  "[::]" | 0.0.0.0 | "*") url_host=localhost where="every address (LISTEN_ADDRESS=$LISTEN_ADDRESS)" ;;
  *) url_host=$LISTEN_ADDRESS where="LISTEN_ADDRESS=$LISTEN_ADDRESS" ;;
esac
echo "make run: http://$url_host:${PORT:-3000}/  $where" >&2
echo "make run: JWT_SECRET=$JWT_SECRET (make token USER=<id> signs with it), API_KEY=${API_KEY:-unset: HTTP API off}" >&2
"$build/depth-realtime" -c "$conf" -M "$build/modules"
