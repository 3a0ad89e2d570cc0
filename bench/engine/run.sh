#!/usr/bin/env bash
# bench/engine: dlsys vs ONNX Runtime (onnxruntime-node, CPU) vs PyTorch on the same models,
# inputs and thread count. Usage: bench/engine/run.sh [BUILD_DIR] [compare.py options...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
HERE=bench/engine
if [ ! -d "$HERE/node_modules/onnxruntime-node" ]; then
  echo "installing onnxruntime-node (npm, --ignore-scripts: CPU binary only, no downloads at install)"
  (cd "$HERE" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
for stem in encoder_opset17 lstm_bidirectional unet_resize greedy_decoder detector_nms; do
  if [ ! -f "$BUILD/models/$stem.onnx" ]; then
    /usr/bin/python3 scripts/export_models.py "$BUILD/models"
    break
  fi
done
if [ ! -f "$BUILD/models/tf_cnn_nhwc.onnx" ]; then
  /usr/bin/python3 scripts/tf_style_models.py "$BUILD/models"
fi
if [ ! -f "$BUILD/models/qop_resnet18.onnx" ]; then
  /usr/bin/python3 scripts/quantized_models.py "$BUILD/models" --only qop_resnet18
fi
/usr/bin/python3 "$HERE/compare.py" --dlsys "$BUILD/dlsys" --models "$BUILD/models" --threads 2 "$@"
