#!/usr/bin/env python3
"""The digits MLP recipe of examples/digits/mlp.yaml in PyTorch, for bench/train/run.sh.

Same data file, an 80/20 split (seeded; PyTorch's own permutation, so other rows than dlsys's,
the same sizes), pixels scaled by 1/16, MLP 64-256-128-10 with nn.Linear's init, Adam(lr=1e-3),
batch 64, reshuffled every epoch, validation after every epoch. Prints one JSON object.
Usage: torch_digits.py DIGITS_CSV [--epochs N] [--target ACC] [--threads T]
"""
import argparse
import json
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--target", type=float, default=0.97)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = np.loadtxt(a.csv, delimiter=",", dtype=np.float32)
    x, y = data[:, :-1] / 16.0, data[:, -1].astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    nv = round(len(x) * 0.2)
    xv, yv = torch.from_numpy(x[perm[:nv]]), torch.from_numpy(y[perm[:nv]])
    xt, yt = torch.from_numpy(x[perm[nv:]]), torch.from_numpy(y[perm[nv:]])
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    samples, acc, epochs = 0, 0.0, 0
    for epoch in range(a.epochs):
        order = torch.randperm(len(xt))
        model.train()
        for b in range(0, len(xt), 64):
            idx = order[b:b + 64]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            samples += len(idx)
        model.eval()
        with torch.no_grad():
            acc = (model(xv).argmax(1) == yv).float().mean().item()
        epochs = epoch + 1
        if a.target > 0 and acc >= a.target:
            break
    secs = time.perf_counter() - t0
    print(json.dumps({"epochs": epochs, "seconds": secs, "val_accuracy": acc,
                      "samples_per_s": samples / secs}))


if __name__ == "__main__":
    main()
