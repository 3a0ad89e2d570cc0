#!/usr/bin/env bash
# bench/flow: the pipeline runner's figures (issue 23) on a `dlsys server` on loopback with its
# own temporary data directory. Usage: bench/flow/run.sh [BUILD_DIR] [flow_bench.py options...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
OMP_WAIT_POLICY=passive /usr/bin/python3 bench/flow/flow_bench.py --dlsys "$BUILD/dlsys" "$@"
