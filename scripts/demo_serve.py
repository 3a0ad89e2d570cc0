#!/usr/bin/env python3
"""The demo's serving step: sends a validation split through a dlsys deployment over the KServe
v2 REST protocol (binary tensors) from several threads, prints accuracy and latency
percentiles, and with --alias-move first shows five rows asked for the derived outputs class and
probabilities, then moves the model's `production` alias to another version while
the load runs, printing how many requests failed (the deployment must roll without failing one).

  demo_serve.py URL DEPLOYMENT VAL_X.npy VAL_Y.npy [--alias-move DLSYS VERSION] [--threads 4]
"""
import argparse, json, subprocess, sys, threading, time, urllib.error, urllib.request

import numpy as np


def infer(url, name, x, timeout=10, key=None):
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head))}
    if key is not None:
        headers["X-Request-Key"] = key  # keeps a caller on one side of a canary split
    req = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=head + x.tobytes(),
                                 headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
        n = int(r.headers["Inference-Header-Content-Length"])
        meta = json.loads(body[:n])
        out = meta["outputs"][0]
        y = np.frombuffer(body[n:], dtype=np.float32).reshape(out["shape"])
        return meta["model_version"], y


def classes(url, name, x):
    """One request for several rows asking for the derived outputs a classifier trained by dlsys
    offers: the predicted class and the probabilities (JSON, not the logits)."""
    body = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}],
                       "outputs": [{"name": "class"}, {"name": "probabilities"}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/{name}/infer", data=body)
    with urllib.request.urlopen(req, timeout=10) as r:
        outs = {o["name"]: o for o in json.loads(r.read())["outputs"]}
    probs = np.array(outs["probabilities"]["data"]).reshape(outs["probabilities"]["shape"])
    return outs["class"]["data"], probs.max(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url"); ap.add_argument("name"); ap.add_argument("x"); ap.add_argument("y")
    ap.add_argument("--alias-move", nargs=2, metavar=("DLSYS", "VERSION"))
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    x = np.load(a.x).astype(np.float32)
    y = np.load(a.y)
    # One pass over the split, one row per request, from several threads.
    lat, correct, failed, versions = [], 0, 0, {}
    lock = threading.Lock()
    rows = list(range(len(x)))

    def client(stop=None, loop=False):
        nonlocal correct, failed
        i = 0
        while True:
            with lock:
                if stop is None and not rows:
                    return
                k = rows.pop() if stop is None else i % len(x)
            if stop is not None and stop.is_set():
                return
            i += 1
            t0 = time.perf_counter()
            try:
                v, logits = infer(a.url, a.name, x[k:k + 1], key=f"digit-{k}")
                ok = True
            except (urllib.error.URLError, OSError, ValueError) as e:
                ok, v, logits = False, None, None
                err = e
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if not ok:
                    failed += 1
                    if failed <= 3:
                        print("request failed:", err, file=sys.stderr)
                    continue
                versions[v] = versions.get(v, 0) + 1
                if stop is None:
                    correct += int(logits.argmax(1)[0] == y[k])

    threads = [threading.Thread(target=client) for _ in range(a.threads)]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    p = np.percentile(np.array(lat) * 1e3, [50, 90, 99])
    print(f"{len(x)} validation digits through /v2/models/{a.name}/infer ({a.threads} clients): "
          f"accuracy {correct / len(x):.4f}, latency p50 {p[0]:.2f} ms p90 {p[1]:.2f} ms "
          f"p99 {p[2]:.2f} ms, {len(x) / wall:.0f} requests/s, failed {failed}, answered by "
          f"versions {dict(sorted(versions.items()))}")
    if failed or correct / len(x) < 0.9:
        sys.exit(1)
    if a.alias_move:  # once, on the first pass
        names, top = classes(a.url, a.name, x[:5])
        print("  asked for outputs class and probabilities: " +
              ", ".join(f"{n} ({q:.2f}, label {int(t)})" for n, q, t in zip(names, top, y[:5])))
    if not a.alias_move:
        return
    dlsys, version = a.alias_move
    lat.clear(); versions.clear(); failed = 0
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(stop,)) for _ in range(a.threads)]
    for t in threads: t.start()
    time.sleep(1.0)
    subprocess.run([dlsys, "models", "alias", a.name, "production", version, "--server", a.url],
                   check=True)
    deadline = time.time() + 30
    while time.time() < deadline and versions.get(version, 0) < 200:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads: t.join()
    p = np.percentile(np.array(lat) * 1e3, [50, 99])
    print(f"alias production moved to version {version} under load: {len(lat)} requests, answered by "
          f"versions {dict(sorted(versions.items()))}, failed {failed}, p50 {p[0]:.2f} ms p99 {p[1]:.2f} ms")
    if failed or versions.get(version, 0) == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
