#!/usr/bin/env python3
"""Reference training runs in PyTorch for tests/train/train_vs_torch_test.cpp.

Writes into OUT: the MLP's initial weights (torch layout, .npy), 20 fixed batches, and the loss
PyTorch reports at each of 20 steps for each optimizer setting. dlsys trains the same weights on
the same batches and must match these losses within 1e-4 relative.
Usage: /usr/bin/python3 scripts/torch_train_reference.py OUT_DIR
"""
import os
import sys

import numpy as np
import torch

STEPS, BATCH, IN, HIDDEN, CLASSES = 20, 16, 8, 16, 4

SETTINGS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(HIDDEN, CLASSES))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(STEPS, BATCH, IN)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(STEPS, BATCH)).astype(np.int64)
    np.save(f"{out}/x.npy", x)
    np.save(f"{out}/y.npy", y)
    m = model()
    for name, t in zip(["w1", "b1", "w2", "b2"], m.parameters()):
        np.save(f"{out}/{name}.npy", t.detach().numpy())
    for setting, make in SETTINGS.items():
        for clip in (False, True):
            m = model()
            opt = make(m.parameters())
            losses = []
            for s in range(STEPS):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(x[s])),
                                                         torch.from_numpy(y[s]))
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
                opt.step()
                losses.append(loss.item())
            tag = setting + ("_clip" if clip else "")
            np.save(f"{out}/loss_{tag}.npy", np.array(losses, dtype=np.float32))
    print(f"wrote reference training runs to {out}")


if __name__ == "__main__":
    main()
