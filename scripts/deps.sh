#!/bin/sh
# Installs what the project needs, from Debian (apt) and, for the tests, npm.
#   scripts/deps.sh run          serving: the compiler, the libraries, redis-server, openssl
#   scripts/deps.sh test         run's, plus GoogleTest, clang (fuzzing), Node and the npm test clients
#   scripts/deps.sh check MODE   installs nothing; exit 1 when something of MODE is missing
# (no MODE means test: everything.) As root it runs apt-get itself; otherwise
# through sudo, and without sudo it stops and says what to install as root.
set -e
cd "$(dirname "$0")/.."

RUN_PACKAGES="build-essential cmake pkgconf libuv1-dev node-llhttp libwslay-dev libhiredis-dev \
libjansson-dev libjwt-dev zlib1g-dev libssl-dev libmsgpack-dev libsystemd-dev redis-server procps openssl"
# The tests add: GoogleTest, clang + libFuzzer (make fuzz-ci), Node with npm
# (the socket.io-client peers), curl (the README's HTTP API example), iproute2
# (a test of `listen localhost` in a network namespace without IPv6),
# redis-sentinel (the Sentinel failover test).
TEST_PACKAGES="libgtest-dev clang libclang-rt-14-dev curl iproute2 redis-sentinel"

if [ "$1" = check ]; then check=1; shift; fi
mode=${1:-test}
case $mode in
  run) packages=$RUN_PACKAGES ;;
  test) packages="$RUN_PACKAGES $TEST_PACKAGES" ;;
  *) echo "usage: scripts/deps.sh [check] run|test" >&2; exit 2 ;;
esac

missing_apt() {
  for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
  if [ "$mode" = test ]; then
    # Node may come from elsewhere than Debian (with its own npm); any will do.
    command -v node >/dev/null 2>&1 || echo nodejs
    command -v npm >/dev/null 2>&1 || echo npm
  fi
  return 0
}

npm_ok() { [ "$mode" = run ] || { [ -f tests/node_modules/.package-lock.json ] && [ tests/node_modules/.package-lock.json -nt tests/package-lock.json ]; }; }

missing=$(missing_apt)
if [ -n "$check" ]; then
  [ -z "$missing" ] && npm_ok && exit 0
  exit 1
fi

if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    SUDO=
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=sudo
  else
    echo "deps: these Debian packages are missing:" $missing >&2
    echo "deps: installing them needs root, and sudo is not installed. As root, run:" >&2
    echo "  apt-get install -y" $missing >&2
    echo "deps: (or install sudo and give this user the right to use it), then run make again." >&2
    exit 1
  fi
  echo "deps ($mode): installing Debian packages${SUDO:+ with sudo}:" $missing
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if ! npm_ok; then
  echo "deps: installing the npm test clients (tests/package-lock.json)"
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
