#!/usr/bin/env bash
# bench/train: dlsys vs PyTorch (Debian's python3-torch, 2 threads) on the digits MLP:
#   1. time to 97% validation accuracy (examples/digits/mlp.yaml; MLPerf-style: wall time and
#      epochs until the target, evaluation included);
#   2. training samples/s over 20 epochs (no early stop; evaluation after every epoch included);
#   3. training-step samples/s of ResNet-8 (3x32x32, batch 64, SGD momentum) and a 4-layer
#      transformer encoder (d=256, 4 heads, seq 128, batch 8, Adam): bench/train/train_step_bench
#      on bench/train/{resnet8,encoder}.yaml against bench/train/torch_models.py, the same
#      layers on the same kind of random batches (medians over 5 rounds each); in fp32 and in bf16
#      mixed precision (dlsys --precision bf16; PyTorch under torch.autocast('cpu', bfloat16)).
# Usage: bench/train/run.sh [BUILD_DIR] [REPEATS]   (medians over REPEATS runs, default 5)
set -euo pipefail
BUILD=${1:-build}
REPEATS=${2:-5}
DLSYS="$BUILD/dlsys"
CSV="$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/digits/digits.csv"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
sed -e 's/^  epochs: .*/  epochs: 20/' -e 's/^  target_accuracy: .*/  target_accuracy: 0/' \
  examples/digits/mlp.yaml >"$TMP/throughput.yaml"
sed -i "s|train: ../../../shared/data/digits/digits.csv|train: $CSV|" "$TMP/throughput.yaml"
for i in $(seq "$REPEATS"); do
  "$DLSYS" train examples/digits/mlp.yaml --out "$TMP/tta" --threads 2 --json | tail -1 >>"$TMP/dlsys_tta.jsonl"
  "$DLSYS" train "$TMP/throughput.yaml" --out "$TMP/thr" --threads 2 --json | tail -1 >>"$TMP/dlsys_thr.jsonl"
  /usr/bin/python3 bench/train/torch_digits.py "$CSV" >>"$TMP/torch_tta.jsonl"
  /usr/bin/python3 bench/train/torch_digits.py "$CSV" --epochs 20 --target 0 >>"$TMP/torch_thr.jsonl"
done
/usr/bin/python3 - "$TMP" <<'PY'
import json, statistics, sys
d = sys.argv[1]
load = lambda f: [json.loads(l) for l in open(f"{d}/{f}")]
dt, dh, tt, th = load("dlsys_tta.jsonl"), load("dlsys_thr.jsonl"), load("torch_tta.jsonl"), load("torch_thr.jsonl")
med = lambda xs: statistics.median(xs)
# dlsys samples/s: 1438 training rows x epochs / seconds (evaluation included, as for PyTorch).
d_sps = med([1438 * r["epochs"] / r["seconds"] for r in dh])
t_sps = med([r["samples_per_s"] for r in th])
print("| measure | dlsys | PyTorch | dlsys/PyTorch |")
print("|---|---|---|---|")
print(f"| time to 97% val. accuracy, median s | {med([r['seconds'] for r in dt]):.3f} | {med([r['seconds'] for r in tt]):.3f} | {med([r['seconds'] for r in tt]) / med([r['seconds'] for r in dt]):.2f}x faster |")
print(f"| epochs to 97% (median) | {med([r['epochs'] for r in dt])} | {med([r['epochs'] for r in tt])} | |")
print(f"| val. accuracy reached (median) | {med([r['metrics']['val_accuracy'] for r in dt]):.4f} | {med([r['val_accuracy'] for r in tt]):.4f} | |")
print(f"| training samples/s, 20 epochs, batch 64 | {d_sps:.0f} | {t_sps:.0f} | {d_sps / t_sps:.2f}x |")
PY

# 3. Models: training steps only (no data loading, no evaluation), 2 threads each.
cmake --build "$BUILD" --target train_step_bench >/dev/null
: >"$TMP/m.jsonl"
for p in fp32 bf16; do
  flag=""; [ "$p" = bf16 ] && flag="--bf16"
  "$BUILD/bench/train_step_bench" bench/train/resnet8.yaml --precision $p --steps 20 --rounds 5 >>"$TMP/m.jsonl"
  /usr/bin/python3 bench/train/torch_models.py resnet8 $flag --steps 20 --rounds 5 | sed 's/"model"/"peer": "torch", "model"/' >>"$TMP/m.jsonl"
  "$BUILD/bench/train_step_bench" bench/train/encoder.yaml --precision $p --vocab 1000 --steps 5 --rounds 5 >>"$TMP/m.jsonl"
  /usr/bin/python3 bench/train/torch_models.py encoder $flag --steps 5 --rounds 5 | sed 's/"model"/"peer": "torch", "model"/' >>"$TMP/m.jsonl"
done
/usr/bin/python3 - "$TMP/m.jsonl" <<'PY'
import json, sys
r = {}
for l in open(sys.argv[1]):
    j = json.loads(l)
    r[(j.get("peer", "dlsys"), j["model"], j["precision"])] = j
print()
print("| model (training step) | batch | dlsys fp32 | dlsys bf16 | PyTorch fp32 | PyTorch bf16 (autocast) "
      "| dlsys fp32 / PyTorch fp32 | dlsys bf16 / PyTorch fp32 | dlsys bf16 / PyTorch bf16 |")
print("|---|---|---|---|---|---|---|---|---|")
for m in ("resnet8", "encoder"):
    s = {(p, q): r[(p, m, q)]["samples_per_s"] for p in ("dlsys", "torch") for q in ("fp32", "bf16")}
    print(f"| {m} | {r[('dlsys', m, 'fp32')]['batch']} | {s['dlsys', 'fp32']:.1f} | {s['dlsys', 'bf16']:.1f} "
          f"| {s['torch', 'fp32']:.1f} | {s['torch', 'bf16']:.1f} | {s['dlsys', 'fp32'] / s['torch', 'fp32']:.2f}x "
          f"| {s['dlsys', 'bf16'] / s['torch', 'fp32']:.2f}x | {s['dlsys', 'bf16'] / s['torch', 'bf16']:.2f}x |")
PY
