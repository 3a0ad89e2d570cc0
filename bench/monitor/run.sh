#!/usr/bin/env bash
# bench/monitor: drift over COLUMNS x ROWS of served values, dlsys (monitor_bench, 2 threads)
# against the same computation in NumPy (drift_numpy.py, one process), interleaved per round;
# prints each round's JSON and the median time ratio with its range.
# Usage: bench/monitor/run.sh [BUILD_DIR] [--rounds 3] [--columns 1000] [--rows 1000000]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
cmake --build "$BUILD" --target monitor_bench >/dev/null
ROUNDS=3
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
lscpu | grep -m1 'Model name' || true
out=$(mktemp)
for r in $(seq "$ROUNDS"); do
  d=$("$BUILD/bench/monitor_bench" --rounds 1 "${ARGS[@]}")
  p=$(/usr/bin/python3 bench/monitor/drift_numpy.py --rounds 1 "${ARGS[@]}")
  echo "round $r dlsys: $d"
  echo "round $r numpy: $p"
  echo "$d" >>"$out.dlsys"
  echo "$p" >>"$out.numpy"
done
/usr/bin/python3 - "$out.dlsys" "$out.numpy" <<'PY'
import json, statistics, sys
d = [json.loads(l) for l in open(sys.argv[1])]
p = [json.loads(l) for l in open(sys.argv[2])]
ratios = [b["total_s"] / a["total_s"] for a, b in zip(d, p)]
med = lambda k, xs: statistics.median(x[k] for x in xs)
print(f"dlsys: median {med('total_s', d):.2f} s (reference {med('reference_s', d):.2f}, sketches "
      f"{med('sketch_s', d):.2f}, scores {med('score_s', d):.3f}), peak RSS {max(x['peak_rss_mb'] for x in d):.0f} MB, "
      f"drifted {d[0]['drifted']}, misjudged {d[0]['misjudged']}")
print(f"numpy: median {med('total_s', p):.2f} s, peak RSS {max(x['peak_rss_mb'] for x in p):.0f} MB, "
      f"drifted {p[0]['drifted']}, misjudged {p[0]['misjudged']}")
print(f"numpy time / dlsys time: median {statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] over {len(ratios)} rounds")
PY
rm -f "$out" "$out.dlsys" "$out.numpy"
