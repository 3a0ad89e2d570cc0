#!/usr/bin/python3
"""Four ranks on four "machines" (network namespaces made here, joined by a bridge), started
one by one with --min-workers 2 and a file:// rendezvous in a folder they all reach (the shared
storage of a cluster). Rank 3's link is cut in the middle of the run (no packet, no reset): the
heartbeats of all four give up on someone, and all four come back to re-form the group, rank 3
included, for it still reaches the shared folder. The others found rank 3 silent, rank 3 found
one of them silent: the majority leaves rank 3 out. Ranks 0 and 1 go on as a group of 2 (4
micro-batches) from the newest checkpoint to the end, rank 2 is not needed, and rank 3 leaves
saying it was cut off. The model is the same bytes as one process's.

Needs root and `ip` (iproute2, scripts/install-deps.sh); otherwise it is skipped (exit 77).
The namespaces are removed at the end, also after a failure.

Usage: partition_reform_test.py DLSYS SHARED_DIR
"""
import hashlib
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_util import Machines, digits_mlp_spec, run_on  # noqa: E402

M = Machines("r" + str(os.getpid() % 100000), 4, "10.231.8")


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def scenario(dlsys, shared, ranks, tmp):
    spec = digits_mlp_spec(os.path.join(tmp, "elastic.yaml"), shared,
                           "  epochs: 6\n  batch_size: 16\n  seed: 4\n  micro_batches: 4\n"
                           "  checkpoint_every: 25\n"
                           "  optimizer: {name: sgd, lr: 0.01, momentum: 0.9}\n")
    plain = subprocess.run([dlsys, "train", spec, "--out", os.path.join(tmp, "plain"), "--quiet"],
                           capture_output=True, text=True, timeout=60)
    if plain.returncode != 0:
        print(f"FAIL: the plain run failed:\n{plain.stdout}\n{plain.stderr}")
        return 1
    want = sha(os.path.join(tmp, "plain", "model.onnx"))
    out = os.path.join(tmp, "out")
    for r in range(4):
        ranks.start(M.names[r], [dlsys, "train", spec, "--rank", str(r), "--world-size", "4",
                                 "--rendezvous", "file://" + os.path.join(tmp, "rv"),
                                 "--dist-host", M.addrs[r], "--min-workers", "2",
                                 "--heartbeat-s", "2", "--threads", "1", "--out", out, "--json",
                                 "--log-every", "1"])
    # Past the first checkpoint (step 25), all four training over the bridge.
    if not ranks.wait_for_steps(0, 40):
        print(f"FAIL: rank 0 made no 40 steps:\n{ranks.output(0)[-2000:]}")
        return 1
    M.cut(3)
    cut = time.monotonic()
    for p in ranks.procs:
        try:
            p.wait(timeout=max(1, 60 - (time.monotonic() - cut)))
        except subprocess.TimeoutExpired:
            pass
    took = time.monotonic() - cut
    ok = True
    expect = {0: (0, "continuing as rank 0 of 2 (generation 1; ranks 0,1 of the first"),
              1: (0, "continuing as rank 1 of 2 (generation 1; ranks 0,1 of the first"),
              2: (0, "rank 2 is not needed in generation 1"),
              3: (1, "rank 3 was silent to most of the others")}
    for r, (code, text) in expect.items():
        got = ranks.procs[r].poll()
        print(f"rank {r}: exit {got}; says '{text}': {text in ranks.output(r)}")
        if got != code or text not in ranks.output(r):
            print(ranks.output(r)[-3000:])
            ok = False
    model = os.path.join(out, "model.onnx")
    same = os.path.exists(model) and sha(model) == want
    print(f"all ended {took:.1f} s after the cut; the model is one process's: {same}")
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(run_on(M, lambda ranks, tmp: scenario(sys.argv[1], sys.argv[2], ranks, tmp)))
