#!/usr/bin/env python3
"""The demo's monitoring step: sends digits rows (from the shared CSV) to a deployment over the
KServe v2 REST protocol, one row per request with its own id, for a number of seconds, with the
pixels scaled by --scale (0.5: dimmed, the drift to find); with --labels, writes each request's
id and true label as a CSV for `dlsys monitor feedback`.

  demo_monitor.py URL DEPLOYMENT [--seconds 5] [--scale 1] [--labels FILE] [--seed 1]
"""
import argparse
import http.client
import json
import os
import random
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("deployment")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--labels")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    rows = []
    for line in open(os.path.join(ROOT, "../shared/data/digits/digits.csv")):
        v = [float(x) for x in line.split(",")]
        rows.append((v[:64], int(v[64])))
    u = urllib.parse.urlparse(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    rnd = random.Random(a.seed)
    labels, right, n = [], 0, 0
    end = time.time() + a.seconds
    while time.time() < end:
        x, y = rows[rnd.randrange(len(rows))]
        rid = f"demo-{a.seed}-{n}"
        body = {"id": rid, "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                       "data": [round(v * a.scale) for v in x]}]}
        conn.request("POST", f"/v2/models/{a.deployment}/infer", json.dumps(body),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        out = json.loads(r.read())
        if r.status != 200:
            raise SystemExit(f"infer: {r.status} {out}")
        logits = out["outputs"][0]["data"]
        right += max(range(10), key=lambda i: logits[i]) == y
        labels.append((rid, y))
        n += 1
    print(f"{n} requests in {a.seconds:.0f} s (pixels x {a.scale}), {right / n:.1%} answered right")
    if a.labels:
        with open(a.labels, "w") as f:
            f.write("id,label\n")
            for rid, y in labels:
                f.write(f"{rid},{y}\n")


main()
