#!/usr/bin/env bash
# bench/meta: tracking-server throughput and latency (see meta_bench.cpp). Usage:
#   bench/meta/run.sh [BUILD_DIR] [meta_bench options, e.g. --runs 100000 --clients 200]
set -euo pipefail
BUILD=${1:-build}
shift || true
cmake --build "$BUILD" --target meta_bench >/dev/null
exec "$BUILD/bench/meta_bench" "$@"
