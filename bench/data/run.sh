#!/usr/bin/env bash
# bench/data: dataset ingest, loader and image-folder push (data_bench.cpp), the NumPy/PyTorch
# peers (torch_loader.py), and the data wait of training the digits MLP from the store,
# interleaved over ROUNDS rounds (round r: data_bench, then the peers, then the digits training;
# then round r+1). Prints a markdown table: per measurement the median over rounds with its
# [min-max] range, and the dlsys/peer ratios as the median of the per-round ratios [min-max].
# The cold loader's epoch follows a page-cache drop of the shard files (fsync +
# posix_fadvise(DONTNEED); with --drop-caches, as root, also /proc/sys/vm/drop_caches): the table
# says which ran and how many MB of the shards were still resident after it (mincore).
# Usage: bench/data/run.sh [BUILD_DIR] [--rounds 3] [--peer-mb 50] [data_bench options, e.g.
#        --csv-mb 220 --files 100000 --drop-caches]
set -euo pipefail
BUILD=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then BUILD=$1; shift; fi
ROUNDS=3
PEER_MB=50
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --peer-mb) PEER_MB=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[ "$ROUNDS" -ge 1 ] || { echo "--rounds must be at least 1" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED=${DLSYS_SHARED_DIR:-$ROOT/../shared}
cmake --build "$BUILD" --target data_bench dlsys >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: >"$TMP/all.jsonl"
tag() { /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    if l.strip().startswith("{"):
        j = json.loads(l); j.update(round=int(sys.argv[1])); print(json.dumps(j))' "$@" >>"$TMP/all.jsonl"; }
for r in $(seq "$ROUNDS"); do
  echo "  round $r/$ROUNDS: data_bench ${ARGS[*]}" >&2
  "$BUILD/bench/data_bench" --dlsys "$BUILD/dlsys" --json "${ARGS[@]}" | tag "$r"
  echo "  round $r/$ROUNDS: peers (NumPy loadtxt, PyTorch DataLoader) on a $PEER_MB MiB CSV" >&2
  /usr/bin/python3 "$HERE/torch_loader.py" "$PEER_MB" | tag "$r"
  echo "  round $r/$ROUNDS: digits MLP trained from the dataset store" >&2
  HOME_DIR="$TMP/home$r"
  mkdir -p "$HOME_DIR"
  "$BUILD/dlsys" data push "$SHARED/data/digits/digits.csv" --name digits --split 0.8,0.2 \
    --data-dir "$HOME_DIR" --json >/dev/null
  "$BUILD/dlsys" train "$ROOT/examples/digits/mlp-dataset.yaml" --data-dir "$HOME_DIR" \
    --out "$HOME_DIR/run" --json | tail -1 |
    /usr/bin/python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); j["bench"]="digits_from_store"; print(json.dumps(j))' |
    tag "$r"
  rm -rf "$HOME_DIR"
done
/usr/bin/python3 - "$TMP/all.jsonl" "$ROUNDS" <<'PY'
import collections, json, statistics, sys
res = collections.defaultdict(dict)  # bench -> {round: json}
for l in open(sys.argv[1]):
    j = json.loads(l)
    res[j["bench"]][j["round"]] = j
med = statistics.median
def v(bench, key):
    f = key if callable(key) else (lambda j: j[key])
    return [f(res[bench][r]) for r in sorted(res[bench])]
def cell(xs, fmt, unit=""):
    if len(xs) == 1:
        return f"{xs[0]:{fmt}}{unit} (1 round)"
    return f"**{med(xs):{fmt}}{unit}** [{min(xs):{fmt}}–{max(xs):{fmt}}]"
def ratio(a, b):
    rs = [x / y for x, y in zip(a, b)]
    return f"{med(rs):.2f}x [{min(rs):.2f}–{max(rs):.2f}]" if len(rs) > 1 else f"{rs[0]:.2f}x (1 round)"
print(f"medians of {sys.argv[2]} interleaved rounds [min–max over rounds]; ratios: median of the per-round ratios")
print()
ing, npl = res["csv_ingest"], res["numpy_loadtxt"]
first = next(iter(ing.values()))
print(f"input: {first['input_mb']:.0f} MB CSV, {first['rows']:,} rows, {first['shards']} shards "
      f"({first['stored_mb']:.0f} MB stored); peer CSV {next(iter(npl.values()))['input_mb']:.0f} MB, "
      f"{next(iter(npl.values()))['rows']:,} rows")
print()
print("| measurement | dlsys | peer | dlsys/peer |")
print("|---|---|---|---|")
print(f"| CSV ingest, MB/s of input | {cell(v('csv_ingest', 'mb_per_s'), '.0f')} "
      f"| NumPy `loadtxt`: {cell(v('numpy_loadtxt', 'mb_per_s'), '.0f')} "
      f"| {ratio(v('csv_ingest', 'mb_per_s'), v('numpy_loadtxt', 'mb_per_s'))} |")
c, t = res["loader_cached"], res["torch_dataloader"]
print(f"| loader from the decoded cache, rows/s ({next(iter(c.values()))['rows']:,} rows per epoch) "
      f"| {cell(v('loader_cached', 'rows_per_s'), ',.0f')} ({cell(v('loader_cached', 'gb_per_s'), '.2f', ' GB/s')}) "
      f"| PyTorch `DataLoader`: {cell(v('torch_dataloader', 'rows_per_s'), ',.0f')} "
      f"| {ratio(v('loader_cached', 'rows_per_s'), v('torch_dataloader', 'rows_per_s'))} |")
cold = res["loader_cold"]
methods = sorted(set(v("loader_cold", "page_cache_drop")))
print(f"| loader, cold (page cache dropped by {'/'.join(methods)}; shards resident before "
      f"{med(v('loader_cold', 'resident_before_mb')):.0f} MB, after the drop "
      f"{max(v('loader_cold', 'resident_after_drop_mb')):.1f} MB at most), MB/s of features "
      f"| {cell(v('loader_cold', 'mb_per_s'), '.0f')} ({cell(v('loader_cold', 'rows_per_s'), ',.0f')} rows/s) | | |")
print(f"| loader, cache of one shard (every shard read each epoch), MB/s "
      f"| {cell(v('loader_one_shard_cache', 'mb_per_s'), '.0f')} | | |")
if "image_folder_push" in res:
    im = res["image_folder_push"]
    print(f"| push of {next(iter(im.values()))['files']:,} PNG files (16x16 gray), s "
          f"(ok in {sum(1 for j in im.values() if j['ok'])}/{len(im)} rounds) "
          f"| {cell(v('image_folder_push', 'seconds'), '.2f')}, peak RSS "
          f"{cell(v('image_folder_push', 'peak_rss_mb'), '.0f', ' MB')} | | |")
if "digits_from_store" in res:
    print(f"| digits MLP from `digits@v1:train`: share of training time waiting for the loader "
          f"| {cell([100 * x for x in v('digits_from_store', lambda j: j['data']['wait_fraction'])], '.1f', '%')} | | |")
PY
