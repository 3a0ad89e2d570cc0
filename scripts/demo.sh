#!/usr/bin/env bash
# The demo: export a model from PyTorch with the project's script, inspect it, run it through
# `dlsys run` and compare with PyTorch's output, then measure it with `dlsys bench`.
set -euo pipefail
BUILD=${1:-build}
DLSYS="$BUILD/dlsys"
DIR="$BUILD/demo"
mkdir -p "$DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/4 export ResNet-18 (torchvision architecture, seeded random weights) to ONNX with PyTorch"
if [ ! -f "$DIR/resnet18.onnx" ]; then
  /usr/bin/python3 scripts/export_models.py "$DIR" --only resnet18
else
  echo "already exported: $DIR/resnet18.onnx"
fi

step "2/4 dlsys inspect"
"$DLSYS" inspect "$DIR/resnet18.onnx" | head -12

step "3/4 dlsys run, compared with PyTorch's own output"
"$DLSYS" run "$DIR/resnet18.onnx" --input input="$DIR/resnet18.input.npy" --output-dir "$DIR/out" --threads 2
/usr/bin/python3 - "$DIR" <<'PY'
import sys, numpy as np
d = sys.argv[1]
got, ref = np.load(f"{d}/out/logits.npy"), np.load(f"{d}/resnet18.output.npy")
rel = np.abs(got - ref).max() / np.abs(ref).max()
same = (got.argmax(1) == ref.argmax(1)).all()
print(f"dlsys vs PyTorch: max error {rel:.2e} of the output scale, top-1 {'identical' if same else 'DIFFERENT'}")
sys.exit(0 if rel <= 1e-4 and same else 1)
PY

step "4/4 dlsys bench (batch 8, 2 threads)"
"$DLSYS" bench "$DIR/resnet18.onnx" --batch 8 --threads 2 --seconds 3
printf '\nNext: README.md walks through the same steps on your own model.\n'
