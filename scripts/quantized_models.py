#!/usr/bin/python3
"""Builds, with onnx.helper, ResNet-18-shaped networks quantized the way ONNX Runtime's quantizers
write them (the QOperator format of quantize_static and the ConvInteger form of
quantize_dynamic), with seeded weights, calibration and inputs.

Usage: /usr/bin/python3 scripts/quantized_models.py OUT_DIR [--ort-reference] [--only STEM ...]
Stems:
- qop_resnet_small: input [N, 3, 32, 32], widths 8-16-32-64, 10 classes; written with
  OUT_DIR/qop_resnet_small.b<B>.input.npy for B in 1 and 8, the logits the ONNX operator
  definitions give in numpy (OUT_DIR/qop_resnet_small.b<B>.reference.npy, reference_outputs) and,
  with --ort-reference, ONNX Runtime's (OUT_DIR/qop_resnet_small.b<B>.ort.json, through
  bench/engine/run_model.mjs as scripts/tf_style_models.py writes them).
  tests/graph/foreign_models_test.cpp reads them.
- qop_resnet18: input [N, 3, 224, 224], widths 64-128-256-512, 1000 classes: ResNet-18's shapes,
  for bench/engine (the ONNX Runtime peer runs the same file). qop_resnet18_float is the same
  network and weights unquantized.

The quantized graph (opset 13):
- QuantizeLinear of the input to u8 with an asymmetric range (zero point near 128);
- the stem and the first convolution of every block as QLinearConv with s8 weights, symmetric
  per output channel, an int32 bias in accumulator units and the Relu folded into the output's
  range (zero point 0); layer3's QLinearConvs take u8 weights with one shared zero point that is
  not 128 (as older quantizers wrote them), so a weight zero point is exercised;
- MaxPool on u8;
- the second convolution of every block as ConvInteger on the u8 activation and its zero point,
  then Cast to float, Mul by x_scale * w_scale per channel and Add of the bias (quantize_dynamic's
  form), the residual Add and Relu in float, and QuantizeLinear back to u8;
- the downsample shortcut as DynamicQuantizeLinear of the dequantized block input, ConvInteger
  with that run-time zero point, and Mul by the run-time scale times w_scale;
- DequantizeLinear, GlobalAveragePool, Flatten and a float Gemm.
Activation ranges come from running the float network in numpy on 4 seeded normal images. Every
model passes onnx.checker.check_model. Needs Debian's python3-onnx (1.12) and numpy.
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tf_style_models import BATCHES, ensure_onnxruntime_node, ort_reference  # noqa: E402

CONFIGS = {
    "qop_resnet_small": dict(hw=32, widths=(8, 16, 32, 64), classes=10, seed=31),
    "qop_resnet18": dict(hw=224, widths=(64, 128, 256, 512), classes=1000, seed=32),
}


def conv2d(x, w, b, stride, pad):
    """Float NCHW convolution (no groups) by sliding windows and one tensordot."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # [N, OH, OW, M]
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) + b.reshape(1, m, 1, 1)


def maxpool(x):
    """3x3, stride 2, pad 1."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    return win.max(axis=(4, 5))


def u8_params(t):
    """Asymmetric u8 quantization of a tensor's range (including 0), as ONNX Runtime calibrates."""
    lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    return np.float32(scale), np.uint8(round(-lo / scale))


def make_weights(cfg):
    rng = np.random.default_rng(cfg["seed"])

    def conv(cin, cout, k):
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
        return w, (0.05 * rng.standard_normal(cout)).astype(np.float32)

    W = {"stem": conv(3, cfg["widths"][0], 7)}
    cin = cfg["widths"][0]
    for li, cout in enumerate(cfg["widths"]):
        for bi in range(2):
            stride = 2 if li > 0 and bi == 0 else 1
            W[f"l{li}b{bi}a"] = conv(cin, cout, 3)
            W[f"l{li}b{bi}b"] = conv(cout, cout, 3)
            if stride != 1 or cin != cout:
                W[f"l{li}b{bi}d"] = conv(cin, cout, 1)
            cin = cout
    W["fc"] = ((rng.standard_normal((cin, cfg["classes"])) / np.sqrt(cin)).astype(np.float32),
               (0.01 * rng.standard_normal(cfg["classes"])).astype(np.float32))
    return W


def blocks(cfg):
    """(name, stride, has_downsample) for the 8 basic blocks."""
    out, cin = [], cfg["widths"][0]
    for li, cout in enumerate(cfg["widths"]):
        for bi in range(2):
            stride = 2 if li > 0 and bi == 0 else 1
            out.append((f"l{li}b{bi}", stride, stride != 1 or cin != cout))
            cin = cout
    return out


def calibrate(cfg, W):
    """Float forward pass on 4 seeded images: the range of every tensor that gets quantized."""
    x = np.random.default_rng(cfg["seed"] + 100).standard_normal((4, 3, cfg["hw"], cfg["hw"])).astype(np.float32)
    R = {"input": x}
    h = np.maximum(conv2d(x, *W["stem"], 2, 3), 0)
    R["stem"] = h
    h = maxpool(h)
    for name, stride, down in blocks(cfg):
        a = np.maximum(conv2d(h, *W[name + "a"], stride, 1), 0)
        R[name + "a"] = a
        b = conv2d(a, *W[name + "b"], 1, 1)
        s = conv2d(h, *W[name + "d"], stride, 0) if down else h
        h = np.maximum(b + s, 0)
        R[name] = h
    return R


def s8_per_channel(w):
    scale = np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-8) / 127.0
    q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32), np.zeros(w.shape[0], np.int8)


def u8_shared_zero_point(w, zp=117):
    """u8 weights with one zero point (not 128) and a scale per output channel."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.maximum(np.maximum(flat.max(axis=1) / (255 - zp), -flat.min(axis=1) / zp), 1e-8)
    q = np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)) + zp, 0, 255).astype(np.uint8)
    return q, scale.astype(np.float32), np.uint8(zp)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, arr, base):
        self.count += 1
        name = f"{base}_{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, outputs=1, base=None, **attrs):
        self.count += 1
        name = f"{base or op_type}_{self.count}"
        outs = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs[0] if outputs == 1 else outs


def quantized_model(cfg, W, R):
    g = Graph()
    xs, xz = u8_params(R["input"])
    q = g.op("QuantizeLinear", ["input", g.const(xs, "input_scale"), g.const(xz, "input_zp")])

    def qlinear_conv(xq, xs, xz, key, stride, pad, out_range, u8w=False):
        w, b = W[key]
        wq, ws, wz = u8_shared_zero_point(w) if u8w else s8_per_channel(w)
        ys, yz = u8_params(out_range)
        bias = np.round(b / (xs * ws)).astype(np.int32)
        y = g.op("QLinearConv", [xq, g.const(xs, key + "_xs"), g.const(xz, key + "_xz"), g.const(wq, key + "_w"),
                                 g.const(ws, key + "_ws"), g.const(wz, key + "_wz"), g.const(ys, key + "_ys"),
                                 g.const(yz, key + "_yz"), g.const(bias, key + "_b")],
                 base=key, kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4)
        return y, ys, yz

    def conv_integer(xq, xs_name, xz_name, key, stride, pad):
        """ConvInteger -> Cast -> Mul(x_scale * w_scale) -> Add(bias), x_scale/x_zp given by name."""
        w, b = W[key]
        wq, ws, _ = s8_per_channel(w)
        acc = g.op("ConvInteger", [xq, g.const(wq, key + "_w"), xz_name], base=key,
                   kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4)
        f = g.op("Cast", [acc], to=TensorProto.FLOAT)
        scale = g.op("Mul", [xs_name, g.const(ws.reshape(1, -1, 1, 1), key + "_ws")])
        return g.op("Add", [g.op("Mul", [f, scale]), g.const(b.reshape(1, -1, 1, 1), key + "_b")])

    h, hs, hz = qlinear_conv(q, xs, xz, "stem", 2, 3, R["stem"])
    h = g.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for name, stride, down in blocks(cfg):
        a, as_, az = qlinear_conv(h, hs, hz, name + "a", stride, 1, R[name + "a"], u8w=name.startswith("l2"))
        b = conv_integer(a, g.const(as_, name + "b_xs"), g.const(az, name + "b_xz"), name + "b", 1, 1)
        hf = g.op("DequantizeLinear", [h, g.const(hs, name + "_in_s"), g.const(hz, name + "_in_z")])
        if down:
            dq, ds, dz = g.op("DynamicQuantizeLinear", [hf], outputs=3)
            s = conv_integer(dq, ds, dz, name + "d", stride, 0)
        else:
            s = hf
        y = g.op("Relu", [g.op("Add", [b, s])])
        hs, hz = u8_params(R[name])
        h = g.op("QuantizeLinear", [y, g.const(hs, name + "_s"), g.const(hz, name + "_z")])
    hf = g.op("DequantizeLinear", [h, g.const(hs, "last_s"), g.const(hz, "last_z")])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [hf])])
    fw, fb = W["fc"]
    g.nodes.append(helper.make_node("Gemm", [flat, g.const(fw, "fc_w"), g.const(fb, "fc_b")], ["logits"], name="fc"))
    return finish(g, cfg, "dlsys scripts/quantized_models.py (ONNX Runtime QOperator/dynamic style)")


def reference_outputs(model, x):
    """The quantized model's logits by the ONNX operator definitions in numpy: integer sums in
    int64, requantization in float64 from a float32 multiplier, everything else in float32 with one
    rounding per operation (as the runtimes compute it). An exact reference on every CPU: ONNX
    Runtime's u8 x s8 kernels saturate in int16 where the CPU has no VNNI."""
    f32 = np.float32
    env = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    env["input"] = x

    def conv_int(xq, xz, wq, wz, stride, pad):
        xi = np.pad(xq.astype(np.int64) - np.int64(xz), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        wi = wq.astype(np.int64) - np.asarray(wz, np.int64).reshape(-1, 1, 1, 1)
        kh, kw = wi.shape[2:]
        win = np.lib.stride_tricks.sliding_window_view(xi, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
        return np.tensordot(win, wi, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)

    def saturate(v, t):
        lo, hi = (0, 255) if t == np.uint8 else (-128, 127)
        return np.clip(v, lo, hi).astype(t)

    for n in model.graph.node:
        a = {at.name: helper.get_attribute_value(at) for at in n.attribute}
        i = [env[k] for k in n.input]
        if n.op_type == "QuantizeLinear":
            y = saturate(np.rint(i[0] / i[1]) + i[2].astype(f32), i[2].dtype.type)
        elif n.op_type == "DequantizeLinear":
            y = (i[0].astype(f32) - i[2].astype(f32)) * i[1]
        elif n.op_type == "QLinearConv":
            acc = conv_int(i[0], i[2], i[3], i[5], a["strides"][0], a["pads"][0]) + i[8].reshape(1, -1, 1, 1)
            mult = (i[1] * i[4] / i[6]).astype(f32).astype(np.float64).reshape(1, -1, 1, 1)
            y = saturate(np.rint(acc * mult) + np.int64(i[7]), i[7].dtype.type)
        elif n.op_type == "ConvInteger":
            y = conv_int(i[0], i[2], i[1], 0, a["strides"][0], a["pads"][0]).astype(np.int32)
        elif n.op_type == "DynamicQuantizeLinear":
            lo, hi = min(f32(i[0].min()), f32(0)), max(f32(i[0].max()), f32(0))
            scale = f32((hi - lo) / f32(255))
            zp = np.uint8(np.clip(np.rint((f32(0) - lo) / scale), 0, 255))
            y = (saturate(np.rint(i[0] / scale) + f32(zp), np.uint8), np.array(scale, f32), np.array(zp))
        elif n.op_type == "MaxPool":
            y = maxpool(i[0].astype(np.float64)).astype(i[0].dtype)
        elif n.op_type == "Cast":
            y = i[0].astype(f32)
        elif n.op_type == "Mul":
            y = i[0] * i[1]
        elif n.op_type == "Add":
            y = i[0] + i[1]
        elif n.op_type == "Relu":
            y = np.maximum(i[0], f32(0))
        elif n.op_type == "GlobalAveragePool":
            y = i[0].astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(f32)
        elif n.op_type == "Flatten":
            y = i[0].reshape(i[0].shape[0], -1)
        elif n.op_type == "Gemm":
            y = (i[0].astype(np.float64) @ i[1] + i[2]).astype(f32)
        else:
            raise SystemExit(f"reference_outputs: no rule for {n.op_type}")
        for k, v in zip(n.output, y if isinstance(y, tuple) else (y,)):
            env[k] = v
    return env["logits"]


def float_model(cfg, W):
    g = Graph()

    def conv(x, key, stride, pad):
        w, b = W[key]
        return g.op("Conv", [x, g.const(w, key + "_w"), g.const(b, key + "_b")], base=key,
                    kernel_shape=list(w.shape[2:]), strides=[stride, stride], pads=[pad] * 4)

    h = g.op("Relu", [conv("input", "stem", 2, 3)])
    h = g.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for name, stride, down in blocks(cfg):
        a = g.op("Relu", [conv(h, name + "a", stride, 1)])
        b = conv(a, name + "b", 1, 1)
        s = conv(h, name + "d", stride, 0) if down else h
        h = g.op("Relu", [g.op("Add", [b, s])])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [h])])
    fw, fb = W["fc"]
    g.nodes.append(helper.make_node("Gemm", [flat, g.const(fw, "fc_w"), g.const(fb, "fc_b")], ["logits"], name="fc"))
    return finish(g, cfg, "dlsys scripts/quantized_models.py (float twin)")


def finish(g, cfg, producer):
    hw = cfg["hw"]
    graph = helper.make_graph(
        g.nodes, "qop_resnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", cfg["classes"]])], g.inits)
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--ort-reference", action="store_true",
                    help="also write ONNX Runtime's outputs for qop_resnet_small (<stem>.b<B>.ort.json)")
    ap.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="build only these stems")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    if args.ort_reference:
        ensure_onnxruntime_node()
    for stem in args.only or sorted(CONFIGS):
        cfg = CONFIGS[stem]
        W = make_weights(cfg)
        R = calibrate(cfg, W)
        path = os.path.join(args.out_dir, stem + ".onnx")
        model = quantized_model(cfg, W, R)
        onnx.save(model, path)
        onnx.save(float_model(cfg, W), os.path.join(args.out_dir, stem + "_float.onnx"))
        if stem == "qop_resnet_small":
            rng = np.random.default_rng(2027)
            for batch in BATCHES:
                inp = os.path.join(args.out_dir, f"{stem}.b{batch}.input.npy")
                x = rng.standard_normal((batch, 3, cfg["hw"], cfg["hw"]), dtype=np.float32)
                np.save(inp, x)
                np.save(os.path.join(args.out_dir, f"{stem}.b{batch}.reference.npy"), reference_outputs(model, x))
                if args.ort_reference:
                    ort_reference(path, inp, os.path.join(args.out_dir, f"{stem}.b{batch}.ort.json"))
        print(f"wrote {path} and its float twin" + (", ONNX Runtime references" if args.ort_reference and
                                                    stem == "qop_resnet_small" else ""), flush=True)


if __name__ == "__main__":
    main()
