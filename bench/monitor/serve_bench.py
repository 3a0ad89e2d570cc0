#!/usr/bin/env python3
"""bench/monitor: monitoring's figures against a real `dlsys server` on loopback (issue 24).

  1. sampling's cost: the digits MLP served by two deployments of the same version, one sampling
     every request (the monitor following its log) and one sampling none, loaded alternately
     with `dlsys bench serve --scenario offline` (rows/s), per round; the median ratio and its
     range (floor: at most 5% fewer rows/s).
  2. detection of drift: per seeded run, unshifted digits traffic for --calm seconds (every
     drift alert that fires is a false alarm), then the pixels scaled by 0.5: the time from the
     shift to the drift alert FIRING (windows of --window seconds); then unshifted again until it
     resolves.
  3. detection of an accuracy drop: requests labelled (through POST .../feedback, in batches of
     50) as right 97% of the time, then 80%: the labels and seconds from the drop to the
     accuracy_change alert FIRING, and false flags before it.

No peer runs here: Evidently, NannyML and Alibi Detect are pip packages, not installable on
this machine. Usage: bench/monitor/serve_bench.py --dlsys build/dlsys [--rounds 3] [--runs 5]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "jobs"))
import jobs_bench  # noqa: E402  (its Server: a `dlsys server` on loopback over a data directory)

DIGITS = os.path.normpath(os.path.join(ROOT, "../shared/data/digits/digits.csv"))


def cli(dlsys, *args):
    r = subprocess.run([dlsys, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"dlsys {' '.join(args)}: {r.stdout}{r.stderr}")
    return r.stdout


def load_digits():
    rows, labels = [], []
    for line in open(DIGITS):
        v = [float(x) for x in line.strip().split(",")]
        rows.append(v[:64])
        labels.append(int(v[64]))
    return rows, labels


class Client(jobs_bench.Server):
    """bench/jobs's server with the calls this benchmark makes (its own `call`)."""

    def infer(self, name, x, rid):
        out = self.call("POST", f"/v2/models/{name}/infer", {
            "id": rid, "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                   "data": x}]})
        logits = out["outputs"][0]["data"]
        return max(range(len(logits)), key=lambda i: logits[i])

    def firing(self, rule):
        alerts = self.call("GET", "/api/v1/alerts?state=FIRING&limit=100")["alerts"]
        return [a for a in alerts if a["rule"] == rule]


def setup(a, server, url):
    work = tempfile.mkdtemp(prefix="dlsys-monbench-")
    cli(a.dlsys, "data", "push", DIGITS, "--name", "digits", "--split", "0.8,0.2", "--server", url)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        cli(a.dlsys, "train", "examples/digits/mlp-dataset.yaml", "--out", work + "/m",
            "--threads", "2", "--server", url)
    finally:
        os.chdir(cwd)
    cli(a.dlsys, "models", "register", "digits", "--run", "1", "--server", url)
    cli(a.dlsys, "models", "alias", "digits", "production", "1", "--server", url)
    for name in ("digits", "digits-plain"):
        cli(a.dlsys, "deploy", "create", name, "--model", "digits@production", "--server", url)
    cli(a.dlsys, "deploy", "update", "digits", "--sample-rate", "1", "--server", url)
    shutil.rmtree(work)


def sampling_cost(a, url):
    ratios, rates = [], {"digits": [], "digits-plain": []}
    for rnd in range(1, a.rounds + 1):
        got = {}
        order = ["digits", "digits-plain"] if rnd % 2 else ["digits-plain", "digits"]
        for name in order:
            out = json.loads(cli(a.dlsys, "bench", "serve", "--url", url, "--model", name,
                                 "--scenario", "offline", "--duration", str(a.seconds),
                                 "--concurrency", "4", "--json", "--seed", str(rnd)))
            got[name] = out["throughput_rows_per_s"]
            rates[name].append(got[name])
        ratios.append(got["digits"] / got["digits-plain"])
        print(f"round {rnd}: sampled {got['digits']:.0f} rows/s, not sampled "
              f"{got['digits-plain']:.0f} rows/s, ratio {ratios[-1]:.3f}", flush=True)
    return ratios, rates


def drift_detection(a, client, rows, labels, window):
    rnd = random.Random(11)
    delays, false_alarms, calm_windows = [], 0, 0
    for run in range(1, a.runs + 1):
        seen = {x["id"] for x in client.firing("digits-drift")}
        t_end = time.time() + a.calm
        while time.time() < t_end:
            k = rnd.randrange(len(rows))
            client.infer("digits", rows[k], f"c{run}-{rnd.random()}")
        time.sleep(window + 2)  # the last calm window judged
        fired = [x for x in client.firing("digits-drift") if x["id"] not in seen]
        false_alarms += len(fired)
        calm_windows += int(a.calm / window)
        t_shift = time.time()
        fired_at = None
        while time.time() - t_shift < 60 and fired_at is None:
            k = rnd.randrange(len(rows))
            client.infer("digits", [round(v * 0.5) for v in rows[k]], f"s{run}-{rnd.random()}")
            if rnd.random() < 0.02:
                if [x for x in client.firing("digits-drift") if x["id"] not in seen]:
                    fired_at = time.time()
        if fired_at is None:
            print(f"run {run}: no drift alert within 60 s", flush=True)
            continue
        delays.append(fired_at - t_shift)
        print(f"run {run}: drift alert {delays[-1]:.2f} s after the shift "
              f"({window} s windows); {len(fired)} false alarm(s) in {a.calm} s unshifted",
              flush=True)
        # Unshifted until it resolves.
        t0 = time.time()
        while client.firing("digits-drift") and time.time() - t0 < 60:
            for _ in range(50):
                k = rnd.randrange(len(rows))
                client.infer("digits", rows[k], f"r{run}-{rnd.random()}")
    return delays, false_alarms, calm_windows


def accuracy_drop(a, client, rows):
    rnd = random.Random(5)
    results = []
    for run in range(1, a.runs + 1):
        batch, before, after, fired_labels, t_drop = [], 0, 0, None, None
        seen = {x["id"] for x in client.firing("digits-accuracy-change")}
        false_flags = 0
        for i in range(a.labels_before + 2000):
            dropped = i >= a.labels_before
            if dropped and t_drop is None:
                if [x for x in client.firing("digits-accuracy-change") if x["id"] not in seen]:
                    false_flags += 1
                    seen |= {x["id"] for x in client.firing("digits-accuracy-change")}
                t_drop = time.time()
            k = rnd.randrange(len(rows))
            rid = f"a{run}-{i}-{rnd.random()}"
            pred = client.infer("digits", rows[k], rid)
            right = rnd.random() < (0.80 if dropped else 0.97)
            batch.append({"id": rid, "label": str(pred if right else (pred + 1) % 10)})
            if len(batch) == 50:
                client.call("POST", "/api/v1/deployments/digits/feedback", {"labels": batch})
                batch = []
                if dropped:
                    time.sleep(0.25)  # a monitor pass (--monitor-interval-ms 200)
                    if [x for x in client.firing("digits-accuracy-change") if x["id"] not in seen]:
                        fired_labels = i + 1 - a.labels_before
                        break
        if fired_labels is None:
            print(f"run {run}: accuracy drop not flagged within 2000 labels", flush=True)
            continue
        secs = time.time() - t_drop
        results.append((fired_labels, secs, false_flags))
        print(f"run {run}: accuracy 97% -> 80% flagged {fired_labels} labels ({secs:.1f} s) "
              f"after the drop; {false_flags} false flag(s) in {a.labels_before} labels before",
              flush=True)
        # Let the 20 s accuracy_change window pass so the next run starts quiet.
        time.sleep(max(0, 21 - secs))
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dlsys", default="build/dlsys")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--calm", type=float, default=10)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--labels-before", type=int, default=1000)
    p.add_argument("--only", nargs="*", default=["sampling", "drift", "accuracy"])
    a = p.parse_args()
    a.dlsys = os.path.abspath(a.dlsys)
    data_dir = tempfile.mkdtemp(prefix="dlsys-monbench-data-")
    server = Client(a.dlsys, data_dir, 2, extra=("--monitor-interval-ms", "200"))
    url = f"http://{server.host}:{server.port}"
    try:
        setup(a, server, url)
        client = server
        config = f"""defaults: {{windows: [{a.window}s, 20s], history: 200}}
rules:
  - {{name: digits-drift, deployment: digits, signal: drift, window: {a.window}s,
     notify: {{log: false}}}}
  - {{name: digits-accuracy-change, deployment: digits, signal: accuracy_change, window: 20s,
     notify: {{log: false}}}}
"""
        client.call("PUT", "/api/v1/monitor/config", {"spec_text": config})
        rows, labels = load_digits()
        if "sampling" in a.only:
            ratios, _ = sampling_cost(a, url)
            print(f"sampling every request: rows/s sampled / not sampled, median "
                  f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}] over "
                  f"{len(ratios)} rounds (floor: >= 0.95)", flush=True)
        if "drift" in a.only:
            delays, fa, windows = drift_detection(a, client, rows, labels, a.window)
            if delays:
                print(f"drift: detected in {len(delays)} of {a.runs} runs, delay median "
                      f"{statistics.median(delays):.2f} s [{min(delays):.2f}-{max(delays):.2f}] "
                      f"with {a.window} s windows; {fa} false alarm(s) in {windows} unshifted "
                      f"windows", flush=True)
        if "accuracy" in a.only:
            res = accuracy_drop(a, client, rows)
            if res:
                print(f"accuracy drop: flagged in {len(res)} of {a.runs} runs, median "
                      f"{statistics.median(r[0] for r in res)} labels "
                      f"[{min(r[0] for r in res)}-{max(r[0] for r in res)}], "
                      f"{statistics.median(r[1] for r in res):.1f} s; "
                      f"{sum(r[2] for r in res)} false flag(s) before the drops", flush=True)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


main()
