#!/usr/bin/env bash
# Runs the libFuzzer targets for a bounded time each, over a copy of their seed corpus, and fails
# when one finds a crash. `make test-fuzz` calls it after building them.
#
#   fuzz/run.sh [BUILD_DIR [SECONDS [TARGET...]]]     defaults: build-san, 8, every target
#
# Per target: the corpus is BUILD_DIR/corpus-TARGET (the seeds of fuzz/corpus/TARGET are copied
# in, so the repository is not modified, and what earlier runs found is kept), crash inputs go
# to BUILD_DIR/crashes-TARGET/, the log to BUILD_DIR/fuzz-TARGET.log. One line per target
# says how many inputs ran and the coverage reached.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-build-san}"
seconds="${2:-8}"
shift $(($# < 2 ? $# : 2))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_http fuzz_routes fuzz_dataset_ref fuzz_run_filter fuzz_v2_infer fuzz_samples
    fuzz_job_spec)
fi

failed=0
for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $t: $bin is not built (cmake --build $build --target fuzzers)"
    failed=1
    continue
  fi
  corpus="$build/corpus-$t"
  crashes="$build/crashes-$t"
  log="$build/fuzz-$t.log"
  mkdir -p "$corpus" "$crashes"
  cp -f "$root/fuzz/corpus/$t"/* "$corpus"/
  extra=()
  if [ -f "$root/fuzz/$t.dict" ]; then extra+=("-dict=$root/fuzz/$t.dict"); fi
  # The server's threads allocate while libFuzzer counts: its per-input leak check would stop
  # them and scan the heap after nearly every input (a third of the speed). Leaks are still
  # checked once, at exit.
  if [ "$t" = fuzz_http ]; then extra+=(-detect_leaks=0); fi
  start=$(date +%s)
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "${extra[@]}" "$corpus" >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  # The last status line: "#12345 REDUCE cov: 1234 ft: 5678 corp: 90/12Kb ..."
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  if [ $rc -eq 0 ]; then
    echo "fuzz: $t: ${execs:-?} inputs in ${took}s, coverage ${cov:-?} edges, ${ft:-?} features, corpus ${corp:-?}: ok"
  else
    failed=1
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} inputs; log $log, crash inputs in $crashes/"
    grep -E '==fuzz== FAILED|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY|Test unit written|#[0-9]+ in ' "$log" | head -n 30
    echo "  reproduce: $bin <crash input>   (fuzz/README.md)"
  fi
done
exit $failed
