#!/usr/bin/python3
"""Runs dlsys, ONNX Runtime and PyTorch side by side on the same models, inputs and thread count,
and prints a table with ratios (markdown with --markdown).

Usage: bench/engine/compare.py --dlsys build/dlsys --models build/models [--threads 2] [--seconds 3]
       [--only mlp resnet18 ...] [--markdown]
Runs one runtime at a time (never concurrently); quote medians and ratios, the machine is shared.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# (label, onnx stem, torch model name, batches, input maker)
CASES = [
    ("MLP 64-256-128-10", "mlp", "mlp", [1, 32], lambda b, r: r.standard_normal((b, 64), dtype=np.float32)),
    ("ResNet-18 224x224", "resnet18", "resnet18", [1, 8], lambda b, r: r.standard_normal((b, 3, 224, 224), dtype=np.float32)),
    ("MobileNetV2 224x224", "mobilenetv2", "mobilenetv2", [1, 32], lambda b, r: r.standard_normal((b, 3, 224, 224), dtype=np.float32)),
    ("Encoder 4L d256 seq128", "encoder_opset17", "encoder", [1, 8], lambda b, r: r.integers(0, 1000, (b, 128), dtype=np.int64)),
]


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark command failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for label, stem, torch_name, batches, make in CASES:
        if a.only and stem not in a.only and torch_name not in a.only:
            continue
        model = os.path.join(a.models, stem + ".onnx")
        for b in batches:
            inp = os.path.join(a.models, f"bench_{stem}_b{b}.npy")
            np.save(inp, make(b, rng))
            t = str(a.threads)
            s = str(a.seconds)
            print(f"  {label} batch {b}: dlsys", file=sys.stderr, flush=True)
            d = run_json([a.dlsys, "bench", model, "--input", f"input={inp}", "--threads", t, "--seconds", s, "--json"])
            print(f"  {label} batch {b}: onnxruntime", file=sys.stderr, flush=True)
            o = run_json(["node", os.path.join(HERE, "ort_bench.mjs"), model, "--input", f"input={inp}",
                          "--threads", t, "--seconds", s])
            print(f"  {label} batch {b}: pytorch", file=sys.stderr, flush=True)
            p = run_json(["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), torch_name, "--input", inp,
                          "--threads", t, "--seconds", s])
            rows.append((label, b, d, o, p))
    hdr = ["model", "batch", "dlsys median ms", "ORT median ms", "PyTorch median ms", "dlsys items/s",
           "ORT items/s", "PyTorch items/s", "dlsys/ORT thr.", "dlsys/PyTorch thr.", "ORT/dlsys b-latency"]
    lines = []
    for label, b, d, o, p in rows:
        lines.append([label, str(b), f"{d['median_ms']:.3f}", f"{o['median_ms']:.3f}", f"{p['median_ms']:.3f}",
                      f"{d['items_per_s']:.1f}", f"{o['items_per_s']:.1f}", f"{p['items_per_s']:.1f}",
                      f"{d['items_per_s'] / o['items_per_s']:.2f}x", f"{d['items_per_s'] / p['items_per_s']:.2f}x",
                      f"{o['median_ms'] / d['median_ms']:.2f}x"])
    if a.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for l in lines:
            print("| " + " | ".join(l) + " |")
    else:
        w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(hdr)] if lines else [len(h) for h in hdr]
        print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
        for l in lines:
            print("  ".join(c.ljust(w[i]) for i, c in enumerate(l)))
    print("\nratios > 1x mean dlsys is faster (throughput) / has lower median latency.")


if __name__ == "__main__":
    main()
