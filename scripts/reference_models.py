"""The reference models dlsys is checked and benchmarked against, defined in PyTorch.

Imported by export_models.py (ONNX export + reference outputs) and bench/engine/torch_bench.py
(the PyTorch peer). Weights are random but seeded: nothing is downloaded.
"""
import math

import torch
import torch.nn as nn


class MLP(nn.Module):
    """64 -> 256 -> 128 -> 10 (the digits dataset's shape)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer written out so the export shows the usual pattern:
    Shape -> Gather -> Concat -> Reshape around multi-head attention, Erf-based GELU, LayerNorm."""

    def __init__(self, d, heads, ff):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.ln2 = nn.LayerNorm(d)
        self.act = nn.GELU()

    def forward(self, x):
        b, s, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q = q.reshape(b, s, h, d // h).transpose(1, 2)
        k = k.reshape(b, s, h, d // h).transpose(1, 2)
        v = v.reshape(b, s, h, d // h).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d // h)
        att = att.softmax(dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.proj(y))
        return self.ln2(x + self.ff2(self.act(self.ff1(x))))


class Encoder(nn.Module):
    """Token + position embeddings, N encoder layers, mean pooling, a classifier head."""

    def __init__(self, vocab=1000, d=256, heads=4, ff=1024, layers=4, max_len=512, classes=10):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
        self.layers = nn.ModuleList([EncoderLayer(d, heads, ff) for _ in range(layers)])
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(dim=1))


def randomize_batchnorm(model):
    """Random running statistics and affine parameters, so BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def build(name):
    """Returns (model in eval mode, example-input factory(batch), dynamic axes, input dtype)."""
    torch.manual_seed(0)
    if name == "mlp":
        m = MLP()
        return m.eval(), (lambda b: torch.randn(b, 64)), {0: "batch"}
    if name == "resnet18":
        import torchvision

        m = randomize_batchnorm(torchvision.models.resnet18(weights=None))
        return m.eval(), (lambda b: torch.randn(b, 3, 224, 224)), {0: "batch"}
    if name == "mobilenetv2":
        import torchvision

        m = randomize_batchnorm(torchvision.models.mobilenet_v2(weights=None))
        return m.eval(), (lambda b: torch.randn(b, 3, 224, 224)), {0: "batch"}
    if name == "encoder":
        m = Encoder()
        return m.eval(), (lambda b: torch.randint(0, 1000, (b, 128))), {0: "batch", 1: "seq"}
    raise ValueError(f"unknown model {name}")


# (file stem, model name, opset)
EXPORTS = [
    ("mlp", "mlp", 17),
    ("resnet18", "resnet18", 17),
    ("mobilenetv2", "mobilenetv2", 17),
    ("encoder_opset14", "encoder", 14),
    ("encoder_opset17", "encoder", 17),
]
