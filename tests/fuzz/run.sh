#!/usr/bin/env bash
# Runs the libFuzzer targets built in BUILD/fuzz/ (make fuzz, make fuzz-ci).
#   tests/fuzz/run.sh BUILD SECONDS [TARGET...]     (default: every target)
# Each target runs for SECONDS on its own working corpus, BUILD/fuzz-corpus/
# TARGET (seeded from tests/fuzz/corpus/TARGET, so the committed corpus is
# never written to), with tests/fuzz/dict/TARGET.dict when there is one.
# FUZZ_JOBS targets run at a time (default 1). Prints executions, exec/s,
# coverage (cov, ft), corpus size and crashes per target; exits 1 when any
# target crashed, naming the reproducer.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: run.sh BUILD SECONDS [TARGET...]}
seconds=${2:?usage: run.sh BUILD SECONDS [TARGET...]}
shift 2
build=$(cd "$build" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/*.cc; do targets+=("$(basename "$f" .cc)"); done
fi
jobs=${FUZZ_JOBS:-1}
out="$build/fuzz-out"
mkdir -p "$out"

run_one() {
  local t=$1 bin="$build/fuzz/fuzz_$t" corpus="$build/fuzz-corpus/$1" art="$out/$1"
  if [ ! -x "$bin" ]; then
    echo "missing $bin (build with make fuzz)" >"$out/$t.log"
    return 1
  fi
  mkdir -p "$corpus" "$art"
  rm -f "$art"/crash-* "$art"/oom-* "$art"/timeout-* "$art"/leak-*
  cp -n "$here/corpus/$t"/* "$corpus"/ 2>/dev/null
  local dict=()
  [ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GB is a leak or a bomb.
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$art/" "${dict[@]}" "$corpus" >"$out/$t.log" 2>&1
}

# Start the targets, at most $jobs at a time.
running=0
for t in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

status=0
printf '%-13s %12s %9s %6s %7s %7s  %s\n' target executions exec/s cov ft corpus crashes
for t in "${targets[@]}"; do
  log="$out/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line libFuzzer printed ("#N DONE cov: X ft: Y corp: ...").
  line=$(grep -E '^#[0-9]+' "$log" | grep ' cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
  files=$(find "$build/fuzz-corpus/$t" -type f 2>/dev/null | wc -l)
  crashes=$(find "$out/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) 2>/dev/null)
  n=0
  [ -n "$crashes" ] && n=$(wc -l <<<"$crashes")
  [ -s "$log" ] || n=1
  grep -q '^missing ' "$log" && n=1
  printf '%-13s %12s %9s %6s %7s %7s  %s\n' "$t" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "$files" "$n"
  if [ "$n" -gt 0 ]; then
    status=1
    for c in $crashes; do
      echo "  CRASH $t: $c"
      echo "    reproduce: $build/fuzz/fuzz_$t $c"
    done
    grep -m1 -E 'ERROR: |runtime error: |fuzz check failed|^missing ' "$log" | sed 's/^/    /'
    echo "    log: $log"
  fi
done
exit $status
