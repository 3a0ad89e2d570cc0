#!/usr/bin/env python3
"""bench/jobs: the training service's figures (issue 22), on a real `dlsys server` on loopback
with its own temporary data directory. No peer runs here (no Kubernetes cluster, Ray or Slurm
on this machine): the figures are dlsys's own, against the issue's floors.

  1. submit -> first training step of a `train` job (the digits MLP): p50 and p99 over rounds
     (floor: p50 < 1 s); with the phases (queued until started, started until the first step).
  2. throughput of 1,000 tiny `command` jobs (`true`): jobs started per second (floor: 20/s).
  3. 20 queued train jobs on --job-threads 2: CPU utilization of the machine over time (a CSV and
     an SVG plot) and each job's CPU use against its declared threads.
  4. time lost to a kill: SIGKILL of a train job's process group at a step, to the retried job's
     first new step; the steps redone (from its last checkpoint).

Usage: bench/jobs/run.sh [BUILD] [--rounds 5] [--tiny 1000] [--queued 20] [--out DIR]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
    """A `dlsys server` on a free loopback port over a fresh data directory."""

    def __init__(self, dlsys, data_dir, job_threads, extra=()):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [dlsys, "server", "--data-dir", data_dir, "--port", "0", "--access-log", "off",
             "--job-threads", str(job_threads), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://([0-9.]+):(\d+)", line)
        if not m:
            raise SystemExit("dlsys server did not start: " + line)
        self.host, self.port = m.group(1), int(m.group(2))
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body)
        self.conn.request(method, path, body=data,
                          headers={"Content-Type": "application/json"} if data else {})
        r = self.conn.getresponse()
        text = r.read()
        if r.status >= 300:
            raise SystemExit(f"{method} {path}: {r.status} {text[:300]}")
        return json.loads(text)

    def submit(self, spec):
        return self.call("POST", "/api/v1/jobs", spec)["id"]

    def job(self, jid):
        return self.call("GET", f"/api/v1/jobs/{jid}")

    def log_path(self, jid):
        return os.path.join(self.data_dir, "jobs", str(jid), "log")

    def stop(self):
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_spec(folder, epochs):
    """The digits MLP, its data path absolute."""
    text = open(os.path.join(ROOT, "examples/digits/mlp.yaml")).read()
    text = text.replace("../../../shared", os.path.normpath(os.path.join(ROOT, "../shared")))
    path = os.path.join(folder, "mlp.yaml")
    open(path, "w").write(text)
    return path


def train_job(spec, epochs, name="bench", retries=0):
    return {"kind": "train", "name": name, "spec": spec,
            "hyperparameters": {"epochs": epochs, "target_accuracy": 0},
            "resources": {"threads": 1}, "max_retries": retries}


def steps_in(path):
    """The step numbers of the step events in a job's log, in order."""
    try:
        text = open(path, errors="replace").read()
    except FileNotFoundError:
        return []
    return [int(m) for m in re.findall(r'"event":"step".*?"step":(\d+)', text)]


def wait_for(cond, timeout, what, poll=0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def first_step_latency(server, spec, rounds):
    """Submit a train job while the service is idle; time until its log shows step 0."""
    total, queued, startup = [], [], []
    for _ in range(rounds):
        t0 = time.time()
        jid = server.submit(train_job(spec, 1))
        wait_for(lambda: steps_in(server.log_path(jid)), 30, "the first step")
        t1 = time.time()
        j = wait_for(lambda: (lambda j: j if j["state"] in ("SUCCEEDED", "FAILED") else None)(
            server.job(jid)), 60, "the job to end", poll=0.01)
        if j["state"] != "SUCCEEDED":
            raise SystemExit(f"job {jid} {j['state']}: {j['end_reason']}")
        total.append(t1 - t0)
        queued.append(j["started_at"] / 1000 - t0)
        startup.append(t1 - j["started_at"] / 1000)
    return total, queued, startup


def tiny_throughput(server, n):
    """Submit n `true` jobs as fast as the API takes them; jobs started per second."""
    t0 = time.time()
    ids = [server.submit({"kind": "command", "name": "tiny", "command": ["true"]})
           for _ in range(n)]
    t_submitted = time.time()
    last = ids[-1]
    wait_for(lambda: server.job(last)["state"] == "SUCCEEDED" and
             server.call("GET", "/api/v1/jobs?state=queued&page_size=1")["jobs"] == [] and
             server.call("GET", "/api/v1/jobs?state=running&page_size=1")["jobs"] == [],
             600, "the tiny jobs to end", poll=0.05)
    starts = []
    token = ""
    while True:
        page = server.call("GET", "/api/v1/jobs?page_size=1000" +
                           (f"&page_token={token}" if token else ""))
        starts += [j["started_at"] / 1000 for j in page["jobs"] if j["id"] in set(ids)]
        token = page.get("next_page_token", "")
        if not token:
            break
    failed = len(ids) - len(starts)
    span = max(starts) - t0
    return n / span, t_submitted - t0, span, failed


def cpu_times():
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    v = [int(x) for x in parts]
    idle = v[3] + v[4]
    return sum(v), idle


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def utilization(server, spec, queued, out_dir):
    """Submit `queued` train jobs at once; sample machine CPU use and each job's CPU time."""
    ids = [server.submit(train_job(spec, 200, f"q{i}")) for i in range(queued)]
    samples = []  # (t, busy fraction of all cores)
    per_job = {}  # id -> (first seen wall, first cpu, last wall, last cpu)
    t0 = time.time()
    prev_total, prev_idle = cpu_times()
    done = False
    while not done:
        time.sleep(0.5)
        total, idle = cpu_times()
        busy = 1 - (idle - prev_idle) / max(1, total - prev_total)
        prev_total, prev_idle = total, idle
        samples.append((time.time() - t0, busy))
        running = server.call("GET", "/api/v1/jobs?state=running&page_size=100")["jobs"]
        for j in running:
            if j["pid"] <= 0:
                continue
            c = proc_cpu_seconds(j["pid"])
            if c is None:
                continue
            now = time.time()
            first = per_job.get(j["id"], (now, c, now, c))
            per_job[j["id"]] = (first[0], first[1], now, c)
        left = server.call("GET", "/api/v1/jobs?state=queued&page_size=1")["jobs"] + running
        done = not left and time.time() - t0 > 1
        if time.time() - t0 > 900:
            raise SystemExit("the queued jobs did not finish in 15 minutes")
    states = [server.job(i)["state"] for i in ids]
    # CPU used by a job between two samples over the wall time between them: its cores in use.
    cores = [(c1 - c0) / (w1 - w0) for (w0, c0, w1, c1) in per_job.values() if w1 - w0 >= 1.0]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "jobs_cpu.csv"), "w") as f:
        f.write("seconds,cpu_busy_fraction\n")
        for t, b in samples:
            f.write(f"{t:.2f},{b:.4f}\n")
    write_svg(os.path.join(out_dir, "jobs_cpu.svg"), samples, queued)
    return samples, cores, states


def write_svg(path, samples, queued):
    w, h, pad = 640, 240, 40
    tmax = max(t for t, _ in samples) or 1
    pts = " ".join(f"{pad + (w - 2 * pad) * t / tmax:.1f},{h - pad - (h - 2 * pad) * b:.1f}"
                   for t, b in samples)
    grid = "".join(
        f'<line x1="{pad}" x2="{w - pad}" y1="{h - pad - (h - 2 * pad) * y}" '
        f'y2="{h - pad - (h - 2 * pad) * y}" stroke="#ddd"/>'
        f'<text x="4" y="{h - pad - (h - 2 * pad) * y + 4}" font-size="11">{int(y * 100)}%</text>'
        for y in (0, 0.25, 0.5, 0.75, 1))
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
                f'font-family="sans-serif">{grid}'
                f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
                f'<text x="{pad}" y="16" font-size="12">CPU busy (all cores), {queued} queued '
                f'train jobs, --job-threads 2</text>'
                f'<text x="{w - pad - 60}" y="{h - 8}" font-size="11">{tmax:.0f} s</text></svg>\n')


def kill_recovery(server, spec, rounds):
    """SIGKILL a train job past a checkpoint; time to its retry's first new step; steps redone."""
    lost, redone = [], []
    for r in range(rounds):
        jid = server.submit(train_job(spec, 40, f"kill{r}", retries=1))
        kill_at = 150 + 97 * r  # past the first checkpoint (every 100 steps), a different step each
        path = server.log_path(jid)
        wait_for(lambda: (steps_in(path) or [0])[-1] >= kill_at, 60, f"step {kill_at}")
        pid = server.job(jid)["pid"]
        before = len(steps_in(path))
        last = steps_in(path)[-1]
        t_kill = time.time()
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: len(steps_in(path)) > before, 60, "the retry's first step")
        t_step = time.time()
        resumed = steps_in(path)[before]
        wait_for(lambda: server.job(jid)["state"] in ("SUCCEEDED", "FAILED"), 120, "the job",
                 poll=0.02)
        lost.append(t_step - t_kill)
        # Step events come every 10 steps: the steps redone are those between the checkpoint the
        # retry resumed from and the last step reported before the kill (at least).
        redone.append(max(0, last - resumed))
    return lost, redone


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tiny", type=int, default=1000)
    ap.add_argument("--queued", type=int, default=20)
    ap.add_argument("--out", default="bench/jobs/out")
    ap.add_argument("--only", nargs="*", default=["latency", "tiny", "queued", "kill"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="dlsys-jobs-bench-")
    try:
        spec = write_spec(tmp, 1)
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name")), "?")
        print(f"CPU: {cpu}, {os.cpu_count()} cores")
        if "latency" in a.only:
            s = Server(a.dlsys, os.path.join(tmp, "lat"), 2)
            try:
                total, queued, startup = first_step_latency(s, spec, a.rounds)
            finally:
                s.stop()
            print(f"submit -> first step of a train job ({a.rounds} rounds): p50 "
                  f"{statistics.median(total) * 1000:.0f} ms, p99 {percentile(total, 99) * 1000:.0f}"
                  f" ms [{min(total) * 1000:.0f}-{max(total) * 1000:.0f}]; of which queued p50 "
                  f"{statistics.median(queued) * 1000:.0f} ms, process start to first step p50 "
                  f"{statistics.median(startup) * 1000:.0f} ms")
        if "tiny" in a.only:
            s = Server(a.dlsys, os.path.join(tmp, "tiny"), 8)
            try:
                rate, submit_s, span, failed = tiny_throughput(s, a.tiny)
            finally:
                s.stop()
            print(f"{a.tiny} tiny command jobs (`true`, --job-threads 8): {rate:.1f} jobs/s started"
                  f" (all started {span:.1f} s after the first submit; submitting took "
                  f"{submit_s:.1f} s; {failed} not started)")
        if "queued" in a.only:
            s = Server(a.dlsys, os.path.join(tmp, "queued"), 2)
            try:
                samples, cores, states = utilization(s, spec, a.queued, a.out)
            finally:
                s.stop()
            busy = [b for _, b in samples]
            print(f"{a.queued} queued train jobs on --job-threads 2: {len(samples)} samples over "
                  f"{samples[-1][0]:.0f} s, CPU busy median {statistics.median(busy) * 100:.0f}%"
                  f" [{min(busy) * 100:.0f}-{max(busy) * 100:.0f}%]; per job cores used: max "
                  f"{max(cores):.2f} (declared 1), median {statistics.median(cores):.2f}; "
                  f"states: {', '.join(f'{x} {states.count(x)}' for x in sorted(set(states)))}; "
                  f"plot {a.out}/jobs_cpu.svg")
        if "kill" in a.only:
            s = Server(a.dlsys, os.path.join(tmp, "kill"), 2)
            try:
                lost, redone = kill_recovery(s, spec, a.rounds)
            finally:
                s.stop()
            print(f"SIGKILL -> the retried train job's first new step ({a.rounds} rounds): median "
                  f"{statistics.median(lost) * 1000:.0f} ms [{min(lost) * 1000:.0f}-"
                  f"{max(lost) * 1000:.0f}] (the first retry waits 0.25 s); steps redone median "
                  f"{statistics.median(redone):.0f} [{min(redone)}-{max(redone)}] (checkpoints "
                  f"every 100 steps)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
