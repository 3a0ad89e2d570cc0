#!/usr/bin/env bash
# bench/data: dataset ingest, loader and image-folder push (data_bench.cpp), the NumPy/PyTorch
# peers (torch_loader.py), and the data wait of training the digits MLP from the store.
# Usage: bench/data/run.sh [BUILD_DIR] [data_bench options, e.g. --csv-mb 220 --files 100000]
set -euo pipefail
BUILD=${1:-build}
shift || true
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cmake --build "$BUILD" --target data_bench dlsys >/dev/null
echo "# dlsys"
"$BUILD/bench/data_bench" --dlsys "$BUILD/dlsys" "$@"
echo "# peers (NumPy loadtxt on a 50 MiB CSV of the same shape; PyTorch DataLoader on it)"
/usr/bin/python3 "$HERE/torch_loader.py" 50
echo "# training the digits MLP from the dataset store"
HOME_DIR=$(mktemp -d)
SHARED=${DLSYS_SHARED_DIR:-$ROOT/../shared}
"$BUILD/dlsys" data push "$SHARED/data/digits/digits.csv" --name digits --split 0.8,0.2 \
  --data-dir "$HOME_DIR" --json
"$BUILD/dlsys" train "$ROOT/examples/digits/mlp-dataset.yaml" --data-dir "$HOME_DIR" \
  --out "$HOME_DIR/run" --json | tail -1
rm -rf "$HOME_DIR"
