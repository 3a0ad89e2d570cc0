#!/usr/bin/env bash
# Fails when a tracked C++ file is not clang-formatted (.clang-format); prints the files and the
# command that fixes them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(git ls-files -z '*.cpp' '*.h' | xargs -0 -n 64 clang-format --dry-run 2>&1 || true)
bad=$(grep -oE '^[^:]+\.(cpp|h):[0-9]+:[0-9]+: (warning|error)' <<<"$out" | cut -d: -f1 | sort -u || true)
if [[ -n "$bad" ]]; then
  echo "format: $(wc -l <<<"$bad") file(s) differ from clang-format's output:"
  sed 's/^/  /' <<<"$bad"
  echo "fix with: make format   (or clang-format -i FILE)"
  exit 1
fi
echo "format: every tracked .cpp/.h file is clang-formatted"
