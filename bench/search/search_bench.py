#!/usr/bin/env python3
"""bench/search: ASHA against a full grid on the digits MLP (issue 22), on a real `dlsys server`
on loopback with its own temporary data directory.

The searches try the same 18 configurations (6 learning rates x 3 batch sizes) for the same top
budget of 81 epochs (most configurations still improve after 27), two trials at a time on
--job-threads 2:
  - grid: every configuration trains the full budget;
  - asha: the same grid with successive halving (min_epochs 3, reduction_factor 3: rungs of 3,
    9, 27 and 81 epochs): every configuration trains the first rung, the best third of a rung goes
    on to the next (continuing from its checkpoint);
  - asha-min1: the same with a first rung of 1 epoch (rungs 1, 3, 9, 27, 81): cheaper, and a check of
    how much the first rung's length matters (one epoch ranks the configurations poorly).
Per round (the two orders alternate) it records each search's wall time from submit to its end,
the core-seconds its trial jobs held, and the best validation accuracy it found. It prints the
median ASHA/grid time ratio with its range over the rounds and the accuracy gap (the issue's
bar: ASHA within 0.5 points of the grid's best in under half the grid's time). No peer runs here
(no Ray Tune on this machine: no pip).

Usage: bench/search/run.sh [BUILD] [--rounds 3] [--epochs 81] [--out DIR]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "jobs"))
from jobs_bench import Server, write_spec  # noqa: E402

LRS = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03]
BATCHES = [32, 64, 128]


VARIANTS = {"grid": None,
            "asha": {"min_epochs": 3, "reduction_factor": 3},
            "asha-min1": {"min_epochs": 1, "reduction_factor": 3}}


def search_spec(name, spec, epochs, asha):
    s = {"name": name,
         "trial": {"kind": "train", "spec": spec, "hyperparameters": {"target_accuracy": 0},
                   "resources": {"threads": 1}},
         "space": {"lr": {"choice": LRS}, "batch_size": {"choice": BATCHES}},
         "algorithm": "grid", "metric": "val_accuracy", "mode": "max", "parallelism": 2,
         "epochs": epochs}
    if asha:
        s["asha"] = asha
    return s


def run_search(server, body, timeout=3600):
    t0 = time.monotonic()
    sid = server.call("POST", "/api/v1/searches", body)["id"]
    while True:
        s = server.call("GET", f"/api/v1/searches/{sid}")
        if s["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"search {sid} did not end in {timeout} s")
        time.sleep(0.05)
    wall = time.monotonic() - t0
    if s["state"] != "SUCCEEDED":
        raise SystemExit(f"search {sid} {s['state']}: {s['end_reason']}")
    best = next(t for t in s["trials"] if t["trial"] == s["best_trial"])
    epochs = sum(s["rungs"][len(t["results"]) - 1] for t in s["trials"] if t["results"])
    return {"wall_s": wall, "core_s": sum(t.get("core_seconds", 0) for t in s["trials"]),
            "best_accuracy": best["results"][-1], "best_params": best["params"],
            "trials": len(s["trials"]), "epochs_trained": epochs}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=81)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dlsys-search-bench-")
    spec = write_spec(tmp, a.epochs)
    server = Server(a.dlsys, os.path.join(tmp, "data"), 2)
    rows = []
    try:
        for r in range(a.rounds):
            order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
            got = {}
            for kind in order:
                got[kind] = run_search(server, search_spec(f"{kind}-{r}", spec, a.epochs,
                                                           VARIANTS[kind]))
                print(f"round {r + 1} {kind:9}: {got[kind]['wall_s']:6.2f} s wall, "
                      f"{got[kind]['core_s']:6.2f} core-s, {got[kind]['epochs_trained']:3} "
                      f"epochs trained, best val_accuracy {got[kind]['best_accuracy']:.4f} "
                      f"{json.dumps(got[kind]['best_params'])}", flush=True)
            rows.append(got)
    finally:
        server.stop()
    print(f"\n{len(LRS) * len(BATCHES)} configurations, {a.epochs} epochs at the top, "
          f"{a.rounds} rounds")

    def stat(values):
        return (f"median {statistics.median(values):.3f} "
                f"(range {min(values):.3f}..{max(values):.3f})")

    for kind in [k for k in VARIANTS if k != "grid"]:
        time_ratio = [g[kind]["wall_s"] / g["grid"]["wall_s"] for g in rows]
        core_ratio = [g[kind]["core_s"] / g["grid"]["core_s"] for g in rows]
        gap = [100 * (g["grid"]["best_accuracy"] - g[kind]["best_accuracy"]) for g in rows]
        print(f"{kind}/grid wall time: {stat(time_ratio)}; core-seconds: {stat(core_ratio)}; "
              f"grid best - {kind} best, accuracy points: {stat(gap)}")
        if kind == "asha":
            ok = statistics.median(time_ratio) < 0.5 and max(gap) <= 0.5
    print("bar (asha within 0.5 points in under half the time):", "met" if ok else "NOT met")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "search.json"), "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
