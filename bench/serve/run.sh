#!/usr/bin/env bash
# bench/serve: the serving floors of issue 19, dlsys against itself in process (a `dlsys server`
# on loopback with its own temporary data directory, loaded by `dlsys bench serve`, vs the engine
# in `dlsys bench`). Usage: bench/serve/run.sh [BUILD_DIR] [serve_bench.py options...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
if [ ! -f "$BUILD/models/resnet18.onnx" ] || [ ! -f "$BUILD/models/mlp.onnx" ]; then
  /usr/bin/python3 scripts/export_models.py "$BUILD/models"
fi
/usr/bin/python3 bench/serve/serve_bench.py --dlsys "$BUILD/dlsys" --models "$BUILD/models" "$@"
