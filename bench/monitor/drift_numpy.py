"""The NumPy peer of monitor_bench.cpp: the same values (splitmix64 of row * columns + column),
the same reference (quantile edges of its rows, equal-frequency, 20 bins plus out-of-range), PSI
over the bins, streamed in chunks of rows so memory stays bounded. This is how Evidently computes
PSI (numpy histograms per column), without its reports. Prints one JSON line per round."""
import argparse
import json
import resource
import time

import numpy as np

M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)
G = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x):
    z = x + G
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


def values(r0, n, columns, served):
    rows = np.arange(r0, r0 + n, dtype=np.uint64)
    if not served:
        rows = rows + np.uint64(1 << 40)
    idx = rows[:, None] * np.uint64(columns) + np.arange(columns, dtype=np.uint64)[None, :]
    u = (splitmix64(idx) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    cols = np.arange(columns)
    v = u * (1 + cols % 5)
    if served:
        v = v + np.where(cols % 10 == 0, 0.3, 0.0)
    return v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--columns", type=int, default=1000)
    p.add_argument("--rows", type=int, default=1000000)
    p.add_argument("--reference-rows", type=int, default=100000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunk", type=int, default=8192)
    a = p.parse_args()
    for rnd in range(1, a.rounds + 1):
        t0 = time.perf_counter()
        ref = np.concatenate([values(r, min(a.chunk, a.reference_rows - r), a.columns, False)
                              for r in range(0, a.reference_rows, a.chunk)])
        edges = np.quantile(ref, np.linspace(0, 1, 21), axis=0)  # [21, columns]
        ref_counts = []
        for c in range(a.columns):
            e = np.unique(edges[:, c])
            ref_counts.append((e, np.bincount(np.searchsorted(e, ref[:, c], side="left"),
                                              minlength=len(e) + 1)))
        del ref
        reference_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        counts = [np.zeros(len(e) + 1, dtype=np.int64) for e, _ in ref_counts]
        for r in range(0, a.rows, a.chunk):
            v = values(r, min(a.chunk, a.rows - r), a.columns, True)
            for c in range(a.columns):
                e = ref_counts[c][0]
                counts[c] += np.bincount(np.searchsorted(e, v[:, c], side="left"),
                                         minlength=len(e) + 1)
        sketch_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        drifted = wrong = 0
        for c in range(a.columns):
            rc = ref_counts[c][1].astype(np.float64)
            cc = counts[c].astype(np.float64)
            pr = (rc + 0.5) / (rc.sum() + 0.5 * len(rc))
            pc = (cc + 0.5) / (cc.sum() + 0.5 * len(cc))
            psi = float(np.sum((pc - pr) * np.log(pc / pr)))
            d = psi >= 0.2
            drifted += d
            wrong += d != (c % 10 == 0)
        score_s = time.perf_counter() - t2
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(json.dumps({"round": rnd, "columns": a.columns, "rows": a.rows,
                          "reference_s": reference_s, "sketch_s": sketch_s, "score_s": score_s,
                          "total_s": reference_s + sketch_s + score_s, "drifted": drifted,
                          "misjudged": wrong, "peak_rss_mb": peak}), flush=True)


main()
