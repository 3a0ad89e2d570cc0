#!/usr/bin/env bash
# bench/train/threads.sh: the digits MLP (examples/digits/mlp.yaml, 20 epochs, no early stop)
# trained with `dlsys train --threads N` for N in 1, 2 and the default (all cores), on an idle
# machine and with a second CPU-bound process running (a shell busy loop on every core but one,
# at normal priority); with libgomp's own waiting (DLSYS_OMP_DEFAULTS=1: spin up to 300k times
# at a barrier), dlsys's default (OMP_WAIT_POLICY=passive for the computing commands,
# src/cli/main.cpp) and OMP_WAIT_POLICY=passive set by hand (sleep at once). Each
# configuration runs ROUNDS times, interleaved; prints the median training seconds (the done
# event's `seconds`: steps and evaluations, no start-up) and their range, per configuration.
# Usage: bench/train/threads.sh [BUILD_DIR] [ROUNDS]   (defaults: build, 5)
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${2:-5}
DLSYS="$BUILD/dlsys"
TMP=$(mktemp -d)
BUSY=()
cleanup() {
  for p in "${BUSY[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
CORES=$(nproc)
sed 's/target_accuracy: .*/target_accuracy: 0/' examples/digits/mlp.yaml |
  sed 's/epochs: .*/epochs: 20/' >"$TMP/mlp.yaml"
sed -i "s|train: .*digits.csv|train: $PWD/../shared/data/digits/digits.csv|" "$TMP/mlp.yaml"

# One training run: prints its seconds.
train_seconds() {  # THREADS WAIT_POLICY
  local env=()
  case "$2" in
  libgomp) env=(DLSYS_OMP_DEFAULTS=1) ;;  # libgomp's own waiting (spins up to 300k times)
  dlsys) env=(DLSYS_UNSET=1) ;;           # dlsys's default: passive (src/cli/main.cpp)
  passive) env=(OMP_WAIT_POLICY=passive) ;;
  esac
  env "${env[@]}" "$DLSYS" train "$TMP/mlp.yaml" --threads "$1" --json --out "$TMP/run" |
    tail -1 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'
}

declare -A RESULTS
for load in idle busy; do
  if [ "$load" = busy ]; then
    # A second CPU-bound process on all cores but one (one core busy on a 2-core machine).
    for _ in $(seq $((CORES > 1 ? CORES - 1 : 1))); do
      bash -c 'while :; do :; done' &
      BUSY+=($!)
    done
  fi
  for r in $(seq "$ROUNDS"); do
    for policy in libgomp dlsys passive; do
      for t in 1 2 0; do
        s=$(train_seconds "$t" "$policy")
        RESULTS["$load $policy $t"]+="$s "
        printf '\r%s round %d/%d: %s waiting, threads %s: %.3f s   ' "$load" "$r" "$ROUNDS" \
          "$policy" "$t" "$s" >&2
      done
    done
  done
  echo >&2
done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $CORES cores"
echo
echo "| machine | OpenMP waiting | --threads | median s | range |"
echo "|---|---|---|---|---|"
for load in idle busy; do
  for policy in libgomp dlsys passive; do
    for t in 1 2 0; do
      /usr/bin/python3 - "$load" "$policy" "$t" ${RESULTS["$load $policy $t"]} <<'PY'
import statistics, sys
load, policy, t, *xs = sys.argv[1:]
xs = [float(x) for x in xs]
label = {"0": "default (all cores)"}.get(t, t)
machine = "idle" if load == "idle" else "1 busy process"
print(f"| {machine} | {policy} | {label} | {statistics.median(xs):.3f} | {min(xs):.3f}-{max(xs):.3f} |")
PY
    done
  done
done
