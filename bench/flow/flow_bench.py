#!/usr/bin/env python3
"""bench/flow: the pipeline runner's figures (issue 23), on a real `dlsys server` on loopback
with its own temporary data directory. No peer runs here (Argo and Kubeflow need a Kubernetes
cluster, Airflow and Metaflow a pip install; none is installable on this machine): the figures are
dlsys's own, against the issue's floors.

  1. an unchanged train -> register -> evaluate pipeline run again: every step a cache hit, and
     the run's time from its start (the POST) to its end as the server records it, per round
     (floor: under 1 s). The first, uncached run is shown for scale.
  2. a chain of 100 no-op steps (`command: [true]`, cache off: each one a job of the training
     service, a process): the time from one step's end to the next step's start, p50 and p99
     (floor: p99 under 50 ms), as the runner records the steps and as the jobs' processes ran.

Usage: bench/flow/run.sh [BUILD] [--rounds 5] [--chain 100] [--out DIR]
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


sys.path.insert(0, os.path.join(ROOT, "bench", "jobs"))
import jobs_bench  # noqa: E402  (its Server: a `dlsys server` on loopback over a data directory)


class Server(jobs_bench.Server):
    """bench/jobs's server, run from the repository's root (the pipelines' relative paths), with
    pipeline calls."""

    def __init__(self, dlsys, data_dir):
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            super().__init__(dlsys, data_dir, 2)
        finally:
            os.chdir(cwd)

    def create(self, spec_text):
        return self.call("POST", "/api/v1/pipelines", {"spec": spec_text, "file": "bench.yaml"})

    def run(self, name, params=None, deadline_s=600):
        """Starts a run and waits (polling every 2 ms) for its end; the run with its steps."""
        t0 = time.perf_counter()
        r = self.call("POST", f"/api/v1/pipelines/{name}/runs", {"params": params or {}})
        end = time.time() + deadline_s
        while time.time() < end:
            run = self.call("GET", f"/api/v1/pipelines/-/runs/{r['id']}")
            if run["state"] != "RUNNING":
                if run["state"] != "SUCCEEDED":
                    raise SystemExit(f"run {r['id']} {run['state']}: {run['end_reason']}")
                run["client_seconds"] = time.perf_counter() - t0
                return run
            time.sleep(0.002)
        raise SystemExit(f"run {r['id']} did not end in {deadline_s} s")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def cached_rerun(server, rounds):
    digits = os.path.normpath(os.path.join(ROOT, "../shared/data/digits/digits.csv"))
    server.call("POST", "/api/v1/pipelines", {"spec": f"""name: push-digits
steps:
  - {{name: push, kind: data.push, with: {{file: "{digits}", name: digits, split: "0.8,0.2"}}}}
""", "file": "push.yaml"})
    server.run("push-digits")
    server.create("""name: tre
params: {epochs: 10}
steps:
  - name: train
    kind: train
    with: {spec: examples/digits/mlp-dataset.yaml, dataset: digits, split: train,
           hyperparameters: {epochs: "${params.epochs}"}}
  - name: register
    kind: register
    with: {run: "${steps.train.outputs.run}", name: digits}
  - name: evaluate
    kind: evaluate
    with: {model: "${steps.register.outputs.model}", dataset: digits, split: validation}
""")
    first = server.run("tre")
    print(f"1. train -> register -> evaluate, first run (nothing cached): "
          f"{(first['ended_at'] - first['created_at']) / 1000:.3f} s")
    times, client = [], []
    for i in range(rounds):
        run = server.run("tre")
        cached = [s["step"] for s in run["steps"] if s.get("cached")]
        if len(cached) != 3:
            raise SystemExit(f"round {i + 1}: only {cached} were cache hits")
        times.append((run["ended_at"] - run["created_at"]) / 1000)
        client.append(run["client_seconds"])
        print(f"   round {i + 1}: all 3 steps cache hits, run {times[-1]:.3f} s "
              f"(the client's POST to its seeing the end: {client[-1]:.3f} s)")
    print(f"   unchanged rerun: median {statistics.median(times):.3f} s "
          f"[{min(times):.3f}-{max(times):.3f}] over {rounds} rounds, as the client saw it "
          f"{statistics.median(client):.3f} s [{min(client):.3f}-{max(client):.3f}] "
          f"(floor: < 1 s)")
    return times


def chain(server, n, data_dir):
    steps = "\n".join(
        f"  - {{name: s{i}, kind: command, with: {{command: ['true']}}, cache: false"
        + (f", needs: [s{i - 1}]" if i else "") + "}" for i in range(n))
    server.create(f"name: chain\nsteps:\n{steps}\n")
    run = server.run("chain")
    by = {s["step"]: s for s in run["steps"]}
    runner_gaps = [by[f"s{i}"]["started_at"] - by[f"s{i - 1}"]["ended_at"] for i in range(1, n)]
    jobs = {}
    for s in by.values():
        j = server.call("GET", f"/api/v1/jobs/{s['job_id']}")
        jobs[s["step"]] = j
    job_gaps = [jobs[f"s{i}"]["started_at"] - jobs[f"s{i - 1}"]["ended_at"] for i in range(1, n)]
    total = (run["ended_at"] - run["created_at"]) / 1000
    print(f"2. a chain of {n} no-op steps (each a job: a process running `true`): {total:.2f} s")
    print(f"   step end -> next step start, as the runner records them: p50 "
          f"{statistics.median(runner_gaps):.0f} ms, p99 {pct(runner_gaps, 99):.0f} ms, "
          f"max {max(runner_gaps)} ms (floor: p99 < 50 ms)")
    print(f"   job end -> next job's process start: p50 {statistics.median(job_gaps):.0f} ms, "
          f"p99 {pct(job_gaps, 99):.0f} ms, max {max(job_gaps)} ms")
    return runner_gaps, job_gaps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dlsys", default="build/dlsys")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    dlsys = os.path.abspath(a.dlsys)
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    print(f"bench/flow on {cpu}, {os.cpu_count()} CPUs")
    tmp = tempfile.mkdtemp(prefix="dlsys-flow-bench-")
    try:
        server = Server(dlsys, tmp)
        try:
            times = cached_rerun(server, a.rounds)
            runner_gaps, job_gaps = chain(server, a.chain, tmp)
        finally:
            server.stop()
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "flow.json"), "w") as f:
                json.dump({"cached_rerun_s": times, "chain_runner_gaps_ms": runner_gaps,
                           "chain_job_gaps_ms": job_gaps}, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
