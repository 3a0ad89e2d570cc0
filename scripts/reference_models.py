"""The reference models dlsys is checked and benchmarked against, defined in PyTorch.

Imported by export_models.py (ONNX export + reference outputs) and bench/engine/torch_bench.py
(the PyTorch peer). Weights are random but seeded: nothing is downloaded.
"""
import math
from typing import List

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


class SeqClassifier(nn.Module):
    """A 2-layer bidirectional LSTM or GRU over [batch, seq, 16] features (batch first), the last
    step's output -> 10 classes: ONNX LSTM/GRU nodes, both directions, stacked."""

    def __init__(self, kind):
        super().__init__()
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(16, 32, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class TinyUNet(nn.Module):
    """A U-Net-style segmenter on 3x32x32: two max-pool downsamplings, then Resize back up
    (bilinear by scale, nearest to the skip's size, bicubic with align_corners) with skip
    concatenations, 2 output channels per pixel."""

    def __init__(self):
        super().__init__()
        self.e1 = nn.Conv2d(3, 8, 3, padding=1)
        self.e2 = nn.Conv2d(8, 16, 3, padding=1)
        self.e3 = nn.Conv2d(16, 32, 3, padding=1)
        self.d2 = nn.Conv2d(32 + 16, 16, 3, padding=1)
        self.d1 = nn.Conv2d(16 + 8, 8, 3, padding=1)
        self.out = nn.Conv2d(8 + 8, 2, 1)

    def forward(self, x):
        import torch.nn.functional as F
        a = F.relu(self.e1(x))
        b = F.relu(self.e2(F.max_pool2d(a, 2)))
        c = F.relu(self.e3(F.max_pool2d(b, 2)))
        u2 = F.interpolate(c, scale_factor=2.0, mode="bilinear", align_corners=False)
        d2 = F.relu(self.d2(torch.cat([u2, b], 1)))
        u1 = F.interpolate(d2, size=a.shape[-2:], mode="nearest")
        d1 = F.relu(self.d1(torch.cat([u1, a], 1)))
        sharp = F.interpolate(F.avg_pool2d(d1, 2), scale_factor=2.0, mode="bicubic",
                              align_corners=True)
        return self.out(torch.cat([d1, sharp], 1))


class ScriptedControl(nn.Module):
    """Scripted, not traced: torch.onnx.export keeps its `for` (a Loop whose trip count is the
    sequence length, read from the input's shape) and its `if` on a tensor value (an If whose
    branches differ) instead of unrolling them. The condition reads the first row only, so that
    every row's answer does not depend on the rest of the batch."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(16, 16)
        self.inp = nn.Linear(8, 16)
        self.pos = nn.Linear(16, 4)
        self.neg = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.zeros(x.size(0), 16)
        for t in range(x.size(1)):
            h = torch.tanh(self.cell(h) + self.inp(x[:, t]))
        if bool(h[0].sum() > 0):
            y = self.pos(h)
        else:
            y = self.neg(h) * 2.0
        return y


class GreedyDecoder(nn.Module):
    """Scripted greedy decoding, the shape of a seq2seq decoder's inference loop: from an encoder
    state x [B, 8], feed the last token back, take the argmax as the next one, append it with
    torch.cat (a Loop-carried tensor that grows by one column per iteration), and stop when every
    row has produced EOS (token 1; a `break`, which the export turns into the Loop's condition).
    Rows that are done emit PAD (0). At most 12 steps."""

    def __init__(self):
        super().__init__()
        self.init = nn.Linear(8, 16)
        self.emb = nn.Embedding(10, 16)
        self.cell = nn.Linear(32, 16)
        self.out = nn.Linear(16, 10)
        with torch.no_grad():
            self.out.bias[1] += 0.2  # EOS within a few steps

    def forward(self, x):
        h = torch.tanh(self.init(x))
        tok = torch.full((x.size(0), 1), 2, dtype=torch.long)  # BOS
        seq = tok
        done = torch.zeros(x.size(0), 1, dtype=torch.bool)
        for _ in range(12):
            h = torch.tanh(self.cell(torch.cat([self.emb(tok[:, 0]), h], 1)))
            nxt = self.out(h).argmax(1, keepdim=True)
            tok = nxt.masked_fill(done, 0)
            seq = torch.cat([seq, tok], 1)
            done = done | (tok == 1)
            if bool(done.all()):
                break
        return seq


class DetectorHead(nn.Module):
    """A one-image detector head: a small conv backbone, per-cell box deltas and a score on an
    8x8 anchor grid, then torchvision's nms (exported as NonMaxSuppression on boxes the network
    computed) and the kept boxes with their scores, [kept, 5]."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1),
                                      nn.ReLU())
        self.box = nn.Conv2d(16, 4, 1)
        self.score = nn.Conv2d(16, 1, 1)
        c = (torch.arange(8, dtype=torch.float32) + 0.5) * 4.0
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        self.register_buffer("centers", torch.stack([cx.reshape(-1), cy.reshape(-1)], 1))

    def forward(self, x):
        import torchvision

        f = self.backbone(x)
        d = self.box(f)[0].permute(1, 2, 0).reshape(-1, 4)
        s = torch.sigmoid(self.score(f)[0].reshape(-1))
        ctr = self.centers + d[:, :2] * 2.0
        half = 4.0 * torch.exp(torch.tanh(d[:, 2:]))
        boxes = torch.cat([ctr - half, ctr + half], 1)
        keep = torchvision.ops.nms(boxes, s, 0.3)
        return torch.cat([boxes[keep], s[keep].unsqueeze(1)], 1)
class ScriptedList(nn.Module):
    """A list appended to in a scripted `for` and stacked after it: torch.onnx.export makes the
    list a Loop-carried sequence (SequenceEmpty before the Loop, SequenceInsert in its body) and
    the stack a ConcatFromSequence."""

    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(8, 8)

    def forward(self, x):
        outs: List[torch.Tensor] = []
        for t in range(x.size(1)):
            outs.append(torch.tanh(self.cell(x[:, t])))
        return torch.stack(outs, 1).sum(1)


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
    if name in ("lstm", "gru"):
        m = SeqClassifier(name)
        return m.eval(), (lambda b: torch.randn(b, 12, 16)), {0: "batch", 1: "seq"}
    if name == "unet":
        m = TinyUNet()
        return m.eval(), (lambda b: torch.randn(b, 3, 32, 32)), {0: "batch"}
    if name == "scripted_control":
        m = torch.jit.script(ScriptedControl().eval())
        return m, (lambda b: torch.randn(b, 6, 8)), {0: "batch", 1: "seq"}
    if name == "greedy_decoder":
        m = torch.jit.script(GreedyDecoder().eval())
        return m, (lambda b: torch.randn(b, 8)), {0: "batch"}
    if name == "detector_nms":
        m = DetectorHead()
        return m.eval(), (lambda b: torch.randn(1, 3, 32, 32)), {}
    if name == "scripted_list":
        m = torch.jit.script(ScriptedList().eval())
        return m, (lambda b: torch.randn(b, 5, 8)), {0: "batch", 1: "seq"}
    raise ValueError(f"unknown model {name}")


# The output's dynamic axes where they are not just the batch: lengths known only at run time.
OUTPUT_AXES = {"greedy_decoder": {0: "batch", 1: "steps"}, "detector_nms": {0: "kept"}}

# (file stem, model name, opset)
EXPORTS = [
    ("mlp", "mlp", 17),
    ("resnet18", "resnet18", 17),
    ("mobilenetv2", "mobilenetv2", 17),
    ("encoder_opset14", "encoder", 14),
    ("encoder_opset17", "encoder", 17),
    ("lstm_bidirectional", "lstm", 17),
    ("gru_bidirectional", "gru", 17),
    ("unet_resize", "unet", 17),
    ("scripted_control", "scripted_control", 17),
    ("greedy_decoder", "greedy_decoder", 17),
    ("detector_nms", "detector_nms", 17),
    ("scripted_list", "scripted_list", 17),
    # Older opsets, which dlsys upgrades to 13 on import with ONNX's version converter.
    ("mlp_opset9", "mlp", 9),
    ("mlp_opset11", "mlp", 11),
    ("resnet18_opset9", "resnet18", 9),
    ("resnet18_opset11", "resnet18", 11),
    ("encoder_opset11", "encoder", 11),
]
