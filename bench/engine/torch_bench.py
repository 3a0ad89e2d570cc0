#!/usr/bin/python3
"""PyTorch peer: torch_bench.py MODEL_NAME --input FILE.npy --threads N --seconds S

Runs the reference nn.Module (scripts/reference_models.py, eager mode, inference_mode) and prints
one JSON object like `dlsys bench --json`.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import reference_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, _, _ = reference_models.build(a.model)
    x = torch.from_numpy(np.load(a.input))
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        first = (time.perf_counter() - t0) * 1e3
        warm_end = time.perf_counter() + 0.3
        w = 0
        while w < 3 or time.perf_counter() < warm_end:
            model(x)
            w += 1
        lat = []
        start = time.perf_counter()
        while len(lat) < 5 or time.perf_counter() - start < a.seconds:
            r0 = time.perf_counter()
            model(x)
            lat.append((time.perf_counter() - r0) * 1e3)
        total = time.perf_counter() - start
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, round(q * (len(lat) - 1)))]  # noqa: E731
    print(json.dumps({"runtime": "pytorch", "version": torch.__version__, "model": a.model, "batch": x.shape[0],
                      "threads": a.threads, "median_ms": statistics.median(lat), "p90_ms": pct(0.9),
                      "items_per_s": x.shape[0] * len(lat) / total, "runs": len(lat), "first_run_ms": first}))


if __name__ == "__main__":
    main()
