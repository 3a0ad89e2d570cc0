"""Peers for bench/data on the same kind of data: NumPy's loadtxt parsing a numeric CSV
(MB/s), and a PyTorch DataLoader over in-memory tensors (shuffled batches of 256, feature
bytes/s and rows/s, counted from the batches it returned; the second epoch is timed).
Usage: torch_loader.py MIB"""
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

torch.set_num_threads(2)
mib = int(sys.argv[1]) if len(sys.argv) > 1 else 20
rng = np.random.default_rng(1)
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "numeric.csv")
    with open(path, "w") as f:
        f.write(",".join([f"f{c}" for c in range(20)] + ["label"]) + "\n")
        size = 0
        while size < mib << 20:
            block = rng.uniform(-100, 100, size=(10000, 20))
            labels = rng.integers(0, 10, size=10000)
            text = "\n".join(",".join(f"{v:.6f}" for v in r) + f",{l}" for r, l in zip(block, labels)) + "\n"
            f.write(text)
            size += len(text)
    size = os.path.getsize(path)
    t0 = time.perf_counter()
    arr = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    s = time.perf_counter() - t0
    print(json.dumps({"bench": "numpy_loadtxt", "input_mb": size / 1e6, "rows": len(arr), "seconds": s,
                      "mb_per_s": size / 1e6 / s}))

x = torch.from_numpy(arr[:, :20].astype(np.float32))
y = torch.from_numpy(arr[:, 20].astype(np.int64))
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256, shuffle=True)
for epoch in range(2):
    t0 = time.perf_counter()
    nbytes = rows = 0
    for xb, yb in loader:
        nbytes += xb.numel() * 4
        rows += xb.shape[0]
    s = time.perf_counter() - t0
print(json.dumps({"bench": "torch_dataloader", "rows": rows, "epoch_s": s, "rows_per_s": rows / s,
                  "gb_per_s": nbytes / 1e9 / s}))
