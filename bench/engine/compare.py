#!/usr/bin/python3
"""Runs dlsys, ONNX Runtime and PyTorch on the same models, inputs and thread count, interleaved
over --rounds rounds, and prints per model and batch the median of the rounds and the ratios'
median with their range over rounds (markdown with --markdown).

Usage: bench/engine/compare.py --dlsys build/dlsys --models build/models [--threads 2] [--seconds 3]
       [--rounds 3] [--only mlp resnet18 ...] [--batches 1 8] [--markdown] [--no-reduced] [--no-binding]
       [--busy N]
--busy N starts N CPU-bound processes (a Python busy loop each) before the first round and stops
them after the last: every runtime is measured beside the same co-located load.
Round r runs, for each model and batch in turn, dlsys, then ONNX Runtime, then PyTorch (one
runtime at a time, never concurrently), so that a slow spell of the shared machine hits every
runtime of a case alike. A headline ratio is the median of the per-round ratios, never one run;
"[min-max]" is its range over the rounds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# (label, onnx stem, torch model name or None (no PyTorch peer), batches, input maker). The tf2onnx-
# style CNNs come from scripts/tf_style_models.py (run.sh writes them): the same network with NHWC
# input and a Transpose pair around every Conv, and in NCHW; the integer-quantized ResNet from
# scripts/quantized_models.py.
CASES = [
    ("MLP 64-256-128-10", "mlp", "mlp", [1, 32], lambda b, r: r.standard_normal((b, 64), dtype=np.float32)),
    ("ResNet-18 224x224", "resnet18", "resnet18", [1, 8], lambda b, r: r.standard_normal((b, 3, 224, 224), dtype=np.float32)),
    ("MobileNetV2 224x224", "mobilenetv2", "mobilenetv2", [1, 32], lambda b, r: r.standard_normal((b, 3, 224, 224), dtype=np.float32)),
    ("Encoder 4L d256 seq128", "encoder_opset17", "encoder", [1, 8], lambda b, r: r.integers(0, 1000, (b, 128), dtype=np.int64)),
    ("LSTM 2L bidir seq12", "lstm_bidirectional", "lstm", [1, 32], lambda b, r: r.standard_normal((b, 12, 16), dtype=np.float32)),
    ("GRU 2L bidir seq12", "gru_bidirectional", "gru", [1, 32], lambda b, r: r.standard_normal((b, 12, 16), dtype=np.float32)),
    ("U-Net Resize 32x32", "unet_resize", "unet", [1, 8], lambda b, r: r.standard_normal((b, 3, 32, 32), dtype=np.float32)),
    ("Scripted If+Loop", "scripted_control", "scripted_control", [1, 32], lambda b, r: r.standard_normal((b, 6, 8), dtype=np.float32)),
    ("Greedy decoder (Loop, cat)", "greedy_decoder", "greedy_decoder", [1, 32], lambda b, r: r.standard_normal((b, 8), dtype=np.float32)),
    # One image per call: torchvision's nms is per image, so the export's batch is 1.
    ("Detector head + NMS", "detector_nms", "detector_nms", [1], lambda b, r: r.standard_normal((1, 3, 32, 32), dtype=np.float32)),
    ("tf2onnx CNN NHWC 32x32", "tf_cnn_nhwc", None, [1, 32], lambda b, r: r.standard_normal((b, 32, 32, 3), dtype=np.float32)),
    ("tf2onnx CNN NCHW 32x32", "tf_cnn_nchw", None, [1, 32], lambda b, r: r.standard_normal((b, 3, 32, 32), dtype=np.float32)),
    # ResNet-18's shapes quantized as ONNX Runtime's quantizers write them (QLinearConv,
    # ConvInteger; scripts/quantized_models.py): both runtimes run the same integer model.
    ("ResNet-18 QLinearConv/ConvInteger", "qop_resnet18", None, [1, 8], lambda b, r: r.standard_normal((b, 3, 224, 224), dtype=np.float32)),
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


def med(xs):
    return statistics.median(xs)


def ratio_cell(ratios):
    """'1.23x [1.10-1.31]': the median of the per-round ratios and their range."""
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}x (1 round)"
    return f"{med(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


class Runner:
    def __init__(self, a):
        self.a = a
        self.t, self.s = str(a.threads), str(a.seconds)

    def dlsys(self, model, inp, extra=()):
        return run_json([self.a.dlsys, "bench", model, "--input", f"input={inp}", "--threads", self.t,
                         "--seconds", self.s, "--json", *extra])

    def ort(self, model, inp):
        return run_json(["node", os.path.join(HERE, "ort_bench.mjs"), model, "--input", f"input={inp}",
                         "--threads", self.t, "--seconds", self.s])

    def torch(self, name, inp):
        return run_json(["/usr/bin/python3", os.path.join(HERE, "torch_bench.py"), name, "--input", inp,
                         "--threads", self.t, "--seconds", self.s])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per runtime, case and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; at least 1)")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--batches", nargs="*", type=int, help="only these batch sizes of the fp32 cases")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-reduced", action="store_true", help="skip the bf16/int8 rows")
    ap.add_argument("--no-binding", action="store_true",
                    help="skip the Identity-model row (per-call overhead of each runtime's entry point)")
    ap.add_argument("--busy", type=int, default=0,
                    help="CPU-bound processes to run beside every measurement (co-located load)")
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(a.busy)]
    try:
        measure(a)
    finally:
        for p in busy:
            p.kill()
            p.wait()


def measure(a):
    if a.busy:
        log(f"  co-located load: {a.busy} busy process(es) running beside every measurement")
    rng = np.random.default_rng(0)
    run = Runner(a)
    jobs = []  # (label, stem, torch name, batch, model path, input path)
    for label, stem, torch_name, batches, make in CASES:
        if a.only and stem not in a.only and torch_name not in a.only:
            continue
        for b in batches:
            if a.batches and b not in a.batches:
                continue
            inp = os.path.join(a.models, f"bench_{stem}_b{b}.npy")
            np.save(inp, make(b, rng))
            jobs.append((label, stem, torch_name, b, os.path.join(a.models, stem + ".onnx"), inp))
    res = {(j[0], j[3]): {"dlsys": [], "ort": [], "torch": []} for j in jobs}
    for r in range(a.rounds):
        for label, stem, torch_name, b, model, inp in jobs:
            log(f"  round {r + 1}/{a.rounds}, {label} batch {b}: dlsys, onnxruntime" + (", pytorch" if torch_name else ""))
            res[(label, b)]["dlsys"].append(run.dlsys(model, inp))
            res[(label, b)]["ort"].append(run.ort(model, inp))
            if torch_name:
                res[(label, b)]["torch"].append(run.torch(torch_name, inp))
    hdr = ["model", "batch", "dlsys median ms", "ORT median ms", "PyTorch median ms", "dlsys items/s",
           "ORT items/s", "PyTorch items/s", "dlsys/ORT thr.", "dlsys/PyTorch thr.", "ORT/dlsys b-latency"]
    lines = []
    for (label, b), rr in res.items():
        d, o, p = rr["dlsys"], rr["ort"], rr["torch"]
        m = lambda xs, k: med([x[k] for x in xs])  # noqa: E731
        lines.append([label, str(b), f"{m(d, 'median_ms'):.3f}", f"{m(o, 'median_ms'):.3f}",
                      f"{m(p, 'median_ms'):.3f}" if p else "-", f"{m(d, 'items_per_s'):.1f}",
                      f"{m(o, 'items_per_s'):.1f}", f"{m(p, 'items_per_s'):.1f}" if p else "-",
                      ratio_cell([x["items_per_s"] / y["items_per_s"] for x, y in zip(d, o)]),
                      ratio_cell([x["items_per_s"] / y["items_per_s"] for x, y in zip(d, p)]) if p else "-",
                      ratio_cell([y["median_ms"] / x["median_ms"] for x, y in zip(d, o)])])
    print_table(hdr, lines, a.markdown)
    if a.busy:
        print(f"\nmeasured beside {a.busy} CPU-bound process(es) (--busy)")
    print(f"\nmedians of {a.rounds} interleaved rounds (ms and items/s: median over rounds of each run's figure); "
          "ratios: median of the per-round ratios [min-max over rounds]; > 1x means dlsys is faster "
          "(throughput) / has the lower median latency.")
    if not a.no_binding and (not a.only or "mlp" in a.only):
        binding_overhead(a, run)
    if not a.no_reduced:
        reduced_precision(a, rng, run)


def binding_overhead(a, run):
    """Per-call cost of each entry point on an Identity model (64 floats in, the same out): what
    ONNX Runtime's figure for the tiny MLP pays for onnxruntime-node (JS tensors, the N-API call,
    the promise), and what `dlsys bench` and PyTorch pay for a call that does nothing."""
    import onnx
    from onnx import TensorProto, helper
    path = os.path.join(a.models, "bench_identity.onnx")
    g = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "identity",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 64])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    inp = os.path.join(a.models, "bench_identity_b1.npy")
    np.save(inp, np.zeros((1, 64), dtype=np.float32))
    d, o = [], []
    for r in range(a.rounds):
        log(f"  round {r + 1}/{a.rounds}, Identity [1, 64]: dlsys, onnxruntime")
        d.append(run.dlsys(path, inp)["median_ms"])
        o.append(run.ort(path, inp)["median_ms"])
    print()
    print_table(["Identity model, batch 1 (64 floats)", "dlsys median per call", "ORT (onnxruntime-node) median per call"],
                [["median of rounds [min-max]", f"{med(d) * 1e3:.1f} us [{min(d) * 1e3:.1f}-{max(d) * 1e3:.1f}]",
                  f"{med(o) * 1e3:.1f} us [{min(o) * 1e3:.1f}-{max(o) * 1e3:.1f}]"]], a.markdown)


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


def bf16_supported(a):
    """Whether dlsys runs bf16 here (oneDNN 2.6 has bf16 kernels only with AVX512-BF16 or AMX)."""
    model = os.path.join(a.models, "mlp.onnx")
    out = subprocess.run([a.dlsys, "bench", model, "--precision", "bf16", "--seconds", "0.05",
                          "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        log("  bf16 rows skipped: " + (out.stderr.strip().splitlines() or ["dlsys refused bf16"])[-1])
    return out.returncode == 0


def reduced_precision(a, rng, run):
    jobs = []  # (label, b, dlsys model, extra, float model, input, accuracy, same-file?)
    has_bf16 = None
    for label, stem, b, prec, qargs in REDUCED:
        if a.only and stem not in a.only and stem.split("_")[0] not in a.only:
            continue
        if prec == "bf16":
            if has_bf16 is None:
                has_bf16 = bf16_supported(a)
            if not has_bf16:
                continue
        case = next(c for c in CASES if c[1] == stem)
        model = os.path.join(a.models, stem + ".onnx")
        inp = os.path.join(a.models, f"bench_{stem}_b{b}.npy")
        np.save(inp, case[4](b, rng))
        dl_model, extra, acc = model, ["--precision", "bf16"], ""
        if prec == "int8":
            calib = os.path.join(a.models, f"calib_{stem}.npy")
            evaln = os.path.join(a.models, f"eval_{stem}.npy")
            np.save(calib, case[4](32, np.random.default_rng(1)))
            np.save(evaln, case[4](64, np.random.default_rng(2)))
            dl_model = os.path.join(a.models, f"{stem}.{'dyn' if '--dynamic' in qargs else 'int8'}.onnx")
            log(f"  {label}: dlsys quantize")
            q = run_json([a.dlsys, "quantize", model, "--calibrate", calib, "--eval", evaln, "-o", dl_model,
                          "--threads", run.t, "--json"] + qargs)
            acc = f"top-1 {100 * q['accuracy']['top1_agreement']:.1f}%, max rel err {q['accuracy']['max_rel_error']:.3g}"
            extra = []
        jobs.append((label, b, dl_model, extra, model, inp, acc, prec == "int8"))
    if not jobs:
        return
    res = {j[0]: {"dlsys": [], "ort": [], "same": []} for j in jobs}
    for r in range(a.rounds):
        for label, b, dl_model, extra, model, inp, acc, same in jobs:
            log(f"  round {r + 1}/{a.rounds}, {label} batch {b}: dlsys, onnxruntime fp32"
                + (", onnxruntime on the QDQ model" if same else ""))
            res[label]["dlsys"].append(run.dlsys(dl_model, inp, extra))
            res[label]["ort"].append(run.ort(model, inp))
            if same:
                res[label]["same"].append(run.ort(dl_model, inp))
    rows = []
    for label, b, dl_model, extra, model, inp, acc, same in jobs:
        d, o, s = res[label]["dlsys"], res[label]["ort"], res[label]["same"]
        rows.append([label, str(b), f"{med([x['median_ms'] for x in d]):.3f}",
                     f"{med([x['median_ms'] for x in o]):.3f}",
                     f"{med([x['median_ms'] for x in s]):.3f}" if same else "-",
                     ratio_cell([x["items_per_s"] / y["items_per_s"] for x, y in zip(d, o)]),
                     ratio_cell([x["items_per_s"] / y["items_per_s"] for x, y in zip(d, s)]) if same else "-",
                     acc or "see tests"])
    hdr = ["model", "batch", "dlsys median ms", "ORT fp32 median ms", "ORT same-file median ms",
           "dlsys/ORT-fp32 thr.", "dlsys/ORT same-file thr.", "accuracy vs fp32"]
    print()
    print_table(hdr, rows, a.markdown)


if __name__ == "__main__":
    main()
