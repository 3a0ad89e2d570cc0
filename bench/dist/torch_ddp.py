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
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn


def build(m):
    if len(m["input"]) == 3:
        c, h, w = m["input"]
        return nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * (h // 2) * (w // 2), 10))
    return nn.Sequential(nn.Linear(m["input"][0], 2048), nn.ReLU(), nn.Linear(2048, 2048),
                         nn.ReLU(), nn.Linear(2048, 10))


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
