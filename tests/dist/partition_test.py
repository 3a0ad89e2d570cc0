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
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_util import Machines, digits_mlp_spec, run_on  # noqa: E402

M = Machines("p" + str(os.getpid() % 100000), 2, "10.231.7")


def scenario(dlsys, shared, ranks, tmp):
    spec = digits_mlp_spec(os.path.join(tmp, "long.yaml"), shared,
                           "  epochs: 100000\n  batch_size: 16\n  seed: 1\n"
                           "  micro_batches: 2\n  optimizer: {name: sgd, lr: 0.01}\n")
    for r in (0, 1):
        ranks.start(M.names[r], [dlsys, "train", spec, "--rank", str(r), "--world-size", "2",
                                 "--rendezvous", f"tcp://{M.addrs[0]}:29511", "--dist-host",
                                 M.addrs[r], "--heartbeat-s", "2", "--threads", "1", "--out",
                                 os.path.join(tmp, f"run{r}"), "--json", "--log-every", "1",
                                 "--quiet"])
    # Rank 0's 20th step: both train over the veth.
    if not ranks.wait_for_steps(0, 20):
        print(f"FAIL: rank 0 made no 20 steps:\n{ranks.output(0)[-2000:]}\n"
              f"{ranks.output(1)[-2000:]}")
        return 1
    M.cut(1)
    cut = time.monotonic()
    ended = [None, None]
    while None in ended and time.monotonic() - cut < 30:
        for r in (0, 1):
            if ended[r] is None and ranks.procs[r].poll() is not None:
                ended[r] = time.monotonic() - cut
        time.sleep(0.02)
    ok = True
    for r in (0, 1):
        other = 1 - r
        out = ranks.output(r)
        named = f"rank {other} sent no heartbeat" in out
        if ended[r] is None:
            print(f"FAIL: rank {r} still ran 30 s after the cut")
            ok = False
            continue
        print(f"rank {r}: exit {ranks.procs[r].returncode} {ended[r]:.1f} s after the cut; "
              f"names rank {other} as silent: {named}")
        if ranks.procs[r].returncode == 0 or not named or ended[r] >= 10:
            print(out[-2000:])
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_on(M, lambda ranks, tmp: scenario(sys.argv[1], sys.argv[2], ranks, tmp)))
