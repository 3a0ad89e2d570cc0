#!/usr/bin/python3
"""The serving floors of issue 19, dlsys against itself in process: a `dlsys server` on loopback
with its own temporary data directory, models registered with `dlsys models register --file`,
deployments made with `dlsys deploy create`, load from `dlsys bench serve`, and the engine
in-process from `dlsys bench MODEL --json`. Every case runs in each of --rounds rounds; a headline
is the median of the rounds, with its range [min-max].

Usage: bench/serve/serve_bench.py --dlsys build/dlsys --models build/models [--rounds 3]
       [--seconds 3] [--only offline overhead server overload rollout] [--markdown]
       [--pin SERVER_CPUS:CLIENT_CPUS]

--pin 0:1 runs the server (and the in-process engine figure it is compared with) on CPU 0 and
the load generator on CPU 1 (`taskset`), so that the client does not take the server's cores:
the deployments then get as many threads and instances as the server has CPUs (at most 2).

Cases (floors from issue 19):
  offline   ResNet-18, offline scenario through HTTP (16 clients sending 1-row requests, dynamic
            batching up to 8 rows, 1 instance x 2 threads, or as many as --pin gives the server) vs `dlsys bench --batch 8 --threads 2`:
            rows/s ratio (floor >= 85%).
  overhead  the MLP at batch 1, single-stream (no batching delay, 1 thread): p50 end to end minus
            the engine's median batch-1 time (floor <= 100 us); p99 too.
  server    ResNet-8 (3x32x32): the highest Poisson QPS with p99 <= 25 ms, no failed and no
            rejected request (a ladder x1.5 up, then 3 bisections, 3 s per step), next to the
            engine's batch-1 latency.
  overload  ResNet-8 at 2x that QPS (deployment timeout 50 ms): p99 of the admitted requests, how
            long after its deadline each 503 came back, then the load drops to 0.8x and the p99
            of its first second is compared with a steady 0.8x run.
  rollout   ResNet-8 at 0.8x: the alias moves three times (versions 2, 3, 1) while the load runs:
            failed requests (floor 0), p99 in the 2 s after each move vs the steady p99 before
            the first (floor <= 1.5x).
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "train"))

P99_BOUND_MS = 25.0
R8_TIMEOUT_MS = 50


def cpu_count(cpus):
    """The number of CPUs in a taskset list such as "0", "0,2" or "0-3"."""
    n = 0
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def die(msg):
    sys.exit(f"serve_bench: {msg}")


def make_resnet8(path, seed):
    """A ResNet-8 for 3x32x32 (bench/train/torch_models.py) with random weights from `seed`."""
    import torch
    from torch_models import resnet8
    torch.manual_seed(seed)
    m = resnet8().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.onnx.export(m, (x,), path, opset_version=17, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


class Server:
    def __init__(self, dlsys, workdir, server_cpus=None, client_cpus=None):
        self.dlsys = dlsys
        # The operator's commands (`dlsys models alias` during a rollout) run beside the load
        # generator, not on the server's cores: in use they come from another machine.
        self.client_cpus = client_cpus
        self.data = os.path.join(workdir, "data")
        self.log = open(os.path.join(workdir, "server.out"), "w+")
        # The access log is on (to a file), as a server in use has it.
        self.proc = subprocess.Popen(
            pin_prefix(server_cpus) + [dlsys, "server", "--data-dir", self.data, "--port", "0", "--access-log",
             os.path.join(workdir, "access.log")], stdout=self.log, stderr=subprocess.STDOUT)
        self.url = None
        for _ in range(300):
            self.log.seek(0)
            for line in self.log.read().splitlines():
                if line.startswith("dlsys server on "):
                    self.url = line.split()[3]
            if self.url:
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.url:
            self.log.seek(0)
            die("the server did not start:\n" + self.log.read())

    def cli(self, *args, json_out=False):
        cmd = pin_prefix(self.client_cpus) + [self.dlsys, *args, "--server", self.url] + \
            (["--json"] if json_out else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            die(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr.strip()}")
        return json.loads(out.stdout) if json_out else out.stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pin_prefix(cpus):
    """`taskset -c CPUS` when pinned, else nothing."""
    return ["taskset", "-c", cpus] if cpus else []


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        die(f"command failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadgen(a, srv, model, scenario, seconds, records=None, **kw):
    cmd = pin_prefix(a.client_cpus) + [a.dlsys, "bench", "serve", "--url", srv.url, "--model", model, "--scenario", scenario,
           "--duration", str(seconds), "--json"]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    if records:
        cmd += ["--records", records]
    return run_json(cmd)


def engine(a, model, batch, threads, seconds):
    return run_json(pin_prefix(a.server_cpus) + [a.dlsys, "bench", os.path.join(a.work, model), "--batch", str(batch),
                     "--threads", str(threads), "--seconds", str(seconds), "--json"])


def read_records(path):
    with open(path) as f:
        return [(float(r["scheduled_s"]), float(r["sent_s"]), float(r["latency_ms"]),
                 int(r["status"])) for r in csv.DictReader(f)]


def p99(values):
    """Nearest-rank p99, as dlsys bench serve computes it."""
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, -(-99 * len(v) // 100) - 1))
    return v[k]


# ---- cases: each returns a dict of figures for one round -------------------------------------


def case_offline(a, srv):
    e = engine(a, "resnet18.onnx", 8, a.threads, a.seconds)
    stats0 = srv.cli("deploy", "show", "r18", json_out=True)["status"]["stats"]
    h = loadgen(a, srv, "r18", "offline", max(a.seconds, 5), concurrency=16, batch=1)
    stats1 = srv.cli("deploy", "show", "r18", json_out=True)["status"]["stats"]
    batches = stats1["batches"] - stats0["batches"]
    return {"engine_rows_s": e["items_per_s"], "http_rows_s": h["throughput_rows_per_s"],
            "ratio": h["throughput_rows_per_s"] / e["items_per_s"], "failed": h["failed"],
            "rejected": h["rejected"],
            "rows_per_batch": (stats1["done"] - stats0["done"]) / batches if batches else 0}


def case_overhead(a, srv):
    e = engine(a, "mlp.onnx", 1, 1, a.seconds)
    h = loadgen(a, srv, "mlp", "single-stream", a.seconds)
    return {"engine_us": e["median_ms"] * 1e3, "http_p50_us": h["p50_ms"] * 1e3,
            "http_p99_us": h["p99_ms"] * 1e3,
            "overhead_p50_us": (h["p50_ms"] - e["median_ms"]) * 1e3,
            "overhead_p99_us": (h["p99_ms"] - e["median_ms"]) * 1e3, "failed": h["failed"]}


def meets(r):
    return r["ok"] > 0 and r["failed"] == 0 and r["rejected"] == 0 and r["p99_ms"] <= P99_BOUND_MS


def case_server(a, srv, state):
    e = engine(a, "resnet8_v1.onnx", 1, 1, a.seconds)
    step = a.seconds
    trials = []

    def trial(qps):
        r = loadgen(a, srv, "r8", "server", step, qps=f"{qps:.1f}", seed=len(trials) + 1)
        trials.append((qps, r["p99_ms"], r["rejected"], r["failed"], meets(r)))
        return meets(r)

    # Start at a quarter of what one instance does back to back at batch 1.
    qps = max(5.0, 0.25 * 1000.0 / e["median_ms"])
    lo, hi = 0.0, None
    for _ in range(12):
        if trial(qps):
            lo = qps
            qps *= 1.5
        else:
            hi = qps
            break
    if hi is None:
        die(f"the server scenario met the bound up to {lo:.0f} QPS; raise the ladder")
    if lo == 0.0:
        # Even the first step missed: walk down.
        while hi > 1 and not trial(hi / 2):
            hi /= 2
        lo = hi / 2
    for _ in range(3):
        mid = (lo + hi) / 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    state["qps"] = lo
    if a.verbose:
        for t in trials:
            print(f"  qps {t[0]:8.1f}  p99 {t[1]:7.2f} ms  rejected {t[2]}  failed {t[3]}  "
                  f"{'met' if t[4] else 'missed'}", file=sys.stderr)
    return {"engine_b1_ms": e["median_ms"], "max_qps": lo, "trials": len(trials)}


def case_overload(a, srv, state):
    qps = state["qps"]
    rec = os.path.join(a.work, "records.csv")
    steady = loadgen(a, srv, "r8", "server", a.seconds, qps=f"{0.8 * qps:.1f}", seed=101)
    over = loadgen(a, srv, "r8", "server", max(a.seconds, 4), records=rec,
                   qps=f"{2 * qps:.1f}", seed=102)
    recs = read_records(rec)
    # A 503 after at least half the deadline is a deadline rejection (the batcher's timer); an
    # earlier one was refused at once (queue full). Lateness: answer time minus the deadline,
    # counted from when the request was sent (the server's clock starts on arrival).
    late = [(s + l / 1e3 - (t + R8_TIMEOUT_MS / 1e3)) * 1e3 for s, t, l, st in recs
            if st == 503 and (s + l / 1e3 - t) * 1e3 >= R8_TIMEOUT_MS / 2]
    early = sum(1 for s, t, l, st in recs
                if st == 503 and (s + l / 1e3 - t) * 1e3 < R8_TIMEOUT_MS / 2)
    # The admitted requests' latency as the server can see it: from when each was sent (the
    # headline p99 counts from the scheduled arrival, so client lateness is in it).
    from_send = [(s + l / 1e3 - t) * 1e3 for s, t, l, st in recs if st == 200]
    after = loadgen(a, srv, "r8", "server", 2, records=rec, qps=f"{0.8 * qps:.1f}", seed=103)
    recs = read_records(rec)
    first = [l for s, t, l, st in recs if st == 200 and s < 1.0]
    return {"qps": 2 * qps, "admitted_p99_ms": over["p99_ms"], "ok": over["ok"],
            "admitted_p99_from_send_ms": p99(from_send),
            "late_dispatches": over["late_dispatches"],
            "rejected": over["rejected"], "failed": over["failed"] + after["failed"],
            "deadline_503": len(late), "immediate_503": early,
            "late_p50_ms": statistics.median(late) if late else float("nan"),
            "late_max_ms": max(late) if late else float("nan"),
            "steady_p99_ms": steady["p99_ms"], "after_p99_ms": p99(first)}


def case_rollout(a, srv, state):
    qps = 0.8 * state["qps"]
    rec = os.path.join(a.work, "records.csv")
    before = srv.cli("deploy", "show", "r8", json_out=True)
    switches0 = before.get("status", {}).get("switches", 0)
    moves, gap = [], 3.0
    t0 = time.monotonic()

    def mover():
        for i, v in enumerate((2, 3, 1)):
            time.sleep(max(0.0, t0 + gap * (i + 1) - time.monotonic()))
            moves.append(time.monotonic() - t0)
            srv.cli("models", "alias", "r8", "production", str(v))

    th = threading.Thread(target=mover)
    th.start()
    r = loadgen(a, srv, "r8", "server", gap * 4, records=rec, qps=f"{qps:.1f}", seed=201)
    th.join()
    recs = read_records(rec)
    steady = [l for s, t, l, st in recs if st == 200 and 0.5 <= s < moves[0]]
    during = [l for s, t, l, st in recs if st == 200 and any(m <= s < m + 2.0 for m in moves)]
    after = srv.cli("deploy", "show", "r8", json_out=True)
    switches = after.get("status", {}).get("switches", 0) - switches0
    return {"qps": qps, "failed": r["failed"], "rejected": r["rejected"], "sent": r["sent"],
            "steady_p99_ms": p99(steady), "switch_p99_ms": p99(during),
            "ratio": p99(during) / p99(steady), "switches": switches}


# ---- report ----------------------------------------------------------------------------------


def cell(xs, fmt="{:.2f}"):
    xs = [x for x in xs if x == x]  # drop NaN
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0]) + " (1 round)"
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}-{fmt.format(max(xs))}]"


def report(rounds, markdown):
    def col(case, key):
        return [r[case][key] for r in rounds if case in r]

    rows = []
    if col("offline", "ratio"):
        rows.append(("Offline, ResNet-18: HTTP (dynamic batching, 1-row requests) / engine "
                     "batch 8, rows/s", cell(col("offline", "ratio"), "{:.1%}"), ">= 85%",
                     f"HTTP {cell(col('offline', 'http_rows_s'), '{:.1f}')} rows/s, engine "
                     f"{cell(col('offline', 'engine_rows_s'), '{:.1f}')}; rows per batch "
                     f"{cell(col('offline', 'rows_per_batch'), '{:.1f}')}; failed "
                     f"{sum(col('offline', 'failed'))}, rejected {sum(col('offline', 'rejected'))}"))
    if col("overhead", "overhead_p50_us"):
        rows.append(("HTTP overhead, MLP batch 1: p50 end to end - engine median (us)",
                     cell(col("overhead", "overhead_p50_us"), "{:.0f}"), "<= 100 us",
                     f"p50 {cell(col('overhead', 'http_p50_us'), '{:.0f}')} us, p99 "
                     f"{cell(col('overhead', 'http_p99_us'), '{:.0f}')} us, engine "
                     f"{cell(col('overhead', 'engine_us'), '{:.1f}')} us"))
    if col("server", "max_qps"):
        rows.append(("Server, ResNet-8: highest Poisson QPS with p99 <= 25 ms",
                     cell(col("server", "max_qps"), "{:.0f}"), "(report)",
                     f"engine batch-1 latency {cell(col('server', 'engine_b1_ms'), '{:.3f}')} ms "
                     f"(1 thread); {cell(col('server', 'trials'), '{:.0f}')} steps"))
    if col("overload", "admitted_p99_ms"):
        rows.append(("Overload at 2x: p99 of admitted requests (ms)",
                     cell(col("overload", "admitted_p99_ms")), f"<= {R8_TIMEOUT_MS} (timeout)",
                     f"from the send {cell(col('overload', 'admitted_p99_from_send_ms'))} ms; "
                     f"sent over 1 ms late {cell(col('overload', 'late_dispatches'), '{:.0f}')}; "
                     f"at {cell(col('overload', 'qps'), '{:.0f}')} QPS; ok "
                     f"{cell(col('overload', 'ok'), '{:.0f}')}, rejected "
                     f"{cell(col('overload', 'rejected'), '{:.0f}')} (at the deadline "
                     f"{cell(col('overload', 'deadline_503'), '{:.0f}')}, at once "
                     f"{cell(col('overload', 'immediate_503'), '{:.0f}')}), failed "
                     f"{sum(col('overload', 'failed'))}"))
        rows.append(("Overload at 2x: 503 answered after its deadline, median (ms)",
                     cell(col("overload", "late_p50_ms")), "<= 1",
                     f"max {cell(col('overload', 'late_max_ms'))} ms"))
        rows.append(("Load drops to 0.8x: p99 of the first second (ms)",
                     cell(col("overload", "after_p99_ms")), "~ steady",
                     f"steady 0.8x p99 {cell(col('overload', 'steady_p99_ms'))} ms"))
    if col("rollout", "ratio"):
        rows.append(("Rollout at 0.8x, 3 alias moves: failed requests",
                     str(sum(col("rollout", "failed"))), "0",
                     f"sent {cell(col('rollout', 'sent'), '{:.0f}')} per round, rejected "
                     f"{sum(col('rollout', 'rejected'))}, switches "
                     f"{cell(col('rollout', 'switches'), '{:.0f}')}"))
        rows.append(("Rollout: p99 in the 2 s after each move / steady p99",
                     cell(col("rollout", "ratio"), "{:.2f}x"), "<= 1.5x",
                     f"switch {cell(col('rollout', 'switch_p99_ms'))} ms, steady "
                     f"{cell(col('rollout', 'steady_p99_ms'))} ms"))
    hdr = ("case", f"median of {len(rounds)} rounds [min-max]", "floor", "detail")
    if markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in rows:
            print(f"{r[0]}\n    {r[1]}   (floor {r[2]})   {r[3]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dlsys", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--only", nargs="+",
                    default=["offline", "overhead", "server", "overload", "rollout"])
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="print each QPS step")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--pin", metavar="SERVER_CPUS:CLIENT_CPUS",
                    help="taskset CPU lists for the server and the load generator, e.g. 0:1")
    a = ap.parse_args()
    a.server_cpus = a.client_cpus = None
    a.threads = 2  # ResNet-18's threads and ResNet-8's instances
    if a.pin:
        if a.pin.count(":") != 1 or not all(a.pin.split(":")):
            die(f"--pin '{a.pin}': give the server's and the client's CPU lists, e.g. 0:1")
        a.server_cpus, a.client_cpus = a.pin.split(":")
        a.threads = min(2, cpu_count(a.server_cpus))
    a.dlsys = os.path.abspath(a.dlsys)
    a.work = tempfile.mkdtemp(prefix="dlsys-serve-bench-")
    need_r8 = any(c in a.only for c in ("server", "overload", "rollout"))
    if ("overload" in a.only or "rollout" in a.only) and "server" not in a.only:
        die("overload and rollout run at the QPS the server case finds: add 'server' to --only")
    srv = None
    try:
        for m in ("resnet18.onnx", "mlp.onnx"):
            if not os.path.exists(os.path.join(a.models, m)):
                die(f"{a.models}/{m} is missing: run scripts/export_models.py {a.models}")
            shutil.copy(os.path.join(a.models, m), os.path.join(a.work, m))
        if need_r8:
            for v in (1, 2, 3):
                make_resnet8(os.path.join(a.work, f"resnet8_v{v}.onnx"), v)
        srv = Server(a.dlsys, a.work, a.server_cpus, a.client_cpus)
        print(f"server {srv.url}, data {srv.data}", file=sys.stderr)
        if "offline" in a.only:
            srv.cli("models", "register", "r18", "--file", os.path.join(a.work, "resnet18.onnx"))
            srv.cli("deploy", "create", "r18", "--model", "r18@1", "--max-batch", "8",
                    "--max-delay-us", "2000", "--instances", "1", "--threads", str(a.threads),
                    "--timeout-ms", "10000")
        if "overhead" in a.only:
            srv.cli("models", "register", "mlp", "--file", os.path.join(a.work, "mlp.onnx"))
            srv.cli("deploy", "create", "mlp", "--model", "mlp@1", "--max-batch", "32",
                    "--max-delay-us", "0", "--instances", "1", "--threads", "1")
        if need_r8:
            for v in (1, 2, 3):
                srv.cli("models", "register", "r8", "--file",
                        os.path.join(a.work, f"resnet8_v{v}.onnx"))
            srv.cli("models", "alias", "r8", "production", "1")
            srv.cli("deploy", "create", "r8", "--model", "r8@production", "--max-batch", "16",
                    "--max-delay-us", "1000", "--instances", str(a.threads), "--threads", "1",
                    "--timeout-ms", str(R8_TIMEOUT_MS))
        rounds = []
        for i in range(a.rounds):
            r, state = {}, {}
            for case in ("offline", "overhead", "server", "overload", "rollout"):
                if case not in a.only:
                    continue
                t = time.monotonic()
                fn = globals()["case_" + case]
                r[case] = fn(a, srv, state) if case in ("server", "overload", "rollout") \
                    else fn(a, srv)
                print(f"round {i + 1} {case} ({time.monotonic() - t:.0f} s): "
                      f"{json.dumps(r[case])}", file=sys.stderr)
            rounds.append(r)
        report(rounds, a.markdown)
    finally:
        if srv:
            srv.stop()
        if a.keep:
            print(f"kept {a.work}", file=sys.stderr)
        else:
            shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
