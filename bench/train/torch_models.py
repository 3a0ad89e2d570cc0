#!/usr/bin/env python3
"""PyTorch twins of bench/train/resnet8.yaml and bench/train/encoder.yaml: the same layers,
shapes, batch sizes, optimizers and random batches as bench/train/train_step_bench, timed the
same way (warm-up steps, then ROUNDS rounds of STEPS steps: forward, cross-entropy, backward,
optimizer step). Prints one JSON line with the median samples/s.
Usage: /usr/bin/python3 bench/train/torch_models.py resnet8|encoder [--steps 20] [--rounds 5]
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, layers, shortcut=None):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x):
        return self.shortcut(x) + self.layers(x)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        n, s, d = x.shape
        split = lambda t: t.view(n, s, self.h, d // self.h).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.h) ** 0.5, dim=-1)
        return self.out((a @ v).transpose(1, 2).reshape(n, s, d))


def conv_bn(cin, cout, stride=1, k=3):
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout)]


def resnet8():
    def block(cin, cout, stride):
        sc = conv_bn(cin, cout, stride, 1) if stride != 1 else None
        return [Residual(conv_bn(cin, cout, stride) + [nn.ReLU()] + conv_bn(cout, cout), sc),
                nn.ReLU()]
    return nn.Sequential(*conv_bn(3, 16), nn.ReLU(), *block(16, 16, 1), *block(16, 32, 2),
                         *block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10))


class MeanPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=1)


def encoder():
    layers = [nn.Embedding(1000, 256)]
    for _ in range(4):
        layers += [Residual([nn.LayerNorm(256), Attention(256, 4)]),
                   Residual([nn.LayerNorm(256), nn.Linear(256, 1024), nn.GELU(),
                             nn.Linear(1024, 256)])]
    return nn.Sequential(*layers, MeanPool(), nn.Linear(256, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["resnet8", "encoder"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true",
                    help="mixed precision: the forward pass under torch.autocast('cpu', bfloat16)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model == "resnet8":
        m, batch = resnet8(), 64
        x = torch.randn(batch, 3, 32, 32)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    else:
        m, batch = encoder(), 8
        x = torch.randint(0, 1000, (batch, 128))
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    y = torch.arange(batch) % 10
    m.train()

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
            loss = nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    rounds = []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        rounds.append(batch * a.steps / (time.perf_counter() - t0))
    print(json.dumps({"model": a.model, "precision": "bf16" if a.bf16 else "fp32",
                      "batch": batch, "steps": a.steps,
                      "samples_per_s": round(statistics.median(rounds), 2),
                      "rounds": [round(r, 2) for r in rounds]}))


if __name__ == "__main__":
    main()
