#!/usr/bin/python3
"""bench/dist/netns.py: data-parallel training between two "hosts" over real sockets, and the
overlap of gradient all-reduces with the backward pass; the cost model's inputs.

Two network namespaces made here (`ip netns`), joined by a link with addresses of its own at
RATE with a one-way DELAY: a veth pair shaped by `tc qdisc ... netem rate R delay D` where the
kernel has netem; else (`--shaper auto`, or `--shaper wire`) two TUN devices and
bench/dist/wire.py carrying the packets between them at the rate and delay (a userspace link:
about 0.1 ms of jitter, and CPU time of its own); `--shaper tbf` shapes a veth with a token
bucket at the rate (a 32 KiB burst, so that idle time is not banked as a burst at line speed,
which would hide any overlap) and adds no delay. 'none' is a veth, not shaped. The script says which.
Rank 0 runs in one namespace and rank 1 in the other, 1 thread each, rendezvous over the link.
Needs root. The namespaces are removed at the end, also after a failure.

Measured, rounds interleaved (median [min-max]):
  - dlsys with the buckets overlapped (train.overlap true, the default) and the same buckets
    all-reduced after the backward pass (overlap false): step time; from the overlap-false run,
    communication = its all-reduce time a step and compute = the rest of its step (forward,
    backward, optimizer, loader): nothing overlaps there. The issue's check:
    overlapped step <= 1.1 x max(compute, communication);
  - PyTorch DDP on Gloo across the same namespaces (torch_ddp.py --rank), samples/s;
  - the cost model's 2-worker prediction of the all-reduce time a step (docs/distributed.md)
    from the link dlsys measured when the ranks joined, against the measured one.

Usage: sudo bench/dist/netns.py [--dlsys build/dlsys] [--rounds 3] [--links 100mbit,1gbit,none]
       [--delay 0.2ms] [--shaper auto|netem|wire|tbf] [--model cnn] [--no-torch]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (MODELS, make_data, fmt)

NS = ("dlsys-bench-a", "dlsys-bench-b")
IF = ("dlsysbench0", "dlsysbench1")
ADDR = ("10.213.7.1", "10.213.7.2")


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


WIRE = []  # the wire.py process of the link in use


def teardown():
    for p in WIRE:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    WIRE.clear()
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)


def start_wire(rate, delay):
    """The userspace link (wire.py) between the namespaces; returns its first line."""
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "wire.py"), NS[0], IF[0], ADDR[0],
                          NS[1], IF[1], ADDR[1], "--rate", rate, "--delay", delay],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    WIRE.append(p)
    first = p.stdout.readline().strip()
    if not first.startswith("ready"):
        raise RuntimeError(f"wire.py did not start: {first}{p.stdout.read()}")
    return first


def setup(rate, delay, shaper="auto"):
    """The namespaces and the link between them (a veth not shaped when rate is None); returns
    how the link was made."""
    teardown()
    for ns in NS:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    if rate is not None and shaper == "wire":
        return "wire.py, " + start_wire(rate, delay)
    sh("ip", "link", "add", IF[0], "type", "veth", "peer", "name", IF[1])
    for i in (0, 1):
        sh("ip", "link", "set", IF[i], "netns", NS[i])
        sh("ip", "-n", NS[i], "addr", "add", ADDR[i] + "/24", "dev", IF[i])
        sh("ip", "-n", NS[i], "link", "set", IF[i], "up")
        sh("ip", "-n", NS[i], "link", "set", "lo", "up")
    if rate is None:
        return "veth, not shaped"
    how = None
    for i in (0, 1):
        if shaper == "tbf":
            sh("ip", "netns", "exec", NS[i], "tc", "qdisc", "replace", "dev", IF[i], "root", "tbf",
               "rate", rate, "burst", "32kb", "latency", "50ms")
            how = f"tbf rate {rate} burst 32kb (--shaper tbf: no delay added, the veth's own)"
            continue
        r = sh("ip", "netns", "exec", NS[i], "tc", "qdisc", "add", "dev", IF[i], "root", "netem",
               "rate", rate, "delay", delay, check=False)
        if r.returncode == 0:
            how = f"netem rate {rate} delay {delay}"
            continue
        if shaper == "netem":
            raise RuntimeError(f"netem: {r.stderr.strip()} (this kernel lacks it: --shaper auto "
                               "uses wire.py instead)")
        if shaper == "auto":
            # No netem in this kernel (CONFIG_NET_SCH_NETEM): the userspace link instead.
            sh("ip", "link", "del", IF[0], check=False)
            sh("ip", "netns", "exec", NS[0], "ip", "link", "del", IF[0], check=False)
            return (f"wire.py (this kernel has no netem: {r.stderr.strip()}), " +
                    start_wire(rate, delay))
    return how


PORTS = iter(range(29500, 29900))


def finish(procs, timeout=900):
    """The outputs of a pair of ranks; on a deadline passed (a link that broke: is wire.py
    still running?) every rank is killed, so that none keeps a namespace alive."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        alive = "" if not WIRE or WIRE[0].poll() is None else " (wire.py had ended)"
        sys.exit(f"the ranks did not finish within {timeout} s{alive}: killed")


def dlsys_pair(dlsys, spec, tmp, extra):
    """Rank 0 in namespace a, rank 1 in b; rank 0's done event."""
    port = next(PORTS)
    procs = []
    for r in (0, 1):
        out = os.path.join(tmp, f"ns-run-{r}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["ip", "netns", "exec", NS[r], dlsys, "train", spec, "--rank", str(r),
               "--world-size", "2", "--rendezvous", f"tcp://{ADDR[0]}:{port}", "--dist-host",
               ADDR[r], "--threads", "1", "--json", "--out", out, "--set", "micro_batches=2"]
        for e in extra:
            cmd += ["--set", e]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=dict(os.environ, OMP_WAIT_POLICY="passive")))
    outs = finish(procs)
    if any(p.returncode != 0 for p in procs):
        sys.exit("dlsys train across the namespaces failed:\n" + "\n".join(outs))
    events = [json.loads(l) for l in outs[0].splitlines() if l.startswith("{")]
    return [e for e in events if e.get("event") == "done"][-1]


def torch_pair(m):
    port = next(PORTS)
    procs = []
    for r in (0, 1):
        cmd = ["ip", "netns", "exec", NS[r], sys.executable, os.path.join(HERE, "torch_ddp.py"),
               "--workers", "2", "--port", str(port), "--model", json.dumps(m), "--rank", str(r),
               "--master-addr", ADDR[0], "--ifname", IF[r]]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outs = finish(procs)
    if any(p.returncode != 0 for p in procs):
        sys.exit("torch DDP across the namespaces failed:\n" + "\n".join(outs))
    return float(outs[0].strip().splitlines()[-1])


def per_step(done):
    d, s = done["distributed"], done["steps"]
    return {"step": done["seconds"] / s, "allreduce": d["allreduce_s"] / s,
            "exposed": d["exposed_allreduce_s"] / s, "buckets": d["buckets"],
            "bytes": d["gradient_bytes"], "sizes": d["bucket_sizes"],
            "times": [t / s for t in d["bucket_seconds"]]}


def fit_link(rows):
    """latency (one all-reduce of 2 ranks: two message phases) and bandwidth from the buckets'
    own times, t_b = latency + n_b / bandwidth, least squares over every bucket of every round."""
    pts = [(n, t) for r in rows for n, t in zip(r["sizes"], r["times"])]
    if len({n for n, _ in pts}) < 2:
        return None
    mn = statistics.fmean(n for n, _ in pts)
    mt = statistics.fmean(t for _, t in pts)
    slope = (sum((n - mn) * (t - mt) for n, t in pts) / sum((n - mn) ** 2 for n, _ in pts))
    if slope <= 0:
        return None
    return max(mt - slope * mn, 0.0), 1.0 / slope


def allreduce_time(w, n, latency2, bandwidth):
    """Recursive halving and doubling on w ranks (a power of two): 2 log2(w) message phases
    of latency2 / 2 each, and 2 (w - 1) / w x n bytes through each rank's link."""
    return 2 * (w.bit_length() - 1) * latency2 / 2 + 2 * (w - 1) / w * n / bandwidth


def cost_model(sizes, latency2, c, h):
    """A step on w ranks (weak scaling: the per-rank batch of the 2-worker run): compute c, then
    the all-reduce time the window h (backward compute after the first bucket is ready) did not
    hide, at least the last bucket's."""
    def step(w, bw):
        times = [allreduce_time(w, n, latency2, bw) for n in sizes]
        exposed = max(sum(times) - h, times[-1])
        return c + exposed, sum(times), exposed
    return step


def measure(a, dlsys, spec, tmp, m):
    on, off, one, torch = [], [], [], []
    kib = f"bucket_kib={a.bucket_kib}"
    for r in range(a.rounds):
        on.append(per_step(dlsys_pair(dlsys, spec, tmp, ["overlap=true", kib])))
        off.append(per_step(dlsys_pair(dlsys, spec, tmp, ["overlap=false", kib])))
        one.append(per_step(dlsys_pair(dlsys, spec, tmp, ["overlap=false", "bucket_kib=1048576"])))
        if not a.no_torch:
            torch.append(torch_pair(m))
        print(f"  round {r + 1}: step {on[-1]['step'] * 1e3:.1f} ms overlapped, "
              f"{off[-1]['step'] * 1e3:.1f} ms after the backward pass" +
              (f"; torch {torch[-1]:.0f} samples/s" if torch else ""), file=sys.stderr)
    return on, off, one, torch


def ms(rows, k):
    return run.fmt([x[k] * 1e3 for x in rows])


def report(m, on, off, one, torch):
    """Prints one link's figures; returns the compute and hidden window (medians), the fitted
    link (or None) and the bucket sizes."""
    rounds = len(on)
    comm = [x["allreduce"] for x in off]
    compute = [x["step"] - x["exposed"] for x in off]
    ratio = [on[i]["step"] / max(compute[i], comm[i]) for i in range(rounds)]
    no = [off[i]["step"] / max(compute[i], comm[i]) for i in range(rounds)]
    print(f"  {on[0]['buckets']} gradient buckets ({', '.join(str(b // 1000) for b in on[0]['sizes'])}"
          f" kB), {on[0]['bytes'] / 1e3:.0f} kB a step; per step, ms, median [min-max]:")
    print(f"  overlapped (train.overlap true): step {ms(on, 'step')}, all-reduce "
          f"{ms(on, 'allreduce')} of which not hidden {ms(on, 'exposed')}")
    print(f"  after the backward pass (false): step {ms(off, 'step')}, all-reduce "
          f"{ms(off, 'allreduce')}")
    print(f"  compute (the false run's step less its all-reduce) "
          f"{run.fmt([c * 1e3 for c in compute])}, communication {run.fmt([c * 1e3 for c in comm])}")
    print(f"  step / max(compute, communication): overlapped {statistics.median(ratio):.3f} "
          f"[{min(ratio):.3f}-{max(ratio):.3f}] (issue: <= 1.1), without the overlap "
          f"{statistics.median(no):.3f} [{min(no):.3f}-{max(no):.3f}]")
    dl = [m["batch"] / x["step"] for x in on]
    print(f"  samples/s at 2 workers: dlsys {run.fmt(dl)}" +
          (f", PyTorch DDP {run.fmt(torch)}; dlsys / PyTorch "
           f"{statistics.median([dl[i] / torch[i] for i in range(rounds)]):.2f}x" if torch else ""))
    # The cost model (docs/distributed.md), fitted to the buckets' own times in the runs
    # without overlap, checked on what it did not see: one bucket of the whole gradient, and the
    # overlapped run's exposed all-reduce.
    fit = fit_link(off)
    c = statistics.median(compute)
    h = statistics.median([x["allreduce"] - x["exposed"] for x in on])
    if fit is None:
        print("  cost model: the buckets have one size; nothing to fit")
        return c, h, None, off[0]["sizes"]
    lat2, bw = fit
    step = cost_model(off[0]["sizes"], lat2, c, h)
    whole = allreduce_time(2, sum(off[0]["sizes"]), lat2, bw)
    print(f"  cost model fitted to the buckets' times: an all-reduce of n bytes on 2 ranks takes "
          f"{lat2 * 1e6:.0f} us + n / {bw / 1e6:.1f} MB/s")
    print(f"    check, one bucket of the whole gradient: predicted {whole * 1e3:.2f} ms, measured "
          f"{ms(one, 'allreduce')}")
    print(f"    check, the overlapped step: predicted {step(2, bw)[0] * 1e3:.2f} ms (not hidden "
          f"{step(2, bw)[2] * 1e3:.2f}), measured {ms(on, 'step')} (not hidden {ms(on, 'exposed')})")
    return c, h, fit, off[0]["sizes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dlsys", default="build/dlsys")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--links", default="100mbit,1gbit,none",
                    help="rates of the link, in order ('none': a veth, not shaped)")
    ap.add_argument("--delay", default="0.2ms", help="one-way delay (netem and wire.py)")
    ap.add_argument("--shaper", default="auto", choices=("auto", "netem", "wire", "tbf"),
                    help="auto: netem where the kernel has it, else wire.py")
    ap.add_argument("--model", default="cnn", choices=sorted(run.MODELS))
    ap.add_argument("--bucket-kib", default="64",
                    help="train.bucket_kib of every run (buckets of several sizes: the model's fit)")
    ap.add_argument("--no-torch", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/dist/netns.py makes network namespaces: run it as root")
    for tool in ("ip", "tc") if a.shaper != "wire" else ("ip",):
        if not shutil.which(tool):
            sys.exit(f"'{tool}' is missing: scripts/install-deps.sh installs iproute2")
    dlsys = os.path.abspath(a.dlsys)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    m = run.MODELS[a.model]
    print(f"CPU: {cpu} ({os.cpu_count()} cores); model {a.model}, global batch {m['batch']}, "
          f"2 ranks in 2 network namespaces, 1 thread each, train.bucket_kib {a.bucket_kib}; "
          f"{a.rounds} rounds")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = run.make_data(tmp, a.model, m)
        for link in a.links.split(","):
            try:
                how = setup(None if link == "none" else link, a.delay, a.shaper)
                print(f"\nlink: {how}")
                rows = measure(a, dlsys, spec, tmp, m)
            finally:
                teardown()
            results.append((link, report(m, *rows)))
    # The table: the window and compute of the first link (the default's, 100mbit, is the
    # communication-heavy one), the latency fitted on
    # the unshaped one (the software's own: Gloo, TCP, the threads), each link's bandwidth.
    c, h, _, sizes = results[0][1]
    fitted = [(link, r[2]) for link, r in results if r[2]]
    if not fitted:
        return
    link, (lat2, _) = fitted[-1]
    print(f"\ncost model, the same per-rank batch on W workers (compute {c * 1e3:.2f} ms a step, "
          f"{h * 1e3:.2f} ms of it after the first bucket; latency {lat2 * 1e6:.0f} us a 2-rank "
          f"all-reduce, as fitted on the {link} link):")
    print("    link        W   all-reduce ms   not hidden ms   step ms   efficiency")
    step = cost_model(sizes, lat2, c, h)
    for gbit in (10, 100):
        for w in (2, 4, 8, 16, 32, 64):
            st, total, exposed = step(w, gbit * 1e9 / 8)
            print(f"    {gbit:>3} Gbit/s {w:>3}   {total * 1e3:>12.3f}   {exposed * 1e3:>13.3f}   "
                  f"{st * 1e3:>7.2f}   {c / st:>10.3f}")


if __name__ == "__main__":
    main()
