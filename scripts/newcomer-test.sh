#!/usr/bin/env bash
# `make newcomer-test` (issue 15), and CI's path: README.md's Quick start followed
# literally on a fresh Debian 12 that has only git.
#   1. debootstrap --variant=minbase bookworm, from the mirror this host's apt uses
#   2. in it: apt-get install git, then the README's prerequisite line
#   3. a clone of this commit; `PORT=P make run` (the README's command) in the background
#   4. from outside: http://127.0.0.1:P/ and http://[::1]:P/ answer, localhost too,
#      and nothing listens on P but the two loopbacks
#   5. `make token USER=42 CONVERSATIONS=c1`
#   6. `make test` (NEWCOMER_SKIP_MAKE_TEST=1: only `scripts/deps.sh test`)
#   7. the README's client example (the official socket.io-client) against the
#      `make run` server: its shown output, exactly
# Each README command is checked to be in README.md before it runs.
# Root only (debootstrap, chroot). KEEP=1 keeps the root. Exit 0 when all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
COMMIT=$(git rev-parse HEAD)
W=$(mktemp -d "${TMPDIR:-/var/tmp}/dr-newcomer.XXXXXX")
ROOT=$W/root
APP=/root/depth-realtime
MOUNTED=()
RUN_PID=
T0=$(date +%s)
declare -a TIMES=()

[ "$(id -u)" = 0 ] || { echo "newcomer-test: run as root (debootstrap, chroot)" >&2; exit 1; }

log() { echo "newcomer-test: $*"; }
lap() { TIMES+=("$(printf '%-58s %5ss' "$1" $(($(date +%s) - LAP)))"); LAP=$(date +%s); }
cleanup() {
  local rc=$?
  set +e
  if [ -n "$RUN_PID" ]; then kill -TERM -- "-$RUN_PID" 2>/dev/null; wait "$RUN_PID" 2>/dev/null; fi
  for ((m = ${#MOUNTED[@]} - 1; m >= 0; m--)); do umount -l "${MOUNTED[m]}"; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf --one-file-system "$W"; fi
  echo "=== newcomer-test timings"
  printf '%s\n' "${TIMES[@]}"
  echo "total $(($(date +%s) - T0))s: $([ $rc = 0 ] && echo PASSED || echo "FAILED (rc $rc)")"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The README's Quick start must hold this exact line.
readme_has() { grep -qxF -- "$1" README.md || { echo "newcomer-test: README.md no longer says: $1" >&2; exit 1; }; }
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# An HTTP GET through bash's /dev/tcp (no curl on a fresh host): the status line.
http_status() { (exec 3<>"/dev/tcp/$1/$2" && printf 'GET %s HTTP/1.0\r\nHost: x\r\n\r\n' "$3" >&3 && head -1 <&3) 2>/dev/null | tr -d '\r'; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && ! (exec 3<>"/dev/tcp/::1/$1") 2>/dev/null; }
free_port() { local p=$1; while ! port_free "$p"; do p=$((p + 1)); done; echo "$p"; }

LAP=$T0
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
# The mirror this host's apt uses (deb822 .sources or the one-line format).
MIRROR=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $0 ~ /bookworm/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$MIRROR" ] || { echo "newcomer-test: no Debian mirror in /etc/apt/sources.list{,.d/*.sources}" >&2; exit 1; }
lap "host tools"

log "debootstrap --variant=minbase bookworm (mirror from this host's apt)"
debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log"; exit 1; }
lap "debootstrap --variant=minbase bookworm"

mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc")
mount -t sysfs sysfs "$ROOT/sys" && MOUNTED+=("$ROOT/sys")
mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev")
mount --bind /dev/pts "$ROOT/dev/pts" && MOUNTED+=("$ROOT/dev/pts")
mkdir -p "$ROOT/dev/shm" && mount -t tmpfs shm "$ROOT/dev/shm" && MOUNTED+=("$ROOT/dev/shm")
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# What the Debian installer writes: localhost is ::1 as well as 127.0.0.1.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"

log "only git, then the README's prerequisite line"
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null
readme_has "sudo apt-get install -y make git"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y make git >/dev/null  # as root: no sudo
# This host's own trusted CAs (as its resolv.conf): a TLS proxy between the
# machine and the npm registry must be trusted in the root as on the host.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1 && [ -x "$ROOT/usr/sbin/update-ca-certificates" ]; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  in_root update-ca-certificates >/dev/null 2>&1
fi
lap "apt-get install git; the README's prerequisite (make git)"

git clone -q --no-checkout "$SRC" "$ROOT$APP"
git -C "$ROOT$APP" checkout -q "$COMMIT"
log "clone of $COMMIT"

readme_has "make run     # installs what serving needs, builds, serves http://localhost:3000/ (PORT=4000 make run)"
PORT=$(free_port 3000)
# A Redis on the host's 6379 would be shared through the loopback: point make
# run at a free port, so it starts its own as on a fresh machine.
REDIS_PORT=$(free_port 16400)
log "PORT=$PORT make run (in the background; the first run installs and builds)"
setsid chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
  PORT="$PORT" REDIS_PORT="$REDIS_PORT" sh -c "cd $APP && exec make run" >"$W/make-run.log" 2>&1 &
RUN_PID=$!
deadline=$(($(date +%s) + 1800))
until [ "$(http_status 127.0.0.1 "$PORT" /healthz)" = "HTTP/1.1 200 OK" ]; do
  kill -0 "$RUN_PID" 2>/dev/null || { tail -40 "$W/make-run.log"; echo "newcomer-test: make run exited" >&2; exit 1; }
  [ "$(date +%s)" -lt $deadline ] || { tail -40 "$W/make-run.log"; echo "newcomer-test: make run not serving in 30 min" >&2; exit 1; }
  sleep 2
done
grep '^make run:' "$W/make-run.log" | sed 's/^/  /'
lap "make run: deps (run), build, serving"

for host in 127.0.0.1 ::1 localhost; do
  st=$(http_status "$host" "$PORT" /healthz)
  [ "$st" = "HTTP/1.1 200 OK" ] || { echo "newcomer-test: http://$host:$PORT/healthz: ${st:-no answer}" >&2; exit 1; }
  log "http://$host:$PORT/healthz: $st"
done
grep -q "make run: http://localhost:$PORT/" "$W/make-run.log" || { echo "newcomer-test: make run did not print http://localhost:$PORT/" >&2; exit 1; }
# Development secrets are public: only the loopbacks may listen on PORT.
listeners=$(awk -v p="$(printf '%04X' "$PORT")" '$4 == "0A" && $2 ~ ":"p"$" { print $2 }' /proc/net/tcp /proc/net/tcp6 | sort -u | tr '\n' ' ')
[ "$listeners" = "00000000000000000000000001000000:$(printf '%04X' "$PORT") 0100007F:$(printf '%04X' "$PORT") " ] ||
  { echo "newcomer-test: listening sockets on $PORT are not exactly 127.0.0.1 and ::1: $listeners" >&2; exit 1; }
log "listening on 127.0.0.1 and ::1 only"
lap "IPv4, IPv6, localhost answer; loopback only"

readme_has "make token USER=42 CONVERSATIONS=c1   # prints a development token; also ROLE=admin, PROJECTS=p7,p8"
TOKEN=$(in_root sh -c "cd $APP && make -s token USER=42 CONVERSATIONS=c1")
[[ $TOKEN =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || { echo "newcomer-test: make token printed: $TOKEN" >&2; exit 1; }
log "make token: ${TOKEN:0:24}..."
lap "make token"

if [ "${NEWCOMER_SKIP_MAKE_TEST:-0}" = 1 ]; then
  log "NEWCOMER_SKIP_MAKE_TEST=1: only scripts/deps.sh test"
  in_root sh -c "cd $APP && scripts/deps.sh test"
  lap "scripts/deps.sh test (make test skipped)"
else
  readme_has "make test    # adds the test tools; unit + integration tests (the real socket.io-client), again under ASan+UBSan, then a short fuzzing run"
  log "make test"
  # make test's own status: PIPESTATUS right after the pipeline (an `|| true`
  # after it would leave only true's status there and hide a failed make test).
  set +e
  in_root sh -c "cd $APP && make test" 2>&1 | tee "$W/make-test.log" | grep --line-buffered -E '^=====|tests passed|FAILED|^make test'
  rc=${PIPESTATUS[0]}
  set -e
  sed -n '/^===== make test: summary/,$p' "$W/make-test.log"
  lap "make test (inside the root)"
  [ "$rc" = 0 ] || { echo "newcomer-test: make test failed (rc $rc)" >&2; exit 1; }
fi

# The README's client example, as written but for the port, against make run.
awk '/^```js test$/ { n++; if (n == 1) { on = 1; next } } on && /^```$/ { exit } on' README.md |
  sed "s|http://localhost:3000|http://localhost:$PORT|" >"$ROOT$APP/tests/newcomer-client.mjs"
want=$(awk '/^```js test$/ { n++ } n == 1 && /^```text$/ { on = 1; next } on && /^```$/ { exit } on' README.md)
got=$(in_root env TOKEN="$TOKEN" sh -c "cd $APP/tests && timeout 30 node newcomer-client.mjs")
[ "$got" = "$want" ] || { printf 'newcomer-test: the README client printed:\n%s\nREADME shows:\n%s\n' "$got" "$want" >&2; exit 1; }
log "README client example (socket.io-client, chat:join + chat:message) printed what the README shows"
lap "chat message with the official client against make run"
