#!/bin/bash
# Builds the .deb (debhelper) and/or the .rpm (spec repackaging a staged
# `cmake --install` tree) into build-pkg/. Used by `make deb` and `make rpm`.
#
#   packaging/build-packages.sh deb|rpm|all
#
# Environment: OUT (default build-pkg), JOBS (default nproc).
# deb: build-pkg/deb/depth-realtime_<ver>_<arch>.deb (+ -dev, -dbgsym, .changes)
# rpm: build-pkg/rpm/RPMS/<arch>/depth-realtime-<ver>-1.<arch>.rpm (+ -devel)
set -euo pipefail
cd "$(dirname "$0")/.."
SRCDIR=$PWD
OUT=${OUT:-build-pkg}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
JOBS=${JOBS:-$(nproc)}
VERSION=$(sed -n 's/^project(depth-realtime VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
[ -n "$VERSION" ] || { echo "build-packages: no project(VERSION) in CMakeLists.txt" >&2; exit 1; }

need() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  echo "build-packages: installing ${missing[*]}" >&2
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A copy of the working tree (tracked files and new ones not ignored: build
# output, node_modules, .git stay out). dpkg-buildpackage writes into the
# tree and its parent, so it never runs in the checkout itself.
copy_tree() {
  local dest=$1
  rm -rf "$dest"
  mkdir -p "$dest"
  if git -C "$SRCDIR" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$SRCDIR" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
      tar --null -T - -cf - | tar -xf - -C "$dest"
  else
    tar --exclude='./build*' --exclude=./node_modules --exclude=./tests/node_modules \
        --exclude=./bench-results -cf - . | tar -xf - -C "$dest"
  fi
}

build_deb() {
  need build-essential debhelper dpkg-dev fakeroot cmake pkgconf libuv1-dev libjansson-dev libjwt-dev \
       libhiredis-dev libmsgpack-dev libwslay-dev libssl-dev zlib1g-dev libsystemd-dev node-llhttp
  local chver
  chver=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
  if [ "${chver%%[+~-]*}" != "$VERSION" ]; then
    echo "build-packages: packaging/debian/changelog is at $chver but CMakeLists.txt at $VERSION;" \
         "add a changelog entry (dch -v $VERSION)" >&2
    exit 1
  fi
  local tree=$OUT/deb/depth-realtime-$VERSION
  rm -f "$OUT"/deb/*.deb "$OUT"/deb/*.changes "$OUT"/deb/*.buildinfo
  copy_tree "$tree"
  cp -a packaging/debian "$tree/debian"
  (cd "$tree" && DEB_BUILD_OPTIONS="nocheck parallel=$JOBS" dpkg-buildpackage -us -uc -b)
  ls -1 "$OUT"/deb/*.deb
}

build_rpm() {
  need build-essential rpm cmake pkgconf libuv1-dev libjansson-dev libjwt-dev libhiredis-dev libmsgpack-dev libwslay-dev \
       libssl-dev zlib1g-dev libsystemd-dev node-llhttp
  local specver
  specver=$(sed -n 's/^Version:[[:space:]]*//p' packaging/rpm/depth-realtime.spec)
  if [ "$specver" != "$VERSION" ]; then
    echo "build-packages: packaging/rpm/depth-realtime.spec is at $specver but CMakeLists.txt at $VERSION" >&2
    exit 1
  fi
  local b=$OUT/rpm/build stage=$OUT/rpm/stage top=$OUT/rpm
  # Fedora's layout: modules in /usr/lib64, the unit in /usr/lib/systemd/system.
  # Fedora's default hardening flags; its rpm would add them through %%cmake.
  local cflags="-O2 -g -pipe -Wp,-D_FORTIFY_SOURCE=2 -fstack-protector-strong -fstack-clash-protection -fcf-protection"
  local ldflags="-Wl,-z,relro -Wl,-z,now -Wl,--as-needed"
  cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=None -DDR_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR=lib64 -DCMAKE_INSTALL_SYSCONFDIR=/etc \
    -DCMAKE_INSTALL_LOCALSTATEDIR=/var -DSYSTEMD_UNITDIR=/usr/lib/systemd/system \
    -DCMAKE_C_FLAGS="$cflags" -DCMAKE_CXX_FLAGS="$cflags" \
    -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_MODULE_LINKER_FLAGS="$ldflags" \
    -DCMAKE_SHARED_LINKER_FLAGS="$ldflags" >/dev/null
  cmake --build "$b" -j "$JOBS"
  rm -rf "$stage" "$top/RPMS" "$top/BUILDROOT"
  DESTDIR=$stage cmake --install "$b" --strip >/dev/null
  # (Debian's brp-compress uses `read -d`, which its /bin/sh lacks; the spec
  # compresses the man pages itself, so that noise is dropped.)
  rpmbuild -bb --quiet --define "_topdir $top" --define "staged $stage" --define "srcdir $SRCDIR" \
    packaging/rpm/depth-realtime.spec 2> >(grep -v 'brp-compress: [0-9]*: read: Illegal option -d' >&2)
  # Binary compatibility with RHEL 9 (glibc 2.34, libstdc++ of GCC 11).
  local glibc glibcxx
  glibc=$(objdump -T "$stage"/usr/sbin/depth-realtime "$stage"/usr/lib64/depth-realtime/modules/*.so |
    grep -oE 'GLIBC_[0-9.]+' | sort -uV | tail -1)
  glibcxx=$(objdump -T "$stage"/usr/sbin/depth-realtime "$stage"/usr/lib64/depth-realtime/modules/*.so |
    grep -oE 'GLIBCXX_[0-9.]+' | sort -uV | tail -1)
  echo "rpm: needs $glibc and $glibcxx (RHEL 9 has GLIBC_2.34, GLIBCXX_3.4.29)"
  ls -1 "$top"/RPMS/*/*.rpm
}

case "${1:-}" in
  deb) build_deb ;;
  rpm) build_rpm ;;
  all) build_deb; build_rpm ;;
  *) echo "usage: $0 deb|rpm|all" >&2; exit 1 ;;
esac
