#!/usr/bin/env bash
# bench/search: ASHA against a full grid on the digits MLP (issue 22), on a `dlsys server` on
# loopback with its own temporary data directory. Usage: bench/search/run.sh [BUILD_DIR]
# [search_bench.py options...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
OMP_WAIT_POLICY=passive /usr/bin/python3 bench/search/search_bench.py --dlsys "$BUILD/dlsys" "$@"
