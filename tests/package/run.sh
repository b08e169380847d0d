#!/bin/bash
# Package test (issue 5): builds the .deb and the .rpm, lints them, installs
# the .deb with apt into a fresh Debian 12 root (mmdebstrap) booted with
# `systemd-nspawn --boot`, and drives the real unit: start, Socket.IO clients,
# reload with a good and a bad config, stop, upgrade with a modified conffile,
# remove, purge. The .rpm: rpmlint, its dependencies, `rpm -i --root` into an
# empty root and (scriptlets run) into the Debian root. Where nspawn cannot boot
# the systemd steps print SKIPPED and the same checks run in a plain chroot.
#
#   tests/package/run.sh          (as root; installs the tools it needs)
#
# Environment:
#   OUT=build-pkg          where packages are built and the work dir lives
#   SKIP_BUILD=1           reuse the packages already in $OUT (no compile)
#   PKGTEST_NO_NSPAWN=1    force the chroot fallback
#   KEEP=1                 keep the work dir (roots, logs) for inspection
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=$PWD
OUT=${OUT:-build-pkg}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VERSION=$(sed -n 's/^project(depth-realtime VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
UPVER=$VERSION+pkgtest1
ARCH=$(dpkg --print-architecture)
W=$OUT/pkgtest
ROOT=$W/root
MACHINE=drpkg$$
T_START=$(date +%s)
NSPAWN_PID=
DAEMON_PID=
MOUNTED=()

# ------------------------------------------------------------------ helpers
declare -a SUMMARY=()
STEP=
STEP_T0=0
step() {
  end_step
  STEP=$1
  STEP_T0=$(date +%s.%N)
  echo
  echo "=== $STEP"
}
end_step() {
  [ -n "$STEP" ] || return 0
  SUMMARY+=("$(printf '%-52s %-8s %6.1fs' "$STEP" "${1:-PASS}" "$(echo "$(date +%s.%N) - $STEP_T0" | bc)")")
  STEP=
}
skip_step() { echo "SKIPPED: $2"; STEP=$1; STEP_T0=$(date +%s.%N); end_step SKIPPED; }
PASS_N=0
FAIL_N=0
ok() { echo "  ok: $*"; PASS_N=$((PASS_N + 1)); }
die() {
  echo "  FAIL: $*" >&2
  FAIL_N=$((FAIL_N + 1))
  [ -n "$STEP" ] && end_step FAIL
  exit 1
}
# expect DESCRIPTION CMD...: the command must succeed.
expect() {
  local d=$1; shift
  if "$@" >"$W/expect.out" 2>&1; then ok "$d"; else sed 's/^/    /' "$W/expect.out"; die "$d (command: $*)"; fi
}
elapsed() { echo $(($(date +%s) - T_START)); }

stop_container() {
  [ -n "$NSPAWN_PID" ] || return 0
  kill -TERM "$NSPAWN_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$NSPAWN_PID" 2>/dev/null || true
  wait "$NSPAWN_PID" 2>/dev/null || true
  NSPAWN_PID=
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$DAEMON_PID" ]; then kill -TERM "$DAEMON_PID" 2>/dev/null; wait "$DAEMON_PID" 2>/dev/null; fi
  stop_container
  local m
  for ((m = ${#MOUNTED[@]} - 1; m >= 0; m--)); do umount -l "${MOUNTED[m]}" 2>/dev/null; done
  rm -rf "/run/systemd/nspawn/propagate/$MACHINE" "/run/systemd/nspawn/unix-export/$MACHINE" 2>/dev/null
  if [ $rc != 0 ] && [ -n "$STEP" ]; then end_step FAIL; fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
  echo
  echo "=== summary (total $(elapsed)s, compile ${COMPILE_S:-0}s)"
  printf '%s\n' "${SUMMARY[@]}"
  if [ $rc = 0 ]; then echo "PACKAGE TEST PASSED"; else echo "PACKAGE TEST FAILED (rc $rc)"; fi
  [ $rc = 0 ] || [ $FAIL_N -gt 0 ] || FAIL_N=1
  echo "package: $PASS_N passed, $FAIL_N failed"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "run.sh: must run as root (mmdebstrap, nspawn, chroot)" >&2; exit 1; }

# ------------------------------------------------------------------ tools
step "install tools"
need=()
for p in debhelper dpkg-dev fakeroot lintian rpm rpmlint mmdebstrap systemd-container \
         curl bc util-linux binutils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
ok "tools present"
end_step

# ------------------------------------------------------------------ build
rm -rf "$W"
mkdir -p "$W"
DEB=$OUT/deb/depth-realtime_${VERSION}_$ARCH.deb
DEVDEB=$OUT/deb/depth-realtime-dev_${VERSION}_$ARCH.deb
UPDEB=$W/depth-realtime_${UPVER}_$ARCH.deb
RPMS_DIR=$OUT/rpm/RPMS
TREE=$OUT/deb/depth-realtime-$VERSION
COMPILE_T0=$(date +%s)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  step "build .deb (make deb; includes the compile)"
  OUT=$OUT packaging/build-packages.sh deb >"$W/build-deb.log" 2>&1 || { tail -40 "$W/build-deb.log"; die "deb build"; }
  ok "$(basename "$DEB")"
  step "build .rpm (make rpm; includes the compile)"
  OUT=$OUT packaging/build-packages.sh rpm >"$W/build-rpm.log" 2>&1 || { tail -40 "$W/build-rpm.log"; die "rpm build"; }
  grep '^rpm: needs' "$W/build-rpm.log" | sed 's/^/  /'
fi
[ -f "$DEB" ] && [ -f "$DEVDEB" ] || die "no .deb in $OUT/deb (run without SKIP_BUILD)"
ls "$RPMS_DIR"/*/depth-realtime-"$VERSION"-*.rpm >/dev/null 2>&1 || die "no .rpm in $RPMS_DIR"

# The upgrade: a second build of the same tree with a bumped version and a
# changed packaged conffile (incremental: the objects are reused).
step "build upgrade .deb $UPVER (incremental)"
[ -d "$TREE/debian" ] || die "$TREE missing (run without SKIP_BUILD)"
(
  cd "$TREE"
  cp debian/changelog "$W/changelog.orig"
  cp conf/depth-realtime.conf "$W/conf.orig"
  restore() { cp "$W/changelog.orig" debian/changelog; cp "$W/conf.orig" conf/depth-realtime.conf; }
  trap restore EXIT
  { echo "depth-realtime ($UPVER) unstable; urgency=medium"
    echo
    echo "  * Package test upgrade build."
    echo
    echo " -- depth-realtime developers <depth-realtime@example.org>  $(date -R)"
    echo
    cat "$W/changelog.orig"; } >debian/changelog
  echo "# changed in $UPVER" >>conf/depth-realtime.conf
  dh_clean >/dev/null
  DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" dpkg-buildpackage -us -uc -b -nc >"$W/build-upgrade.log" 2>&1
) || { tail -30 "$W/build-upgrade.log"; die "upgrade build"; }
mv "$OUT/deb/depth-realtime_${UPVER}_$ARCH.deb" "$UPDEB"
rm -f "$OUT"/deb/*"$UPVER"*
ok "$(basename "$UPDEB")"
COMPILE_S=$(($(date +%s) - COMPILE_T0))
end_step
T_START=$(date +%s)  # the time budget excludes the compile

# ------------------------------------------------------------------ static checks
step "lintian --fail-on error,warning"
(cd "$OUT/deb" && lintian --fail-on error,warning "depth-realtime_${VERSION}_$ARCH.changes") \
  >"$W/lintian.log" 2>&1 || { cat "$W/lintian.log"; die "lintian"; }
grep -v 'running with root privileges' "$W/lintian.log" | sed 's/^/  /' || true
ok "lintian clean"
expect "control Depends lists libuv1, libjwt0, libssl3, adduser" \
  bash -c "dpkg-deb -f '$DEB' Depends | tee '$W/depends' | grep -q libuv1 && grep -q libjwt0 '$W/depends' && grep -q libssl3 '$W/depends' && grep -q adduser '$W/depends'"
echo "  Depends: $(cat "$W/depends")"
expect "conffiles: /etc/depth-realtime/*, /etc/default, /etc/logrotate.d" \
  bash -c "dpkg-deb --ctrl-tarfile '$DEB' | tar -xO ./conffiles | tee '$W/conffiles' | grep -qx /etc/depth-realtime/depth-realtime.conf && grep -qx /etc/default/depth-realtime '$W/conffiles' && grep -qx /etc/logrotate.d/depth-realtime '$W/conffiles'"
expect "postinst enables and starts the unit (dh_installsystemd found it)" \
  bash -c "dpkg-deb --ctrl-tarfile '$DEB' | tar -xO ./postinst | grep -q 'deb-systemd-invoke .*depth-realtime.service'"
end_step

step "modules built against the -dev package (find_package, pkg-config)"
# The probe and the example of docs/modules.md, built the way a module author
# builds them, against the unpacked .debs; the packaged daemon loads them.
mkdir -p "$W/devroot"
dpkg-deb -x "$DEB" "$W/devroot"
dpkg-deb -x "$DEVDEB" "$W/devroot"
[ -f "$W/devroot/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/cmake/depth-realtime/depth-realtimeConfig.cmake" ] ||
  die "the -dev package lacks the CMake package"
expect "pkg-config moduledir is the daemon's module dir" bash -c \
  "PKG_CONFIG_PATH='$W/devroot/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/pkgconfig' pkg-config --variable=moduledir depth-realtime | grep -qx '/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/depth-realtime/modules'"
expect "probe and example modules build with find_package and load (tests/package/module-build.sh)" \
  tests/package/module-build.sh "$W/devroot/usr" "$W/devroot/usr/sbin/depth-realtime" "$W/modbuild"
sed 's/^/    /' "$W/expect.out"
end_step

step "systemd-analyze (host: security --offline)"
systemd-analyze security --offline=yes --threshold=25 --no-pager packaging/depth-realtime.service \
  >"$W/security.log" 2>&1 || { tail -5 "$W/security.log"; die "exposure above 2.5"; }
ok "$(grep -o 'Overall exposure level.*' "$W/security.log")"
end_step

step "directive docs are up to date (gen-directive-docs.sh --check)"
if packaging/gen-directive-docs.sh --check "$TREE/obj-$(dpkg-architecture -qDEB_HOST_GNU_TYPE)"; then
  ok "docs/directives.md and packaging/depth-realtime.conf.5 match -T"
else
  die "regenerate with packaging/gen-directive-docs.sh"
fi
end_step

step "rpmlint, rpm -qpR, rpm -qpc"
RPM=$(ls "$RPMS_DIR"/*/depth-realtime-"$VERSION"-*.rpm | grep -v devel | head -1)
RPMDEVEL=$(ls "$RPMS_DIR"/*/depth-realtime-devel-"$VERSION"-*.rpm | head -1)
rpmlint -r packaging/rpm/depth-realtime.rpmlintrc "$RPM" "$RPMDEVEL" >"$W/rpmlint.log" 2>&1 ||
  { cat "$W/rpmlint.log"; die "rpmlint"; }
if grep -E '(^| )[EW]: ' "$W/rpmlint.log"; then die "rpmlint findings"; fi
ok "rpmlint: $(tail -1 "$W/rpmlint.log")"
rpm -qpR "$RPM" 2>/dev/null >"$W/rpm-requires"
sed 's/^/    /' "$W/rpm-requires"
for r in 'libuv.so.1' 'libjwt.so.0' 'libcrypto.so.3' 'libsystemd.so.0' 'libjansson.so.4' 'shadow-utils' '/bin/sh'; do
  grep -q -- "^$r" "$W/rpm-requires" || die "rpm Requires lacks $r"
done
ok "Requires: libuv, libjwt, libcrypto, libsystemd, libjansson, shadow-utils, /bin/sh"
rpm -qpc "$RPM" 2>/dev/null >"$W/rpm-config"
grep -qx /etc/depth-realtime/depth-realtime.conf "$W/rpm-config" || die "rpm: conf not %config"
grep -qx /etc/default/depth-realtime "$W/rpm-config" || die "rpm: /etc/default not %config"
ok "%config: $(tr '\n' ' ' <"$W/rpm-config")"
end_step

step "rpm -i --root (empty scratch root, layout)"
mkdir -p "$W/rpmroot"
rpm -i --nodeps --noscripts --root "$W/rpmroot" "$RPM" "$RPMDEVEL" >"$W/rpm-empty.log" 2>&1 ||
  { cat "$W/rpm-empty.log"; die "rpm -i"; }
for f in usr/sbin/depth-realtime usr/lib64/depth-realtime/modules/auth_jwt.so usr/lib64/depth-realtime/modules/chat.so \
         usr/share/depth-realtime/default-modules \
         usr/lib/systemd/system/depth-realtime.service etc/depth-realtime/depth-realtime.conf \
         etc/depth-realtime/modules-available/auth_jwt.conf etc/default/depth-realtime \
         etc/logrotate.d/depth-realtime usr/include/depth-realtime/module.h \
         usr/lib64/cmake/depth-realtime/depth-realtimeConfig.cmake usr/lib64/pkgconfig/depth-realtime.pc; do
  [ -e "$W/rpmroot/$f" ] || die "rpm root lacks /$f"
done
[ -d "$W/rpmroot/var/log/depth-realtime" ] || die "rpm root lacks /var/log/depth-realtime"
ls "$W/rpmroot"/usr/share/man/man8/depth-realtime.8* >/dev/null || die "rpm root lacks the man page"
ok "binary, modules in /usr/lib64, unit, conf, default, logrotate, log dir, man pages, headers, CMake package, .pc"
rpm --root "$W/rpmroot" -qa | grep -q "^depth-realtime-$VERSION" || die "rpm db"
rpm --root "$W/rpmroot" -e --nodeps --noscripts depth-realtime depth-realtime-devel >/dev/null 2>&1 || die "rpm -e"
[ ! -e "$W/rpmroot/usr/sbin/depth-realtime" ] || die "rpm -e left the binary"
ok "rpm -e removes it"
rm -rf "$W/rpmroot"
end_step

# ------------------------------------------------------------------ Debian root
step "mmdebstrap Debian 12 root (minbase + systemd)"
# The archive this machine's apt already uses (no host name in the project).
SOURCES=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
[ -n "$SOURCES" ] || SOURCES=/etc/apt/sources.list
timeout 300 mmdebstrap --quiet --variant=minbase --include=systemd,systemd-sysv,dbus,logrotate \
  bookworm "$ROOT" "$SOURCES" >"$W/mmdebstrap.log" 2>&1 || { tail -20 "$W/mmdebstrap.log"; die "mmdebstrap"; }
cp "$DEB" "$ROOT/var/tmp/pkg.deb"
cp "$UPDEB" "$ROOT/var/tmp/pkg-up.deb"
ok "$(du -sh "$ROOT" | cut -f1)"
end_step

# A free port on the host (the container shares its network namespace).
PORT=
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 20000))
  if [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then PORT=$p; break; fi
done
[ -n "$PORT" ] || die "no free port"
SECRET=pkgtest-$RANDOM$RANDOM
URL=http://127.0.0.1:$PORT

open_packet() { curl -sS --max-time 5 "$URL/socket.io/?EIO=4&transport=polling"; }
check_serving() {  # [expected pingInterval]
  local body
  body=$(open_packet) || die "no answer on $URL"
  [[ $body == 0\{\"sid\":* ]] || die "unexpected open packet: $body"
  if [ -n "${1:-}" ]; then
    [[ $body == *\"pingInterval\":$1,* ]] || die "pingInterval is not $1: $body"
  fi
  ok "open packet: $body"
  body=$(curl -sS --max-time 5 "$URL/healthz") || die "no /healthz"
  [ "$body" = '{"status":"ok"}' ] || die "/healthz: $body"
  ok "GET /healthz: $body"
}
run_client() {
  if command -v node >/dev/null && [ -d tests/node_modules/socket.io-client ]; then
    timeout 60 node tests/package/client.mjs "$URL" "$SECRET" | sed 's/^/  /'
    [ "${PIPESTATUS[0]}" = 0 ] || die "socket.io-client"
  else
    echo "  SKIPPED: socket.io-client (no node or tests/node_modules; run make deps)"
  fi
}
write_env() {
  printf 'JWT_SECRET=%s\nPORT=%s\nCLIENT_URL=http://localhost\n' "$SECRET" "$PORT" >"$ROOT/etc/default/depth-realtime"
}

# ------------------------------------------------------------------ nspawn
L=
IN() { nsenter -t "$L" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o Dpkg::Use-Pty=0)
svc() { IN timeout 90 systemctl "$@" depth-realtime.service; }
prop() { IN systemctl show -p "$1" --value depth-realtime.service; }
workers() { IN cat "/proc/$1/task/$1/children" 2>/dev/null | tr ' ' '\n' | grep . | sort | tr '\n' ' '; }
journal() { IN journalctl -u depth-realtime.service --no-pager -o cat "$@"; }
ERRLOG=/var/log/depth-realtime/error.log
errlog() { cat "$ROOT$ERRLOG" 2>/dev/null || true; }

boot_container() {
  [ "${PKGTEST_NO_NSPAWN:-0}" = 1 ] && return 1
  systemd-nspawn --boot -D "$ROOT" --register=no --keep-unit --console=pipe -M "$MACHINE" \
    >"$W/nspawn.log" 2>&1 &
  NSPAWN_PID=$!
  local st
  for _ in $(seq 1 150); do
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    L=$(pgrep -P "$NSPAWN_PID" | head -1 || true)
    if [ -n "$L" ]; then
      st=$(IN systemctl is-system-running 2>/dev/null || true)
      if [ "$st" = running ] || [ "$st" = degraded ]; then return 0; fi
    fi
    sleep 0.2
  done
  echo "  nspawn did not boot (state ${st:-none}):"; tail -5 "$W/nspawn.log" | sed 's/^/    /'
  stop_container
  return 1
}

nspawn_tests() {
  step "nspawn: install the .deb with apt"
  IN timeout 120 apt-get update -qq >"$W/apt.log" 2>&1 || { cat "$W/apt.log"; die "apt-get update"; }
  IN timeout 300 apt-get install "${APT_OPTS[@]}" /var/tmp/pkg.deb >>"$W/apt.log" 2>&1 ||
    { tail -30 "$W/apt.log"; die "apt-get install"; }
  grep -E '^depth-realtime:' "$W/apt.log" | sed 's/^/  apt: /' || true
  expect "binary runs: $(IN /usr/sbin/depth-realtime -v 2>&1)" IN /usr/sbin/depth-realtime -v
  IN sh -c 'ldd /usr/sbin/depth-realtime /usr/lib/*/depth-realtime/modules/*.so' >"$W/ldd.log" 2>&1 ||
    { cat "$W/ldd.log"; die "ldd"; }
  if grep 'not found' "$W/ldd.log"; then die "missing libraries (Depends incomplete)"; fi
  ok "ldd: every library of the binary and the modules resolved"
  expect "user depth-realtime exists" IN getent passwd depth-realtime
  expect "unit enabled" test "$(IN systemctl is-enabled depth-realtime.service)" = enabled
  for m in auth_jwt ratelimit chat projects notifications admin api; do
    expect "$m enabled by postinst" test -L "$ROOT/etc/depth-realtime/modules-enabled/$m.conf"
  done
  expect "/var/log/depth-realtime: depth-realtime:depth-realtime 750" \
    test "$(IN stat -c '%U:%G %a' /var/log/depth-realtime)" = "depth-realtime:depth-realtime 750"
  # Unconfigured (JWT_SECRET empty): the config test in ExecStartPre refuses.
  sleep 0.5
  if svc is-active -q; then die "active without JWT_SECRET"; fi
  journal | grep -q 'set JWT_SECRET' || { journal | tail; die "no JWT_SECRET error in the journal"; }
  ok "without JWT_SECRET: not started, journal says: $(journal | grep -m1 'set JWT_SECRET')"
  end_step

  step "nspawn: systemd-analyze verify + security (in the booted root)"
  # --man=no: the root has no man-db; the Documentation= pages are checked below.
  IN systemd-analyze verify --man=no depth-realtime.service >"$W/verify.log" 2>&1 || true
  if [ -s "$W/verify.log" ]; then cat "$W/verify.log"; die "systemd-analyze verify printed something"; fi
  ok "systemd-analyze verify: no output"
  expect "Documentation= man pages installed" \
    test -f "$ROOT/usr/share/man/man8/depth-realtime.8.gz" -a -f "$ROOT/usr/share/man/man5/depth-realtime.conf.5.gz"
  IN systemd-analyze security --threshold=25 --no-pager depth-realtime.service >"$W/security-live.log" 2>&1 ||
    { tail -3 "$W/security-live.log"; die "security exposure"; }
  ok "$(grep -o 'Overall exposure level.*' "$W/security-live.log")"
  end_step

  step "nspawn: systemctl start"
  write_env
  # Log to a file in LogsDirectory (checks the sandbox lets it write there).
  sed -i "s|^error_log stderr info;|error_log $ERRLOG info;|" "$ROOT/etc/depth-realtime/depth-realtime.conf"
  grep -q "^error_log $ERRLOG" "$ROOT/etc/depth-realtime/depth-realtime.conf" || die "could not set error_log"
  IN systemctl reset-failed depth-realtime.service 2>/dev/null || true
  svc restart || { journal | tail -20; die "systemctl start"; }
  expect "active" svc is-active -q
  MAINPID=$(prop MainPID)
  expect "main process runs as depth-realtime" test "$(IN stat -c %U "/proc/$MAINPID")" = depth-realtime
  local w0
  w0=$(workers "$MAINPID")
  [ -n "$w0" ] || die "no workers under $MAINPID"
  ok "MainPID $MAINPID, workers $w0"
  errlog | grep -q 'master started' || { errlog; die "nothing in $ERRLOG"; }
  ok "$ERRLOG: $(errlog | grep -m1 'master started')"
  local nofile
  nofile=$(IN awk '/Max open files/ {print $4}' "/proc/$MAINPID/limits")
  [ "$nofile" -ge 20000 ] || die "open files limit $nofile"
  ok "open files limit $nofile (unit: LimitNOFILE=$(prop LimitNOFILE))"
  IN grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$MAINPID/status" || die "NoNewPrivs not set"
  ok "sandboxed: NoNewPrivs 1, Seccomp $(IN awk '/^Seccomp:/ {print $2}' "/proc/$MAINPID/status")"
  end_step

  step "nspawn: clients connect (curl, socket.io-client)"
  check_serving 25000
  run_client
  end_step

  step "nspawn: systemctl reload, good config"
  sed -i 's/ping_interval 25s;/ping_interval 20s;/' "$ROOT/etc/depth-realtime/depth-realtime.conf"
  grep -q 'ping_interval 20s;' "$ROOT/etc/depth-realtime/depth-realtime.conf" || die "could not edit the conf"
  local t0 w1
  t0=$(date +%s.%N)
  svc reload || { journal | tail -20; errlog | tail; die "reload"; }
  ok "systemctl reload returned 0 in $(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
  expect "still active" svc is-active -q
  expect "MainPID unchanged ($MAINPID)" test "$(prop MainPID)" = "$MAINPID"
  sleep 0.5
  w1=$(workers "$MAINPID")
  if [ "$w1" = "$w0" ]; then ok "ping_interval applied in place: same workers $w1"; else ok "workers now $w1 (were $w0)"; fi
  check_serving 20000
  # A change that needs new workers: worker_processes.
  sed -i 's/^worker_processes auto;/worker_processes 1;/' "$ROOT/etc/depth-realtime/depth-realtime.conf"
  grep -q '^worker_processes 1;' "$ROOT/etc/depth-realtime/depth-realtime.conf" || die "could not edit worker_processes"
  t0=$(date +%s.%N)
  svc reload || { journal | tail -20; errlog | tail; die "reload"; }
  ok "systemctl reload (worker_processes 1) returned 0 in $(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
  expect "still active" svc is-active -q
  expect "MainPID unchanged ($MAINPID)" test "$(prop MainPID)" = "$MAINPID"
  for _ in $(seq 1 50); do
    w1=$(workers "$MAINPID")
    [ "$(echo $w1 | wc -w)" = 1 ] && break
    sleep 0.2
  done
  [ "$(echo $w1 | wc -w)" = 1 ] || die "expected 1 worker after the reload, have: $w1"
  for p in $w1; do [[ " $w0 " == *" $p "* ]] && die "worker $p survived the reload (old: $w0, now: $w1)"; done
  ok "new workers: $w1 (were $w0)"
  check_serving 20000
  run_client
  end_step

  step "nspawn: systemctl reload, bad config"
  echo 'bogus_directive on;' >"$ROOT/etc/depth-realtime/conf.d/pkgtest.conf"
  if svc reload 2>"$W/reload-bad.err"; then die "reload with a bad config succeeded"; fi
  ok "systemctl reload failed: $(head -1 "$W/reload-bad.err")"
  journal | grep -q 'conf.d/pkgtest.conf:1' || { journal | tail; die "no file:line in the journal"; }
  ok "journal: $(journal | grep -m1 'conf.d/pkgtest.conf:1')"
  expect "still active" svc is-active -q
  expect "MainPID unchanged" test "$(prop MainPID)" = "$MAINPID"
  expect "workers unchanged" test "$(workers "$MAINPID")" = "$w1"
  check_serving 20000
  # SIGHUP straight to the daemon (no ExecReload config test): it must
  # refuse the config itself and leave the unit active, not stuck reloading.
  IN systemctl kill -s HUP --kill-who=main depth-realtime.service
  sleep 1
  errlog | grep -q 'reload failed, keeping the running configuration.*pkgtest.conf:1' ||
    { errlog | tail; die "daemon did not log the failed reload"; }
  ok "raw SIGHUP with a bad config: $(errlog | grep -m1 'reload failed' | cut -c1-150)"
  expect "active/running after the raw SIGHUP" test "$(prop ActiveState)/$(prop SubState)" = active/running
  expect "workers unchanged" test "$(workers "$MAINPID")" = "$w1"
  check_serving 20000
  rm -f "$ROOT/etc/depth-realtime/conf.d/pkgtest.conf"
  end_step

  step "nspawn: logrotate (postrotate sends USR1)"
  IN logrotate -f /etc/logrotate.d/depth-realtime >"$W/logrotate.log" 2>&1 || { cat "$W/logrotate.log"; die "logrotate"; }
  expect "rotated: $ERRLOG.1" test -s "$ROOT$ERRLOG.1"
  expect "active, same workers" test "$(prop ActiveState) $(workers "$MAINPID")" = "active $w1"
  # The next line the daemon writes must land in the new file.
  IN systemctl kill -s HUP --kill-who=main depth-realtime.service
  sleep 1
  errlog | grep -q 'configuration reloaded' || { ls -l "$ROOT/var/log/depth-realtime"; die "nothing written to the new $ERRLOG"; }
  ok "after USR1 the daemon writes to the new file: $(errlog | grep -m1 'configuration reloaded' | cut -c1-100)"
  check_serving 20000
  end_step

  step "nspawn: systemctl stop"
  t0=$(date +%s.%N)
  svc stop || die "systemctl stop"
  ok "stopped in $(printf '%.2f' "$(echo "$(date +%s.%N) - $t0" | bc)")s"
  if svc is-active -q; then die "still active after stop"; fi
  expect "Result=success" test "$(prop Result)" = success
  expect "MainPID 0" test "$(prop MainPID)" = 0
  if curl -s --max-time 2 "$URL/healthz" >/dev/null; then die "still answering after stop"; fi
  ok "port closed"
  svc start || die "start again"
  end_step

  step "nspawn: upgrade to $UPVER (admin-modified conffiles)"
  MAINPID=$(prop MainPID)
  IN timeout 300 apt-get install "${APT_OPTS[@]}" /var/tmp/pkg-up.deb >"$W/apt-up.log" 2>&1 ||
    { tail -30 "$W/apt-up.log"; die "upgrade"; }
  expect "version $UPVER installed" test "$(IN dpkg-query -W -f='${Version}' depth-realtime)" = "$UPVER"
  expect "admin's depth-realtime.conf kept" grep -q 'ping_interval 20s;' "$ROOT/etc/depth-realtime/depth-realtime.conf"
  expect "package's new one beside it (.dpkg-dist)" test -f "$ROOT/etc/depth-realtime/depth-realtime.conf.dpkg-dist"
  expect "admin's /etc/default/depth-realtime kept" grep -q "^JWT_SECRET=$SECRET" "$ROOT/etc/default/depth-realtime"
  expect "mode of /etc/default/depth-realtime still 0600" test "$(stat -c %a "$ROOT/etc/default/depth-realtime")" = 600
  expect "active after upgrade" svc is-active -q
  local newpid
  newpid=$(prop MainPID)
  expect "restarted by the upgrade (MainPID $MAINPID -> $newpid)" test "$newpid" != "$MAINPID"
  check_serving 20000
  end_step

  step "nspawn: remove"
  IN timeout 120 apt-get remove "${APT_OPTS[@]}" depth-realtime >"$W/apt-rm.log" 2>&1 || { tail "$W/apt-rm.log"; die "remove"; }
  if svc is-active -q; then die "active after remove"; fi
  expect "binary gone" test ! -e "$ROOT/usr/sbin/depth-realtime"
  expect "conffiles kept" test -f "$ROOT/etc/depth-realtime/depth-realtime.conf"
  expect "dpkg state config-files" test "$(IN dpkg-query -W -f='${db:Status-Status}' depth-realtime)" = config-files
  if curl -s --max-time 2 "$URL/healthz" >/dev/null; then die "still answering after remove"; fi
  ok "port closed"
  end_step

  step "nspawn: purge"
  IN timeout 120 apt-get purge "${APT_OPTS[@]}" depth-realtime >"$W/apt-purge.log" 2>&1 || { tail "$W/apt-purge.log"; die "purge"; }
  for f in /etc/depth-realtime /etc/default/depth-realtime /etc/logrotate.d/depth-realtime /var/log/depth-realtime \
           /etc/systemd/system/multi-user.target.wants/depth-realtime.service; do
    [ ! -e "$ROOT$f" ] && [ ! -L "$ROOT$f" ] || die "$f left after purge"
  done
  ok "/etc/depth-realtime, /etc/default, logrotate, /var/log/depth-realtime, the enable link: gone"
  if IN dpkg-query -W -f='${db:Status-Status}' depth-realtime 2>/dev/null | grep -q .; then
    [ "$(IN dpkg-query -W -f='${db:Status-Status}' depth-realtime)" = not-installed ] || die "dpkg still knows it"
  fi
  ok "dpkg: not installed"
  end_step

  step "nspawn: poweroff"
  # For the record: what systemd warned about this unit during the run.
  IN journalctl -b --no-pager -o cat -p warning >"$W/warnings.log" 2>&1 || true
  grep -i 'depth-realtime' "$W/warnings.log" | sort | uniq -c | sed 's/^/  journal warning: /' || true
  stop_container
  ok "container stopped"
  end_step
}

# ------------------------------------------------------------------ chroot fallback
CH() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
mount_proc() {
  mount -t proc proc "$ROOT/proc" && MOUNTED+=("$ROOT/proc")
  mount --bind /dev "$ROOT/dev" && MOUNTED+=("$ROOT/dev")
}
start_daemon() {
  chroot "$ROOT" setpriv --reuid=depth-realtime --regid=depth-realtime --init-groups \
    env -i PATH=/usr/sbin:/usr/bin JWT_SECRET="$SECRET" PORT="$PORT" CLIENT_URL=http://localhost \
    /usr/sbin/depth-realtime -c /etc/depth-realtime/depth-realtime.conf >>"$W/daemon.log" 2>&1 &
  DAEMON_PID=$!
  for _ in $(seq 1 50); do curl -s --max-time 1 "$URL/healthz" >/dev/null && return 0; sleep 0.1; done
  cat "$W/daemon.log"; die "daemon did not start"
}
stop_daemon() {
  kill -TERM "$DAEMON_PID"
  local rc=0
  wait "$DAEMON_PID" || rc=$?
  DAEMON_PID=
  [ $rc = 0 ] || die "daemon exited with $rc on TERM"
}

chroot_tests() {
  step "chroot: install the .deb with apt (no systemd)"
  mount_proc
  CH timeout 120 apt-get update -qq >"$W/apt.log" 2>&1 || { cat "$W/apt.log"; die "apt-get update"; }
  CH timeout 300 apt-get install "${APT_OPTS[@]}" /var/tmp/pkg.deb >>"$W/apt.log" 2>&1 ||
    { tail -30 "$W/apt.log"; die "apt-get install"; }
  expect "binary runs" CH /usr/sbin/depth-realtime -v
  CH sh -c 'ldd /usr/sbin/depth-realtime /usr/lib/*/depth-realtime/modules/*.so' >"$W/ldd.log" 2>&1 ||
    { cat "$W/ldd.log"; die "ldd"; }
  if grep 'not found' "$W/ldd.log"; then die "missing libraries (Depends incomplete)"; fi
  ok "ldd: every library of the binary and the modules resolved"
  expect "user depth-realtime exists" CH getent passwd depth-realtime
  expect "unit enabled (wants link)" test -L "$ROOT/etc/systemd/system/multi-user.target.wants/depth-realtime.service"
  systemd-analyze verify --man=no --root="$ROOT" /lib/systemd/system/depth-realtime.service >"$W/verify.log" 2>&1 || true
  if [ -s "$W/verify.log" ]; then cat "$W/verify.log"; die "systemd-analyze verify --root printed something"; fi
  ok "systemd-analyze verify --root: no output"
  if CH /usr/sbin/depth-realtime -t -c /etc/depth-realtime/depth-realtime.conf 2>/dev/null; then
    die "config test passed without JWT_SECRET"
  fi
  write_env
  expect "config test as the service user" chroot "$ROOT" setpriv --reuid=depth-realtime --regid=depth-realtime \
    --init-groups env -i JWT_SECRET="$SECRET" /usr/sbin/depth-realtime -t -c /etc/depth-realtime/depth-realtime.conf
  end_step

  for s in "systemctl start" "systemctl reload (good, bad)" "systemctl stop"; do
    skip_step "nspawn: $s" "systemd-nspawn cannot boot here; the daemon is run by hand instead"
  done

  step "chroot: daemon by hand: serve, HUP good/bad, TERM"
  start_daemon
  check_serving 25000
  run_client
  sed -i 's/ping_interval 25s;/ping_interval 20s;/' "$ROOT/etc/depth-realtime/depth-realtime.conf"
  kill -HUP "$DAEMON_PID"; sleep 1
  check_serving 20000
  echo 'bogus_directive on;' >"$ROOT/etc/depth-realtime/conf.d/pkgtest.conf"
  kill -HUP "$DAEMON_PID"; sleep 1
  grep -q 'conf.d/pkgtest.conf:1' "$W/daemon.log" || { cat "$W/daemon.log"; die "no file:line for the bad reload"; }
  ok "bad reload: $(grep -m1 'conf.d/pkgtest.conf:1' "$W/daemon.log" | cut -c1-120)"
  check_serving 20000
  rm -f "$ROOT/etc/depth-realtime/conf.d/pkgtest.conf"
  stop_daemon
  ok "TERM: exit 0"
  end_step

  step "chroot: upgrade to $UPVER, remove, purge"
  CH timeout 300 apt-get install "${APT_OPTS[@]}" /var/tmp/pkg-up.deb >"$W/apt-up.log" 2>&1 || { tail -30 "$W/apt-up.log"; die "upgrade"; }
  expect "version $UPVER" test "$(CH dpkg-query -W -f='${Version}' depth-realtime)" = "$UPVER"
  expect "admin's conf kept" grep -q 'ping_interval 20s;' "$ROOT/etc/depth-realtime/depth-realtime.conf"
  expect ".dpkg-dist written" test -f "$ROOT/etc/depth-realtime/depth-realtime.conf.dpkg-dist"
  expect "admin's /etc/default kept" grep -q "^JWT_SECRET=$SECRET" "$ROOT/etc/default/depth-realtime"
  CH timeout 120 apt-get remove "${APT_OPTS[@]}" depth-realtime >"$W/apt-rm.log" 2>&1 || die "remove"
  expect "binary gone, conffiles kept" test ! -e "$ROOT/usr/sbin/depth-realtime" -a -f "$ROOT/etc/depth-realtime/depth-realtime.conf"
  CH timeout 120 apt-get purge "${APT_OPTS[@]}" depth-realtime >"$W/apt-purge.log" 2>&1 || die "purge"
  for f in /etc/depth-realtime /etc/default/depth-realtime /var/log/depth-realtime; do
    [ ! -e "$ROOT$f" ] || die "$f left after purge"
  done
  ok "purged: /etc/depth-realtime, /etc/default/depth-realtime, /var/log/depth-realtime gone"
  end_step
}

step "systemd-nspawn --boot"
if boot_container; then
  ok "booted in $(printf '%.1f' "$(echo "$(date +%s.%N) - $STEP_T0" | bc)")s (systemd $(IN systemctl --version | head -1 | cut -d' ' -f2))"
  end_step
  nspawn_tests
else
  echo "SKIPPED: systemd-nspawn cannot boot on this machine; running the chroot checks instead"
  end_step SKIPPED
  chroot_tests
fi

# ------------------------------------------------------------------ rpm scriptlets
step "rpm -i --root into the Debian root (scriptlets run)"
# The .deb's purge leaves the system user (policy); remove it so %pre makes it.
chroot "$ROOT" userdel depth-realtime 2>/dev/null || true
chroot "$ROOT" groupdel depth-realtime 2>/dev/null || true
if chroot "$ROOT" getent passwd depth-realtime >/dev/null; then die "could not remove the user"; fi
rpm -i --nodeps --root "$ROOT" "$RPM" >"$W/rpm-deb.log" 2>&1 || { cat "$W/rpm-deb.log"; die "rpm -i"; }
expect "%pre: user depth-realtime created (useradd -r)" chroot "$ROOT" getent passwd depth-realtime
for m in auth_jwt ratelimit chat projects notifications admin api; do
  expect "%post: $m enabled" test -L "$ROOT/etc/depth-realtime/modules-enabled/$m.conf"
done
expect "config test with the compiled-in module dir /usr/lib64/depth-realtime/modules" \
  chroot "$ROOT" env -i JWT_SECRET=x /usr/sbin/depth-realtime -t -c /etc/depth-realtime/depth-realtime.conf
expect "rpm -V (files as packaged)" rpm --root "$ROOT" -V --nodeps depth-realtime
echo "# admin edit" >>"$ROOT/etc/depth-realtime/depth-realtime.conf"
rpm --root "$ROOT" -e depth-realtime >"$W/rpm-e.log" 2>&1 || { cat "$W/rpm-e.log"; die "rpm -e"; }
expect "rpm -e: binary gone" test ! -e "$ROOT/usr/sbin/depth-realtime"
expect "rpm -e: modified conf saved as .rpmsave" test -f "$ROOT/etc/depth-realtime/depth-realtime.conf.rpmsave"
end_step

LIMIT=${PKGTEST_LIMIT_S:-360}
[ "$(elapsed)" -le "$LIMIT" ] || { echo "  FAIL: took $(elapsed)s, budget ${LIMIT}s (compile excluded)"; exit 1; }
