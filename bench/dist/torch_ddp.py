#!/usr/bin/python3
"""PyTorch DDP on Gloo, the peer of bench/dist/run.py: N processes on loopback, 1 thread each,
the model of run.py's MODELS entry (given as JSON), random data of its shape, SGD with momentum;
the global batch split evenly over the ranks. Prints the samples/s of the global batch over the
steps after 5 warm-up steps (rank 0).

With --rank R --master-addr A [--ifname IF], runs that one rank in this process (bench/dist/
netns.py starts one per network namespace); rank 0 prints."""
import argparse
import json
import os
import re
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def build(m):
    """The model of the MODELS entry's dlsys layer list (linear, conv2d, relu, maxpool, flatten),
    with dlsys's defaults (bias on, kernel 3, padding 0, stride 1)."""
    shape = list(m["input"])
    layers = []
    for line in m["layers"].splitlines():
        mt = re.match(r"\s*-\s*(\w+)(?::\s*\{(.*)\})?\s*$", line)
        if not mt:
            continue
        kind = mt.group(1)
        args = dict(kv.split(":") for kv in (mt.group(2) or "").replace(" ", "").split(",") if kv)
        args = {k: int(v) for k, v in args.items()}
        if kind == "conv2d":
            k, pad = args.get("kernel", 3), args.get("padding", 0)
            layers.append(nn.Conv2d(shape[0], args["out"], k, padding=pad))
            shape = [args["out"], shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1]
        elif kind == "maxpool":
            k = args.get("kernel", 2)
            layers.append(nn.MaxPool2d(k))
            shape = [shape[0], shape[1] // k, shape[2] // k]
        elif kind == "relu":
            layers.append(nn.ReLU())
        elif kind == "flatten":
            layers.append(nn.Flatten())
            shape = [shape[0] * shape[1] * shape[2]]
        elif kind == "linear":
            layers.append(nn.Linear(shape[0], args["out"]))
            shape = [args["out"]]
        else:
            raise SystemExit(f"torch_ddp.py: no PyTorch form for the layer '{kind}'")
    return nn.Sequential(*layers)


def worker(rank, workers, port, m, out, master="127.0.0.1"):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = master
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=workers)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(build(m))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    per = m["batch"] // workers
    g = torch.Generator().manual_seed(rank)
    x = torch.randn((per, *m["input"]), generator=g)
    y = torch.randint(0, 10, (per,), generator=g)
    warm, steps = 5, m["steps"]
    for i in range(warm + steps):
        if i == warm:
            dist.barrier()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    dist.barrier()
    secs = time.perf_counter() - t0
    if rank == 0:
        out.put(steps * m["batch"] / secs)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rank", type=int, default=-1)
    ap.add_argument("--master-addr", default="127.0.0.1")
    ap.add_argument("--ifname", default="")
    a = ap.parse_args()
    m = json.loads(a.model)
    if a.rank >= 0:
        if a.ifname:
            os.environ["GLOO_SOCKET_IFNAME"] = a.ifname

        class Printer:
            def put(self, v):
                print(v, flush=True)
        worker(a.rank, a.workers, a.port, m, Printer(), a.master_addr)
        return
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    mp.start_processes(worker, args=(a.workers, a.port, m, q), nprocs=a.workers, join=True,
                       start_method="spawn")
    print(q.get())


if __name__ == "__main__":
    main()
