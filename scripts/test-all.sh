#!/usr/bin/env bash
# `make test`'s runner: runs every part even when an earlier one fails (one
# failing test must not hide the ASan half), then prints each part's summary
# (ctest's "N% tests passed" and the failed tests; the fuzz table) and exits 1
# if any part failed.
#   scripts/test-all.sh NAME COMMAND [NAME COMMAND ...]
set -uo pipefail
[ $(($# % 2)) = 0 ] && [ $# -gt 0 ] || { echo "usage: scripts/test-all.sh NAME COMMAND [NAME COMMAND ...]" >&2; exit 2; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/dr-test-all.XXXXXX")
trap 'rm -rf "$logs"' EXIT

names=() results=() i=0 failed=0
while [ $# -gt 0 ]; do
  name=$1 cmd=$2; shift 2
  echo "===== make test: $name"
  start=$(date +%s)
  bash -c "$cmd" 2>&1 | tee "$logs/$i.log"
  rc=${PIPESTATUS[0]}
  names+=("$name")
  results+=("$([ "$rc" = 0 ] && echo PASSED || echo "FAILED (exit $rc)") in $(($(date +%s) - start)) s")
  [ "$rc" = 0 ] || failed=1
  i=$((i + 1))
done

echo
echo "===== make test: summary"
for ((j = 0; j < i; j++)); do
  echo "--- ${names[j]}: ${results[j]}"
  log=$logs/$j.log
  # From the last summary header to the end: ctest's count and its list of
  # failed tests, or the fuzz table; else the last lines of the output.
  from=$(grep -nE '^[0-9]+% tests passed|^target +executions' "$log" | tail -1 | cut -d: -f1)
  if [ -n "$from" ]; then tail -n "+$from" "$log" | grep -v '^Errors while running CTest' | head -60
  else tail -n 15 "$log"; fi
done
if [ $failed = 0 ]; then echo "make test: every part passed"; else echo "make test: FAILED (see the summaries above)"; fi
exit $failed
