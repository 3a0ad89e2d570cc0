#!/usr/bin/env bash
# bench/jobs: the training service's figures (issue 22) on a `dlsys server` on loopback with its
# own temporary data directory. Usage: bench/jobs/run.sh [BUILD_DIR] [jobs_bench.py options...]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
shift || true
OMP_WAIT_POLICY=passive /usr/bin/python3 bench/jobs/jobs_bench.py --dlsys "$BUILD/dlsys" "$@"
