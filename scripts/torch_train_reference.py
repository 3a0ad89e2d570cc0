#!/usr/bin/env python3
"""Reference training runs in PyTorch for tests/train/train_vs_torch_test.cpp.

Writes into OUT: the MLP's initial weights (torch layout, .npy), 20 fixed batches, and the loss
PyTorch reports at each of 20 steps for each optimizer setting. dlsys trains the same weights on
the same batches and must match these losses within 1e-4 relative.

Also, under OUT/cnn and OUT/encoder, the same for two models that dlsys builds from spec layers
(tests/train/layers_vs_torch_test.cpp): a CNN with BatchNorm, max pooling and a grouped strided
convolution, and a pre-norm transformer encoder block (LayerNorm, 2-head self-attention, GELU
MLP, residuals, mean pooling). Each: initial weights named as dlsys names them, 20 batches, the
losses under SGD with momentum and under Adam, the parameters and running statistics after the
20 Adam steps, and eval-mode logits on one more batch.
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
    layer_models(out)
    print(f"wrote reference training runs to {out}")


class Residual(torch.nn.Module):
    def __init__(self, *layers):
        super().__init__()
        for i, l in enumerate(layers):
            self.add_module(str(i), l)

    def forward(self, x):
        y = x
        for l in self.children():
            y = l(y)
        return x + y


class Attention(torch.nn.Module):
    """Multi-head self-attention with separate q, k, v and output projections (as dlsys)."""

    def __init__(self, d, heads):
        super().__init__()
        self.h, self.d = heads, d
        self.q, self.k, self.v, self.out = (torch.nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        n, s, d = x.shape
        split = lambda t: t.view(n, s, self.h, d // self.h).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, dim=-1)
        return self.out((a @ v).transpose(1, 2).reshape(n, s, d))


class MeanPool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=1)


def cnn():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),
        torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
        torch.nn.Linear(16, 10))


def encoder():
    torch.manual_seed(2)
    return torch.nn.Sequential(
        Residual(torch.nn.LayerNorm(8), Attention(8, 2)),
        Residual(torch.nn.LayerNorm(8), torch.nn.Linear(8, 16), torch.nn.GELU(),
                 torch.nn.Linear(16, 8)),
        MeanPool(), torch.nn.Linear(8, 4))


def layer_models(out):
    for name, make, shape, classes in (("cnn", cnn, (3, 8, 8), 10),
                                       ("encoder", encoder, (6, 8), 4)):
        d = f"{out}/{name}"
        os.makedirs(d, exist_ok=True)
        rng = np.random.default_rng(11)
        x = rng.normal(size=(STEPS + 1, BATCH) + shape).astype(np.float32)
        y = rng.integers(0, classes, size=(STEPS + 1, BATCH)).astype(np.int64)
        np.save(f"{d}/x.npy", x)
        np.save(f"{d}/y.npy", y)
        for k, t in make().state_dict().items():
            if not k.endswith("num_batches_tracked"):
                np.save(f"{d}/init.layers.{k}.npy", t.numpy())
        for opt_name, opt_make in (
                ("sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
                ("adam", lambda p: torch.optim.Adam(p, lr=0.01))):
            m = make()
            m.train()
            opt = opt_make(m.parameters())
            losses = []
            for s in range(STEPS):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(x[s])),
                                                         torch.from_numpy(y[s]))
                loss.backward()
                opt.step()
                losses.append(loss.item())
            np.save(f"{d}/loss_{opt_name}.npy", np.array(losses, dtype=np.float32))
        # After the Adam run: the state and the eval-mode logits of the last batch.
        for k, t in m.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                np.save(f"{d}/final.layers.{k}.npy", t.numpy())
        m.eval()
        with torch.no_grad():
            np.save(f"{d}/eval_logits.npy", m(torch.from_numpy(x[STEPS])).numpy())


if __name__ == "__main__":
    main()
