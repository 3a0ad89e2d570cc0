#!/usr/bin/python3
"""Exports the reference models to ONNX with torch.onnx.export and writes PyTorch's outputs.

Usage: /usr/bin/python3 scripts/export_models.py OUT_DIR [--only NAME ...] [--batch B]
For each model: OUT_DIR/<stem>.onnx, <stem>.input.npy and <stem>.output.npy (PyTorch's output on
that input, fp32, eval mode). Needs Debian's python3-torch, python3-torchvision, python3-onnx.
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_models  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", nargs="*", help="file stems to export (default: all)")
    ap.add_argument("--batch", type=int, default=2, help="batch of the reference input (default 2)")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    for stem, name, opset in reference_models.EXPORTS:
        if args.only and stem not in args.only:
            continue
        model, make_input, axes = reference_models.build(name)
        torch.manual_seed(123)
        x = make_input(args.batch)
        path = os.path.join(args.out_dir, stem + ".onnx")
        with torch.no_grad():
            y = model(x)
            torch.onnx.export(model, (x,), path, opset_version=opset, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": axes,
                                            "logits": reference_models.OUTPUT_AXES.get(name, {0: "batch"})},
                              do_constant_folding=True)
        np.save(os.path.join(args.out_dir, stem + ".input.npy"), x.numpy())
        # Token ids stay integers; everything else is compared as fp32.
        y = y.numpy() if y.dtype == torch.long else y.numpy().astype(np.float32)
        np.save(os.path.join(args.out_dir, stem + ".output.npy"), y)
        print(f"exported {path} (opset {opset}, input {tuple(x.shape)}, output {tuple(y.shape)})", flush=True)


if __name__ == "__main__":
    main()
