#!/usr/bin/python3
"""Two ranks on two "machines" (network namespaces made here, joined by a veth pair), training
over real sockets; then the link is cut (`ip link set down`: no packet, no reset, the sockets
stay open, as when a machine loses its network). Each rank must fail within 10 s of the cut
naming the other as silent by its heartbeat, not after the collective's 60 s timeout.

Needs root and `ip` (iproute2, scripts/install-deps.sh); otherwise it is skipped (exit 77).
The namespaces are removed at the end, also after a failure.

Usage: partition_test.py DLSYS SHARED_DIR
"""
import os
import subprocess
import sys
import tempfile
import time

TAG = str(os.getpid() % 100000)
NS = [f"dlsys-p{TAG}-a", f"dlsys-p{TAG}-b"]
IF = [f"dlp{TAG}a", f"dlp{TAG}b"]
ADDR = ["10.231.7.1", "10.231.7.2"]


def sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r


def teardown():
    for ns in NS:
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", IF[0], check=False)  # a veth not yet moved into its namespace


def setup():
    for ns in NS:
        sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", IF[0], "type", "veth", "peer", "name", IF[1])
    for i in (0, 1):
        sh("ip", "link", "set", IF[i], "netns", NS[i])
        sh("ip", "-n", NS[i], "addr", "add", ADDR[i] + "/24", "dev", IF[i])
        sh("ip", "-n", NS[i], "link", "set", IF[i], "up")
        sh("ip", "-n", NS[i], "link", "set", "lo", "up")


def main():
    dlsys, shared = sys.argv[1], sys.argv[2]
    if os.geteuid() != 0:
        print("skipped: network namespaces need root")
        return 77
    try:
        setup()
    except (RuntimeError, FileNotFoundError) as e:
        teardown()
        print(f"skipped: cannot make network namespaces here: {e}")
        return 77
    procs, logs = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = os.path.join(tmp, "long.yaml")
            with open(spec, "w") as f:
                f.write(f"data: {{train: {shared}/data/digits/digits.csv, feature_scale: 0.0625, "
                        "validation_fraction: 0.2, split_seed: 0}\n"
                        "model:\n  input: [64]\n  layers:\n    - linear: {out: 32}\n    - relu\n"
                        "    - linear: {out: 10}\n"
                        "train:\n  epochs: 100000\n  batch_size: 16\n  seed: 1\n"
                        "  micro_batches: 2\n  optimizer: {name: sgd, lr: 0.01}\n")
            for r in (0, 1):
                cmd = ["ip", "netns", "exec", NS[r], dlsys, "train", spec, "--rank", str(r),
                       "--world-size", "2", "--rendezvous", f"tcp://{ADDR[0]}:29511",
                       "--dist-host", ADDR[r], "--heartbeat-s", "2", "--threads", "1",
                       "--out", os.path.join(tmp, f"run{r}"), "--json", "--log-every", "1",
                       "--quiet"]
                # Each rank's output to a file: a full pipe would stall a rank (a false "hang").
                logs.append(open(os.path.join(tmp, f"rank{r}.log"), "w+"))
                procs.append(subprocess.Popen(cmd, stdout=logs[r], stderr=subprocess.STDOUT))
            # Rank 0's 20th step: both train over the veth.
            def output(r):
                logs[r].flush()
                with open(logs[r].name) as f:
                    return f.read()
            deadline = time.monotonic() + 60
            while output(0).count('"event":"step"') < 20:
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    print(f"FAIL: rank 0 made no 20 steps:\n{output(0)[-2000:]}\n{output(1)[-2000:]}")
                    return 1
                time.sleep(0.05)
            sh("ip", "-n", NS[1], "link", "set", IF[1], "down")
            cut = time.monotonic()
            ended = [None, None]
            while None in ended and time.monotonic() - cut < 30:
                for r in (0, 1):
                    if ended[r] is None and procs[r].poll() is not None:
                        ended[r] = time.monotonic() - cut
                time.sleep(0.02)
            ok = True
            for r in (0, 1):
                other = 1 - r
                out = output(r)
                named = f"rank {other} sent no heartbeat" in out
                if ended[r] is None:
                    print(f"FAIL: rank {r} still ran 30 s after the cut")
                    ok = False
                    continue
                print(f"rank {r}: exit {procs[r].returncode} {ended[r]:.1f} s after the cut; "
                      f"names rank {other} as silent: {named}")
                if procs[r].returncode == 0 or not named or ended[r] >= 10:
                    print(out[-2000:])
                    ok = False
            return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        teardown()


if __name__ == "__main__":
    sys.exit(main())
