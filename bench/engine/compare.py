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


def print_table(hdr, lines, markdown):
    """Prints rows of strings as a markdown table, or as aligned columns."""
    if markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for l in lines:
            print("| " + " | ".join(l) + " |")
        return
    w = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(hdr)] if lines else [len(h) for h in hdr]
    print("  ".join(h.ljust(w[i]) for i, h in enumerate(hdr)))
    for l in lines:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(l)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-reduced", action="store_true", help="skip the bf16/int8 rows")
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
    print_table(hdr, lines, a.markdown)
    print("\nratios > 1x mean dlsys is faster (throughput) / has lower median latency.")
    if not a.no_reduced:
        reduced_precision(a, rng)


# Reduced precision at the larger batch, against ONNX Runtime fp32 on the float model (the floor's
# reference). int8 models are written by `dlsys quantize` (static: calibrated on 32 seeded normal
# inputs; dynamic: weights only); ONNX Runtime also runs the same QDQ file.
REDUCED = [
    ("ResNet-18 bf16", "resnet18", 8, "bf16", None),
    ("ResNet-18 int8 static QDQ", "resnet18", 8, "int8", ["--method", "minmax"]),
    ("Encoder bf16", "encoder_opset17", 8, "bf16", None),
    ("Encoder int8 static QDQ", "encoder_opset17", 8, "int8", ["--method", "minmax"]),
    ("Encoder int8 dynamic", "encoder_opset17", 8, "int8", ["--dynamic"]),
]


def reduced_precision(a, rng):
    rows = []
    for label, stem, b, prec, qargs in REDUCED:
        if a.only and stem not in a.only and stem.split("_")[0] not in a.only:
            continue
        case = next(c for c in CASES if c[1] == stem)
        model = os.path.join(a.models, stem + ".onnx")
        inp = os.path.join(a.models, f"bench_{stem}_b{b}.npy")
        np.save(inp, case[4](b, rng))
        t, s = str(a.threads), str(a.seconds)
        dl_model, extra, acc, ort_same = model, ["--precision", "bf16"], "", None
        if prec == "int8":
            calib = os.path.join(a.models, f"calib_{stem}.npy")
            evaln = os.path.join(a.models, f"eval_{stem}.npy")
            np.save(calib, case[4](32, np.random.default_rng(1)))
            np.save(evaln, case[4](64, np.random.default_rng(2)))
            dl_model = os.path.join(a.models, f"{stem}.{'dyn' if '--dynamic' in qargs else 'int8'}.onnx")
            print(f"  {label}: dlsys quantize", file=sys.stderr, flush=True)
            q = run_json([a.dlsys, "quantize", model, "--calibrate", calib, "--eval", evaln, "-o", dl_model,
                          "--threads", t, "--json"] + qargs)
            acc = f"top-1 {100 * q['accuracy']['top1_agreement']:.1f}%, max rel err {q['accuracy']['max_rel_error']:.3g}"
            extra = []
        print(f"  {label} batch {b}: dlsys", file=sys.stderr, flush=True)
        d = run_json([a.dlsys, "bench", dl_model, "--input", f"input={inp}", "--threads", t, "--seconds", s,
                      "--json"] + extra)
        print(f"  {label} batch {b}: onnxruntime fp32", file=sys.stderr, flush=True)
        o = run_json(["node", os.path.join(HERE, "ort_bench.mjs"), model, "--input", f"input={inp}",
                      "--threads", t, "--seconds", s])
        if prec == "int8":
            print(f"  {label} batch {b}: onnxruntime on the QDQ model", file=sys.stderr, flush=True)
            ort_same = run_json(["node", os.path.join(HERE, "ort_bench.mjs"), dl_model, "--input", f"input={inp}",
                                 "--threads", t, "--seconds", s])
        rows.append([label, str(b), f"{d['median_ms']:.3f}", f"{o['median_ms']:.3f}",
                     f"{ort_same['median_ms']:.3f}" if ort_same else "-",
                     f"{d['items_per_s'] / o['items_per_s']:.2f}x",
                     f"{d['items_per_s'] / ort_same['items_per_s']:.2f}x" if ort_same else "-", acc or "see tests"])
    hdr = ["model", "batch", "dlsys median ms", "ORT fp32 median ms", "ORT same-file median ms",
           "dlsys/ORT-fp32 thr.", "dlsys/ORT same-file thr.", "accuracy vs fp32"]
    print()
    print_table(hdr, rows, a.markdown)


if __name__ == "__main__":
    main()
