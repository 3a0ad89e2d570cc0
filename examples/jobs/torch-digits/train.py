"""A dlsys command job in PyTorch: train an MLP on the exported dataset, report metrics, export
ONNX. The environment comes from the training service (docs/jobs.md):
  DLSYS_DATA_DIR/data.csv  the job's dataset version (the last column is the label)
  DLSYS_HYPERPARAMETERS    the job's hyperparameters as JSON
  DLSYS_OUTPUT_DIR         files left here become the run's artifacts; model.onnx is registered
"""
import json
import os
import sys

import numpy as np
import torch

hp = json.loads(os.environ.get("DLSYS_HYPERPARAMETERS", "{}"))
epochs, lr = int(hp.get("epochs", 30)), float(hp.get("lr", 0.01))
hidden, seed = int(hp.get("hidden", 64)), int(hp.get("seed", 0))
data_dir, out_dir = os.environ["DLSYS_DATA_DIR"], os.environ["DLSYS_OUTPUT_DIR"]
torch.manual_seed(seed)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

table = np.loadtxt(os.path.join(data_dir, "data.csv"), delimiter=",", skiprows=1,
                   dtype=np.float32)
x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
rng = np.random.default_rng(seed)
order = rng.permutation(len(x))
cut = int(len(x) * 0.8)
train, val = order[:cut], order[cut:]
xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
xv, yv = torch.from_numpy(x[val]), torch.from_numpy(y[val])
print(f"{len(train)} training rows, {len(val)} validation rows, {x.shape[1]} features",
      file=sys.stderr)

model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                            torch.nn.Linear(hidden, 10))
opt = torch.optim.Adam(model.parameters(), lr=lr)
step = 0
for epoch in range(epochs):
    model.train()
    perm = torch.randperm(len(xt))
    for b in range(0, len(xt), 64):
        idx = perm[b:b + 64]
        loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    # One JSON line per metric: the service records them in the job's run.
    print(json.dumps({"metric": "train_loss", "value": loss.item(), "step": step}))
    print(json.dumps({"metric": "val_accuracy", "value": acc, "step": step}), flush=True)

# The model takes raw pixels (0..16): the scaling goes into the graph.
class Scaled(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, input):
        return self.net(input / 16.0)

torch.onnx.export(Scaled(model).eval(), torch.zeros(1, x.shape[1]),
                  os.path.join(out_dir, "model.onnx"), input_names=["input"],
                  output_names=["logits"], dynamic_axes={"input": {0: "batch"},
                                                         "logits": {0: "batch"}},
                  opset_version=17)
# PyTorch's own answers on a few validation rows, to check the served model against.
rows = x[val[:4]] * 16.0
with torch.no_grad():
    logits = Scaled(model).eval()(torch.from_numpy(rows)).numpy()
with open(os.path.join(out_dir, "reference.json"), "w") as f:
    json.dump({"input": rows.tolist(), "logits": logits.tolist()}, f)
print(f"validation accuracy {acc:.4f}; exported model.onnx", file=sys.stderr)
