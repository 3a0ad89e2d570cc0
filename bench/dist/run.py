#!/usr/bin/python3
"""bench/dist: data-parallel training throughput and scaling efficiency, dlsys beside PyTorch DDP.

One machine, ranks on loopback, 1 thread per rank (the issue's setting on a 2-core machine):
  - dlsys: `dlsys train SPEC --nproc N --threads 1` (src/dist over Gloo, micro-batches summed as
    a fixed tree: bit-identical weights for any N; gradient buckets sized from the measured link
    and overlapped with the backward pass; ranks pinned to their own CPUs);
  - PyTorch: torch.distributed on Gloo with DistributedDataParallel, N processes, the same model,
    global batch and steps, torch.set_num_threads(1).
Models:
  - cnn: conv 16 -> conv 32 -> maxpool -> linear, 28x28 inputs, batch 64; ~23 MFLOP a sample
    (forward and backward), 67k parameters (270 KB to all-reduce a step): a 7 ms step on one
    dlsys worker, 70 ms on PyTorch's;
  - cnn512 (compute dominates): the same with batch 512 (a ~100 ms step on one dlsys worker);
  - mlp (communication-heavy): 512 -> 2048 -> 2048 -> 10, batch 32; 5.3M parameters (21 MB a
    step) for ~0.3 GFLOP a step.
Samples/s: both over the steps after 5 warm-up steps (dlsys from its step events, PyTorch timed
around its loop). Scaling
efficiency = samples/s on 2 workers / (2 x samples/s on 1). The machine's own parallel capacity
(two independent one-worker dlsys runs at once, no communication) is measured beside: no
efficiency can pass it. Rounds interleave every configuration; medians and ranges are printed.
Across network namespaces with a shaped link, and the cost model: bench/dist/netns.py.

Usage: bench/dist/run.py [--dlsys build/dlsys] [--rounds 3] [--models cnn,mlp] [--no-torch]
                        [--bucket-kib N]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

MODELS = {
    "cnn": {
        "input": [1, 28, 28],
        "batch": 64,
        "steps": 200,
        "layers": ("    - conv2d: {out: 16, kernel: 3, padding: 1}\n    - relu\n"
                   "    - conv2d: {out: 32, kernel: 3, padding: 1}\n    - relu\n"
                   "    - maxpool: {kernel: 2}\n    - flatten\n    - linear: {out: 10}\n"),
    },
    # The same CNN with 8x the batch: a step of ~100 ms on one worker, where the per-step
    # synchronization (a few ms on this VM) no longer weighs.
    "cnn512": {
        "input": [1, 28, 28],
        "batch": 512,
        "steps": 30,
        "layers": ("    - conv2d: {out: 16, kernel: 3, padding: 1}\n    - relu\n"
                   "    - conv2d: {out: 32, kernel: 3, padding: 1}\n    - relu\n"
                   "    - maxpool: {kernel: 2}\n    - flatten\n    - linear: {out: 10}\n"),
    },
    "mlp": {
        "input": [512],
        "batch": 32,
        "steps": 100,
        "layers": ("    - linear: {out: 2048}\n    - relu\n    - linear: {out: 2048}\n    - relu\n"
                   "    - linear: {out: 10}\n"),
    },
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_data(tmp, name, m):
    rng = np.random.default_rng(0)
    n = m["batch"] * m["steps"]
    x = rng.standard_normal((n, *m["input"]), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int64)
    vx = rng.standard_normal((64, *m["input"]), dtype=np.float32)
    vy = rng.integers(0, 10, 64).astype(np.int64)
    paths = {}
    for k, v in {"x": x, "y": y, "vx": vx, "vy": vy}.items():
        paths[k] = os.path.join(tmp, f"{name}-{k}.npy")
        np.save(paths[k], v)
    spec = os.path.join(tmp, f"{name}.yaml")
    with open(spec, "w") as f:
        f.write(f"name: dist-{name}\n"
                f"data: {{format: npy, train: {paths['x']}, train_labels: {paths['y']}, "
                f"validation: {paths['vx']}, validation_labels: {paths['vy']}}}\n"
                f"model:\n  input: {m['input']}\n  layers:\n{m['layers']}"
                f"train:\n  epochs: 1\n  batch_size: {m['batch']}\n  seed: 0\n"
                f"  micro_batches: 2\n  optimizer: {{name: sgd, lr: 0.01, momentum: 0.9}}\n")
    return spec


def steady_samples_per_s(stdout, batch, warm=5):
    """Samples/s over the steps after the first `warm` (as PyTorch's is timed), from the step
    events of `--json --log-every 1`: each carries the samples/s since its epoch began, so an
    event's time is its samples over that rate."""
    steps = [e for e in (json.loads(l) for l in stdout.splitlines() if l.startswith("{"))
             if e.get("event") == "step"]
    a = next(e for e in steps if e["step"] == warm - 1)
    b = steps[-1]
    t = lambda e: (e["step"] + 1) * batch / e["samples_per_s"]
    return (b["step"] - a["step"]) * batch / (t(b) - t(a))


def dlsys_samples_per_s(dlsys, spec, m, workers, tmp, extra=()):
    out = os.path.join(tmp, f"run-{workers}")
    r = subprocess.run([dlsys, "train", spec, "--nproc", str(workers), "--threads", "1", "--json",
                        "--log-every", "1", "--out", out, *extra], capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        sys.exit(f"dlsys train failed:\n{r.stdout}\n{r.stderr}")
    return steady_samples_per_s(r.stdout, m["batch"])


def ceiling(dlsys, spec, m, tmp):
    """Two independent one-worker runs at once (no communication), each pinned to its own CPU
    as --nproc pins ranks: their samples/s over twice one run's alone is what this machine's
    cores give in parallel, the ceiling of any scaling efficiency here."""
    procs = []
    for c in (0, 1):
        out = os.path.join(tmp, f"ceiling-{c}")
        procs.append(subprocess.Popen(["taskset", "-c", str(c % os.cpu_count()), dlsys, "train",
                                       spec, "--threads", "1", "--json", "--log-every", "1",
                                       "--out", out],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True))
    return sum(steady_samples_per_s(p.communicate(timeout=600)[0], m["batch"]) for p in procs)


def torch_samples_per_s(m, workers):
    port = free_port()
    r = subprocess.run([sys.executable, os.path.join(HERE, "torch_ddp.py"), "--workers",
                        str(workers), "--port", str(port), "--model", json.dumps(m)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"torch DDP failed:\n{r.stdout}\n{r.stderr}")
    return float(r.stdout.strip().splitlines()[-1])


def fmt(v):
    return f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dlsys", default="build/dlsys")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="cnn,cnn512,mlp")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--bucket-kib", type=int, default=0,
                    help="also run 2 workers with buckets of this size (train.bucket_kib), "
                         "beside the size chosen from the link")
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu} ({os.cpu_count()} cores); 1 thread per rank; {a.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            m = MODELS[name]
            spec = make_data(tmp, name, m)
            fixed = f"dlsys 2 ({a.bucket_kib} KiB buckets)"
            res = {k: [] for k in ("dlsys 1", "dlsys 2", fixed, "torch 1", "torch 2",
                                   "two 1-worker runs")}
            for r in range(a.rounds):
                for w in (1, 2):
                    res[f"dlsys {w}"].append(dlsys_samples_per_s(a.dlsys, spec, m, w, tmp))
                    if not a.no_torch:
                        res[f"torch {w}"].append(torch_samples_per_s(m, w))
                if a.bucket_kib:
                    res[fixed].append(dlsys_samples_per_s(
                        a.dlsys, spec, m, 2, tmp, ["--set", f"train.bucket_kib={a.bucket_kib}"]))
                res["two 1-worker runs"].append(ceiling(a.dlsys, spec, m, tmp))
                print(f"{name} round {r + 1}: " +
                      ", ".join(f"{k} {v[-1]:.1f}" for k, v in res.items() if v), file=sys.stderr)
            print(f"\n{name} (global batch {m['batch']}, {m['steps']} steps): samples/s, median [min-max]")
            for k, v in res.items():
                if v:
                    print(f"  {k} worker(s): {fmt(v)}")
            for who in ("dlsys", "torch"):
                if res[f"{who} 1"]:
                    eff = [res[f"{who} 2"][i] / (2 * res[f"{who} 1"][i]) for i in range(a.rounds)]
                    print(f"  {who} scaling efficiency at 2 workers: {statistics.median(eff):.3f} "
                          f"[{min(eff):.3f}-{max(eff):.3f}]")
            if res[fixed]:
                eff = [res[fixed][i] / (2 * res["dlsys 1"][i]) for i in range(a.rounds)]
                print(f"  dlsys scaling efficiency at 2 workers, {a.bucket_kib} KiB buckets: "
                      f"{statistics.median(eff):.3f} [{min(eff):.3f}-{max(eff):.3f}]")
            cap = [res["two 1-worker runs"][i] / (2 * res["dlsys 1"][i]) for i in range(a.rounds)]
            print(f"  this machine's parallel capacity (two independent 1-worker runs at once over "
                  f"twice one alone): {statistics.median(cap):.3f} [{min(cap):.3f}-{max(cap):.3f}]")
            if res["torch 2"]:
                ratio = [res["dlsys 2"][i] / res["torch 2"][i] for i in range(a.rounds)]
                print(f"  dlsys / torch samples/s at 2 workers: {statistics.median(ratio):.2f}x "
                      f"[{min(ratio):.2f}-{max(ratio):.2f}]")


if __name__ == "__main__":
    main()
