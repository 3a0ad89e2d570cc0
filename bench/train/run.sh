#!/usr/bin/env bash
# bench/train: dlsys vs PyTorch (Debian's python3-torch, 2 threads), interleaved over ROUNDS
# rounds (round r runs every measurement below for dlsys, then at once for PyTorch, before round
# r+1 starts), on:
#   1. the digits MLP, time to 97% validation accuracy (examples/digits/mlp.yaml; MLPerf-style:
#      wall time and epochs until the target, evaluation included);
#   2. the digits MLP, training samples/s over 20 epochs (no early stop; evaluation after every
#      epoch included). dlsys's samples are counted from what it loaded: the CSV's rows minus the
#      validation rows it wrote to its run directory (val_y.npy), times the epochs;
#   3. training-step samples/s of ResNet-8 (3x32x32, batch 64, SGD momentum) and a 4-layer
#      transformer encoder (d=256, 4 heads, seq 128, batch 8, Adam): bench/train/train_step_bench
#      on bench/train/{resnet8,encoder}.yaml against bench/train/torch_models.py, the same
#      layers on the same kind of random batches (each run: the median of INNER rounds); fp32
#      and bf16 mixed precision (dlsys --precision bf16; PyTorch under
#      torch.autocast('cpu', bfloat16)); --no-bf16 skips bf16 (CPUs without AVX512-BF16/AMX).
# Prints markdown tables: per measurement the median over rounds of each side's figure, and the
# median of the per-round ratios with their range [min-max over rounds].
# Usage: bench/train/run.sh [BUILD_DIR] [ROUNDS] [--rounds N] [--inner N] [--steps N] [--warmup N]
#        [--no-bf16] [--only digits|models]
#        (ROUNDS default 3; --inner: rounds inside one train_step_bench/torch_models.py run,
#        default 3; --steps: timed steps per inner round for every model and side, default 20
#        for ResNet-8, 5 for dlsys's encoder and 2 for PyTorch's (its fp32 step takes seconds);
#        --warmup: untimed steps first, default 3)
set -euo pipefail
BUILD=build
ROUNDS=3
INNER=3
STEPS=""
WARMUP=3
BF16=1
ONLY=""
pos=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --inner) INNER=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --no-bf16) BF16=0; shift ;;
    --only) ONLY=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) if [ $pos = 0 ]; then BUILD=$1; else ROUNDS=$1; fi; pos=$((pos + 1)); shift ;;
  esac
done
[ "$ROUNDS" -ge 1 ] || { echo "ROUNDS must be at least 1" >&2; exit 2; }
DLSYS="$BUILD/dlsys"
CSV="$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/digits/digits.csv"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cmake --build "$BUILD" --target dlsys train_step_bench >/dev/null
sed -e 's/^  epochs: .*/  epochs: 20/' -e 's/^  target_accuracy: .*/  target_accuracy: 0/' \
  examples/digits/mlp.yaml >"$TMP/throughput.yaml"
sed -i "s|train: ../../../shared/data/digits/digits.csv|train: $CSV|" "$TMP/throughput.yaml"
RN_STEPS=${STEPS:-20}
ENC_STEPS=${STEPS:-5}
ENC_TORCH_STEPS=${STEPS:-2}
PRECS="fp32"
[ "$BF16" = 1 ] && PRECS="fp32 bf16"
: >"$TMP/all.jsonl"
# tag ROUND SIDE MEASURE: prefixes each JSON line read on stdin with the round, side and measure.
tag() { /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    if l.strip().startswith("{"):
        j = json.loads(l); j.update(round=int(sys.argv[1]), side=sys.argv[2], measure=sys.argv[3]); print(json.dumps(j))' "$@" >>"$TMP/all.jsonl"; }
for r in $(seq "$ROUNDS"); do
  if [ "$ONLY" != models ]; then
    echo "  round $r/$ROUNDS: digits MLP (dlsys, PyTorch)" >&2
    rm -rf "$TMP/tta" "$TMP/thr"
    "$DLSYS" train examples/digits/mlp.yaml --out "$TMP/tta" --threads 2 --json | tail -1 | tag "$r" dlsys tta
    /usr/bin/python3 bench/train/torch_digits.py "$CSV" | tag "$r" torch tta
    "$DLSYS" train "$TMP/throughput.yaml" --out "$TMP/thr" --threads 2 --json | tail -1 |
      /usr/bin/python3 -c 'import json,sys,numpy as np
j = json.loads(sys.stdin.read())
rows = len(np.loadtxt(sys.argv[1], delimiter=","))
val = len(np.load(sys.argv[2] + "/val_y.npy"))
j["train_rows"] = rows - val
j["samples_per_s"] = (rows - val) * j["epochs"] / j["seconds"]
print(json.dumps(j))' "$CSV" "$TMP/thr" | tag "$r" dlsys thr
    /usr/bin/python3 bench/train/torch_digits.py "$CSV" --epochs 20 --target 0 | tag "$r" torch thr
  fi
  if [ "$ONLY" != digits ]; then
    for p in $PRECS; do
      flag=""; [ "$p" = bf16 ] && flag="--bf16"
      echo "  round $r/$ROUNDS: ResNet-8 and encoder training steps, $p (dlsys, PyTorch)" >&2
      "$BUILD/bench/train_step_bench" bench/train/resnet8.yaml --precision $p --steps "$RN_STEPS" --rounds "$INNER" \
        --warmup "$WARMUP" |
        tag "$r" dlsys "resnet8 $p"
      /usr/bin/python3 bench/train/torch_models.py resnet8 $flag --steps "$RN_STEPS" --rounds "$INNER" \
        --warmup "$WARMUP" |
        tag "$r" torch "resnet8 $p"
      "$BUILD/bench/train_step_bench" bench/train/encoder.yaml --precision $p --vocab 1000 --steps "$ENC_STEPS" \
        --rounds "$INNER" --warmup "$WARMUP" | tag "$r" dlsys "encoder $p"
      # PyTorch's fp32 encoder step takes seconds here (generic BLAS): fewer steps by default.
      /usr/bin/python3 bench/train/torch_models.py encoder $flag --steps "$ENC_TORCH_STEPS" --rounds "$INNER" \
        --warmup "$WARMUP" |
        tag "$r" torch "encoder $p"
    done
  fi
done
/usr/bin/python3 - "$TMP/all.jsonl" "$ROUNDS" <<'PY'
import collections, json, statistics, sys
res = collections.defaultdict(dict)  # (measure, side) -> {round: json}
for l in open(sys.argv[1]):
    j = json.loads(l)
    res[(j["measure"], j["side"])][j["round"]] = j
rounds = int(sys.argv[2])
med = statistics.median
def vals(measure, side, f):
    return [f(res[(measure, side)][r]) for r in sorted(res[(measure, side)])]
def ratio(measure_a, side_a, measure_b, side_b, f, invert=False):
    a, b = vals(measure_a, side_a, f), vals(measure_b, side_b, f)
    rs = [(y / x if invert else x / y) for x, y in zip(a, b)]
    return f"{med(rs):.2f}x [{min(rs):.2f}-{max(rs):.2f}]" if len(rs) > 1 else f"{rs[0]:.2f}x (1 round)"
print(f"medians of {rounds} interleaved rounds; ratios: median of the per-round ratios [min-max over rounds]")
if ("tta", "dlsys") in res:
    sec, ep = (lambda j: j["seconds"]), (lambda j: j["epochs"])
    print()
    print("| measure | dlsys | PyTorch | dlsys/PyTorch |")
    print("|---|---|---|---|")
    print(f"| digits: time to 97% val. accuracy, median s | {med(vals('tta', 'dlsys', sec)):.3f} "
          f"| {med(vals('tta', 'torch', sec)):.3f} | {ratio('tta', 'dlsys', 'tta', 'torch', sec, invert=True)} faster |")
    print(f"| digits: epochs to 97% (median) | {med(vals('tta', 'dlsys', ep))} | {med(vals('tta', 'torch', ep))} | |")
    print(f"| digits: val. accuracy reached (median) | {med(vals('tta', 'dlsys', lambda j: j['metrics']['val_accuracy'])):.4f} "
          f"| {med(vals('tta', 'torch', lambda j: j['val_accuracy'])):.4f} | |")
    sps = lambda j: j["samples_per_s"]
    rows = sorted(set(vals("thr", "dlsys", lambda j: j["train_rows"])))
    print(f"| digits: training samples/s, 20 epochs, batch 64 ({'/'.join(map(str, rows))} training rows) "
          f"| {med(vals('thr', 'dlsys', sps)):,.0f} | {med(vals('thr', 'torch', sps)):,.0f} "
          f"| {ratio('thr', 'dlsys', 'thr', 'torch', sps)} |")
precs = [p for p in ("fp32", "bf16") if (f"resnet8 {p}", "dlsys") in res]
if precs:
    sps = lambda j: j["samples_per_s"]
    print()
    hdr = ["model (training step)", "batch"]
    for p in precs:
        hdr += [f"dlsys {p}", f"PyTorch {p}" + (" (autocast)" if p == "bf16" else ""), f"dlsys {p} / PyTorch {p}"]
    if "bf16" in precs:
        hdr += ["dlsys bf16 / PyTorch fp32"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for m in ("resnet8", "encoder"):
        first = next(iter(res[(f"{m} fp32", "dlsys")].values()))
        cells = [m, str(first["batch"])]
        for p in precs:
            k = f"{m} {p}"
            cells += [f"{med(vals(k, 'dlsys', sps)):,.1f}", f"{med(vals(k, 'torch', sps)):,.1f}",
                      ratio(k, "dlsys", k, "torch", sps)]
        if "bf16" in precs:
            cells += [ratio(f"{m} bf16", "dlsys", f"{m} fp32", "torch", sps)]
        print("| " + " | ".join(cells) + " |")
PY
