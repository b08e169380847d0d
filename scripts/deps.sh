#!/bin/sh
# Installs what building, running and testing need, from Debian and npm.
# `check` only reports (exit 1) whether something is missing.
set -e
cd "$(dirname "$0")/.."

APT_PACKAGES="build-essential cmake pkgconf libuv1-dev node-llhttp libwslay-dev libhiredis-dev \
libjansson-dev libjwt-dev libgtest-dev zlib1g-dev libssl-dev libmsgpack-dev libsystemd-dev \
redis-server redis-sentinel procps clang libclang-rt-14-dev"

missing_apt() {
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
  # Node may come from elsewhere than Debian (with its own npm); any will do.
  command -v node >/dev/null 2>&1 || echo nodejs
  command -v npm >/dev/null 2>&1 || echo npm
}

npm_ok() { [ -f tests/node_modules/.package-lock.json ] && [ tests/node_modules/.package-lock.json -nt tests/package-lock.json ]; }

if [ "$1" = check ]; then
  [ -z "$(missing_apt)" ] && npm_ok && exit 0
  exit 1
fi

missing=$(missing_apt)
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "deps: installing Debian packages:" $missing
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if ! npm_ok; then
  echo "deps: installing the npm test clients (tests/package-lock.json)"
  (cd tests && npm ci --no-audit --no-fund --loglevel=error)
fi
