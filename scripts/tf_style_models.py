#!/usr/bin/python3
"""Builds, with onnx.helper, models in the shape tf2onnx and paddle2onnx emit, with seeded inputs.

Usage: /usr/bin/python3 scripts/tf_style_models.py OUT_DIR [--ort-reference]
For each model: OUT_DIR/<stem>.onnx and OUT_DIR/<stem>.b<B>.input.npy for B in 1 and 8 (normal
floats, fixed seed). With --ort-reference, also ONNX Runtime's outputs on those inputs,
OUT_DIR/<stem>.b<B>.ort.json ({"<output>": {"dims": [...], "data": [...]}}, as
bench/engine/run_model.mjs prints them); onnxruntime-node is installed into bench/engine first
when it is missing (as bench/engine/run.sh does), and the script fails if it cannot run.

- tf_cnn_nhwc (opset 9): NHWC input [N, 32, 32, 3], a small CNN written as tf2onnx writes it
  before its own optimizer: a Transpose (0,3,1,2) before and a Transpose (0,2,3,1) after every
  Conv; weights as Constant nodes; Relu, Relu6 as Clip with min/max attributes, a depthwise
  conv, HardSwish as Mul(x, HardSigmoid(x)) and as x * Clip(x + 3, 0, 6) / 6, a residual Add, a
  per-channel Mul/Add (unfused batch norm), ReduceMean over H, W (keepdims) and Squeeze with axes
  attributes, Slice with attributes, MatMul + Add, Unsqueeze with axes, Reshape to a Constant
  shape.
- tf_cnn_nchw (opset 9): the same network and weights in NCHW without the Transposes (input
  [N, 3, 32, 32], the NHWC input transposed): its outputs equal tf_cnn_nhwc's.
- paddle_style (opset 11): NCHW [N, 3, 16, 16] as paddle2onnx writes it: Constant nodes, HardSwish
  as Mul(x, HardSigmoid(x)) (the HardSwish op only exists from opset 14), Clip with min/max
  inputs, Resize (nearest, asymmetric/floor, x2) with roi and scales inputs, Slice with inputs,
  a squeeze-excite gate (GlobalAveragePool, 1x1 convs, HardSigmoid, Mul), a flatten computed as
  Shape -> Gather -> Unsqueeze -> Concat -> Reshape, MatMul + Add and Softmax on the last axis.
Every model passes onnx.checker.check_model. Needs Debian's python3-onnx (1.12) and numpy.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BATCHES = (1, 8)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(REPO, "bench", "engine")


class Builder:
    """Collects nodes; constants become Constant nodes (as tf2onnx and paddle2onnx write them)."""

    def __init__(self, prefix):
        self.nodes = []
        self.prefix = prefix
        self.count = 0

    def name(self, base):
        self.count += 1
        return f"{self.prefix}{base}_{self.count}"

    def const(self, arr, base="const"):
        out = self.name(base)
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node",
                                           value=numpy_helper.from_array(np.asarray(arr), out)))
        return out

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out


def weights(seed):
    """The tf CNN's weights (OIHW convolution kernels, as tf2onnx stores them after folding)."""
    r = np.random.default_rng(seed)

    def w(*shape, scale):
        return (r.standard_normal(shape) * scale).astype(np.float32)

    return {
        "w1": w(16, 3, 3, 3, scale=0.3), "b1": w(16, scale=0.1),
        "w2": w(16, 16, 3, 3, scale=0.1), "b2": w(16, scale=0.1),
        "w3": w(16, 1, 3, 3, scale=0.4), "b3": w(16, scale=0.1),
        "w4": w(16, 16, 1, 1, scale=0.3), "b4": w(16, scale=0.1),
        "w5": w(32, 16, 3, 3, scale=0.1), "b5": w(32, scale=0.1),
        "scale5": (1.0 + 0.2 * r.standard_normal(32)).astype(np.float32),
        "shift5": w(32, scale=0.2),
        "wfc": w(24, 10, scale=0.3), "bfc": w(10, scale=0.1),
    }


def tf_cnn(nhwc, W):
    """The tf2onnx-style CNN; `nhwc` puts a Transpose pair around every Conv."""
    b = Builder("")
    x = "input"

    def conv(v, wk, bk, stride=1, pad=1, group=1):
        if nhwc:
            v = b.op("Transpose", [v], "to_nchw", perm=[0, 3, 1, 2])
        c = b.op("Conv", [v, b.const(W[wk], wk), b.const(W[bk], bk)], "conv", kernel_shape=list(W[wk].shape[2:]),
                 strides=[stride, stride], pads=[pad] * 4, group=group, dilations=[1, 1])
        if nhwc:
            c = b.op("Transpose", [c], "to_nhwc", perm=[0, 2, 3, 1])
        return c

    def channel_const(arr):  # a per-channel constant, broadcast on the channel axis of the layout
        return arr if nhwc else arr.reshape(-1, 1, 1)

    r1 = b.op("Relu", [conv(x, "w1", "b1")])
    r2 = b.op("Clip", [conv(r1, "w2", "b2")], "relu6", min=0.0, max=6.0)
    c3 = conv(r2, "w3", "b3", group=16)
    hs3 = b.op("Mul", [c3, b.op("HardSigmoid", [c3], alpha=1.0 / 6, beta=0.5)], "hardswish")
    s4 = b.op("Add", [conv(hs3, "w4", "b4", pad=0), r1], "residual")
    three, six = b.const(np.float32(3.0), "three"), b.const(np.float32(6.0), "six")
    gate = b.op("Clip", [b.op("Add", [s4, three])], min=0.0, max=6.0)
    hs4 = b.op("Div", [b.op("Mul", [s4, gate]), six], "hardswish")
    r5 = b.op("Relu", [conv(hs4, "w5", "b5", stride=2)])
    bn = b.op("Add", [b.op("Mul", [r5, b.const(channel_const(W["scale5"]), "scale5")]),
                      b.const(channel_const(W["shift5"]), "shift5")], "batchnorm")
    spatial = [1, 2] if nhwc else [2, 3]
    pooled = b.op("ReduceMean", [bn], "mean", axes=spatial, keepdims=1)
    feat = b.op("Squeeze", [pooled], axes=spatial)
    feat = b.op("Slice", [feat], axes=[1], starts=[0], ends=[24])
    fc = b.op("Add", [b.op("MatMul", [feat, b.const(W["wfc"], "wfc")]), b.const(W["bfc"], "bfc")], "fc")
    un = b.op("Unsqueeze", [fc], axes=[1])
    b.nodes.append(helper.make_node("Reshape", [un, b.const(np.array([-1, 10], np.int64), "shape")], ["logits"],
                                    name="logits_node"))
    in_dims = ["batch", 32, 32, 3] if nhwc else ["batch", 3, 32, 32]
    graph = helper.make_graph(b.nodes, "tf_cnn_nhwc" if nhwc else "tf_cnn_nchw",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])])
    return helper.make_model(graph, producer_name="tf2onnx-style (dlsys scripts/tf_style_models.py)",
                             opset_imports=[helper.make_opsetid("", 9)])


def paddle_style(seed):
    r = np.random.default_rng(seed)

    def w(*shape, scale):
        return (r.standard_normal(shape) * scale).astype(np.float32)

    b = Builder("p2o.")

    def conv(v, cin, cout, k, stride=1, group=1):
        return b.op("Conv", [v, b.const(w(cout, cin // group, k, k, scale=0.3), "conv.w"),
                             b.const(w(cout, scale=0.1), "conv.b")], "conv",
                    kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, group=group)

    def hardswish(v):  # paddle2onnx below opset 14
        return b.op("Mul", [v, b.op("HardSigmoid", [v], alpha=1.0 / 6, beta=0.5)], "hardswish")

    c1 = hardswish(conv("input", 3, 8, 3, stride=2))  # [N, 8, 8, 8]
    c2 = b.op("Clip", [conv(c1, 8, 8, 3), b.const(np.float32(0.0), "min"), b.const(np.float32(6.0), "max")],
              "relu6")
    roi = b.const(np.zeros(0, np.float32), "roi")
    scales = b.const(np.array([1, 1, 2, 2], np.float32), "scales")
    up = b.op("Resize", [c2, roi, scales], "nearest_interp", mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # [N, 8, 16, 16]
    sl = b.op("Slice", [up, b.const(np.array([0], np.int64), "starts"), b.const(np.array([6], np.int64), "ends"),
                        b.const(np.array([1], np.int64), "axes"), b.const(np.array([1], np.int64), "steps")])
    c3 = hardswish(conv(sl, 6, 16, 3, stride=2))  # [N, 16, 8, 8]
    se = b.op("GlobalAveragePool", [c3], "se_pool")
    se = b.op("Relu", [conv(se, 16, 4, 1)])
    se = b.op("HardSigmoid", [conv(se, 4, 16, 1)], alpha=0.2, beta=0.5)
    gated = b.op("Mul", [c3, se], "se_scale")
    shape = b.op("Shape", [gated])
    n = b.op("Gather", [shape, b.const(np.array(0, np.int64), "zero")], axis=0)
    n = b.op("Unsqueeze", [n], axes=[0])
    target = b.op("Concat", [n, b.const(np.array([-1], np.int64), "minus_one")], "flatten_shape", axis=0)
    flat = b.op("Reshape", [gated, target], "flatten")  # [N, 1024]
    fc = b.op("Add", [b.op("MatMul", [flat, b.const(w(1024, 10, scale=0.05), "fc.w")]),
                      b.const(w(10, scale=0.1), "fc.b")], "fc")
    b.nodes.append(helper.make_node("Softmax", [fc], ["probs"], name="softmax", axis=-1))
    graph = helper.make_graph(b.nodes, "paddle_style",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])])
    return helper.make_model(graph, producer_name="paddle2onnx-style (dlsys scripts/tf_style_models.py)",
                             opset_imports=[helper.make_opsetid("", 11)])


def ort_reference(model_path, input_path, out_path):
    """ONNX Runtime's outputs on one input, through bench/engine/run_model.mjs."""
    x = np.load(input_path)
    feeds = {"input": {"type": "float32", "dims": list(x.shape), "data": x.ravel().tolist()}}
    feeds_path = out_path[: -len(".ort.json")] + ".feeds.json"
    with open(feeds_path, "w") as f:
        json.dump(feeds, f)
    out = subprocess.run(["node", os.path.join(ENGINE, "run_model.mjs"), model_path, feeds_path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ONNX Runtime failed on {model_path}:\n{out.stderr.strip()}")
    json.loads(out.stdout)  # fails here, not in the test, on anything but JSON
    with open(out_path, "w") as f:
        f.write(out.stdout)


def ensure_onnxruntime_node():
    if os.path.isdir(os.path.join(ENGINE, "node_modules", "onnxruntime-node")):
        return
    print("installing onnxruntime-node (npm, --ignore-scripts) into bench/engine", flush=True)
    subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                   cwd=ENGINE, check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--ort-reference", action="store_true",
                    help="also write ONNX Runtime's outputs (<stem>.b<B>.ort.json) via bench/engine/run_model.mjs")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    W = weights(21)
    models = {"tf_cnn_nhwc": tf_cnn(True, W), "tf_cnn_nchw": tf_cnn(False, W), "paddle_style": paddle_style(22)}
    rng = np.random.default_rng(2026)
    inputs = {}
    for batch in BATCHES:
        nhwc = rng.standard_normal((batch, 32, 32, 3), dtype=np.float32)
        inputs[("tf_cnn_nhwc", batch)] = nhwc
        inputs[("tf_cnn_nchw", batch)] = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
        inputs[("paddle_style", batch)] = rng.standard_normal((batch, 3, 16, 16), dtype=np.float32)
    if args.ort_reference:
        ensure_onnxruntime_node()
    for stem, model in models.items():
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(args.out_dir, stem + ".onnx")
        onnx.save(model, path)
        for batch in BATCHES:
            inp = os.path.join(args.out_dir, f"{stem}.b{batch}.input.npy")
            np.save(inp, inputs[(stem, batch)])
            if args.ort_reference:
                ort_reference(path, inp, os.path.join(args.out_dir, f"{stem}.b{batch}.ort.json"))
        print(f"wrote {path} (opset {model.opset_import[0].version}, {len(model.graph.node)} nodes)"
              + (", ONNX Runtime references" if args.ort_reference else ""), flush=True)


if __name__ == "__main__":
    main()
