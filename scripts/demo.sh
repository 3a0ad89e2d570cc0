#!/usr/bin/env bash
# The demo: export a model from PyTorch with the project's script, inspect it, run it through
# `dlsys run` and compare with PyTorch's output, measure it with `dlsys bench`; train the digits
# MLP and run its exported model, and the wine classifier with its preprocessing inside the model
# on raw CSV rows; then track a training run in a `dlsys server`, register the
# model and promote it to production; deploy it, infer the validation split over KServe v2 and
# roll the deployment to a second version under load; add a canary, roll it back, and shadow it;
# then submit a train job to the server's training service, kill it, and see it retried from its
# checkpoint to the weights of an uninterrupted run; a hyperparameter search; and the retrain
# pipeline, started by new digits data, through its gate to a canary and a promotion; and
# monitoring of the served digits, whose drift alert starts that pipeline again; and the
# interactive environment: the web UI, the Python client and a notebook run against the server;
# and data-parallel training on 1, 2 and 4 processes, and sharded, to one model byte for byte.
set -euo pipefail
BUILD=${1:-build}
DLSYS="$BUILD/dlsys"
DIR="$BUILD/demo"
mkdir -p "$DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/13 export ResNet-18 (torchvision architecture, seeded random weights) to ONNX with PyTorch"
if [ ! -f "$DIR/resnet18.onnx" ] || [ ! -f "$DIR/detector_nms.onnx" ]; then
  /usr/bin/python3 scripts/export_models.py "$DIR" --only resnet18 detector_nms
else
  echo "already exported: $DIR/resnet18.onnx, $DIR/detector_nms.onnx"
fi

step "2/13 dlsys inspect"
"$DLSYS" inspect "$DIR/resnet18.onnx" | head -12

step "3/13 dlsys run, compared with PyTorch's own output"
"$DLSYS" run "$DIR/resnet18.onnx" --input input="$DIR/resnet18.input.npy" --output-dir "$DIR/out" --threads 2
/usr/bin/python3 - "$DIR" <<'PY'
import sys, numpy as np
d = sys.argv[1]
got, ref = np.load(f"{d}/out/logits.npy"), np.load(f"{d}/resnet18.output.npy")
rel = np.abs(got - ref).max() / np.abs(ref).max()
same = (got.argmax(1) == ref.argmax(1)).all()
print(f"dlsys vs PyTorch: max error {rel:.2e} of the output scale, top-1 {'identical' if same else 'DIFFERENT'}")
sys.exit(0 if rel <= 1e-4 and same else 1)
PY

# A detector head: NonMaxSuppression keeps a number of boxes known only while running, so the
# plan stops there and the rest is planned per count when a run gets there.
echo "a detector head with NonMaxSuppression on the boxes it computes (output length known only while running):"
"$DLSYS" inspect --plan "$DIR/detector_nms.onnx" | grep -E "NonMaxSuppression|^then:"
"$DLSYS" run "$DIR/detector_nms.onnx" --input input="$DIR/detector_nms.input.npy" --output-dir "$DIR/out_det" --threads 2 >/dev/null
/usr/bin/python3 - "$DIR" <<'PY'
import sys, numpy as np
d = sys.argv[1]
got, ref = np.load(f"{d}/out_det/logits.npy"), np.load(f"{d}/detector_nms.output.npy")
ok = got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
print(f"detector: dlsys kept {got.shape[0]} boxes, PyTorch {ref.shape[0]}; boxes and scores {'match' if ok else 'DIFFER'}")
sys.exit(0 if ok else 1)
PY

# Integer-quantized ONNX (QLinearConv, ConvInteger, DynamicQuantizeLinear), as ONNX Runtime's
# quantizers write it, checked against the ONNX operator definitions evaluated in numpy.
echo "a ResNet-shaped network quantized as ONNX Runtime's quantizers write it (QLinearConv, ConvInteger):"
[ -f "$DIR/qop_resnet_small.onnx" ] || /usr/bin/python3 scripts/quantized_models.py "$DIR" --only qop_resnet_small >/dev/null
"$DLSYS" inspect --plan "$DIR/qop_resnet_small.onnx" | grep -m 2 -E "QLinearConv|ConvInteger" || true
"$DLSYS" run "$DIR/qop_resnet_small.onnx" --input input="$DIR/qop_resnet_small.b8.input.npy" --output-dir "$DIR/out_q" --threads 2 >/dev/null
/usr/bin/python3 - "$DIR" <<'PY'
import sys, numpy as np
d = sys.argv[1]
got, ref = np.load(f"{d}/out_q/logits.npy"), np.load(f"{d}/qop_resnet_small.b8.reference.npy")
rel = np.abs(got - ref).max() / np.abs(ref).max()
print(f"quantized: dlsys vs the ONNX operator definitions (numpy, exact integer sums): max error {rel:.2e} of the output scale")
sys.exit(0 if rel <= 1e-5 else 1)
PY

step "4/13 dlsys bench (batch 8, 2 threads)"
"$DLSYS" bench "$DIR/resnet18.onnx" --batch 8 --threads 2 --seconds 3
step "5/13 dlsys train: the digits MLP (examples/digits/mlp.yaml), then its exported model on the validation split"
"$DLSYS" train examples/digits/mlp.yaml --out "$DIR/digits" --threads 2
"$DLSYS" run "$DIR/digits/model.onnx" --input input="$DIR/digits/val_x.npy" --output-dir "$DIR/digits/pred" --threads 2
/usr/bin/python3 - "$DIR/digits" <<'PY'
import sys, numpy as np
d = sys.argv[1]
logits, y = np.load(f"{d}/pred/logits.npy"), np.load(f"{d}/val_y.npy")
acc = (logits.argmax(1) == y).mean()
print(f"exported model, run by dlsys run on the {len(y)} validation digits: accuracy {acc:.4f}")
sys.exit(0 if acc >= 0.9 else 1)
PY

echo "the wine classifier: standardization fitted on the training split, inside the model (examples/wine/wine.yaml)"
"$DLSYS" train examples/wine/wine.yaml --out "$DIR/wine" --threads 2
head -5 ../shared/data/wine/wine_data.csv > "$DIR/wine/rows.csv"
"$DLSYS" run "$DIR/wine/model.onnx" --input "$DIR/wine/rows.csv" --table

echo "a string column: the model takes the color's name (a STRING input, mapped inside the model), so ONNX Runtime gets the same raw rows"
mkdir -p "$DIR/colors"
/usr/bin/python3 - "$DIR/colors" <<'PY'
import sys
d, colors = sys.argv[1], ["red", "green", "blue"]
rows = ["size,color,label"] + [f"{(i * 37) % 11},{colors[i % 3]},{i % 3}" for i in range(240)]
open(f"{d}/train.csv", "w").write("\n".join(rows) + "\n")
open(f"{d}/rows.csv", "w").write("size,color\n3,red\n5,green\n7,blue\n2,purple\n")
open(f"{d}/colors.yaml", "w").write("""name: colors
data:
  train: train.csv
  split_seed: 1
  preprocess: [standardize, {onehot: [color]}]   # the vocabulary travels in the model
model:
  input: [4]
  layers: [{linear: {out: 3}}]
train: {epochs: 30, batch_size: 16, seed: 1, optimizer: {name: adam, lr: 0.05}}
""")
PY
"$DLSYS" train "$DIR/colors/colors.yaml" --out "$DIR/colors/run" --threads 2 2>&1 | tail -1
"$DLSYS" run "$DIR/colors/run/model.onnx" --input "$DIR/colors/rows.csv" --table
if [ -d bench/engine/node_modules/onnxruntime-node ]; then
  printf '%s' '{"input": {"type": "float32", "dims": [4, 1], "data": [3, 5, 7, 2]},
    "color": {"type": "string", "dims": [4, 1], "data": ["red", "green", "blue", "purple"]}}' \
    >"$DIR/colors/feeds.json"
  echo "ONNX Runtime (onnxruntime-node) on the same rows (purple, never seen, has no one-hot bit):"
  node bench/engine/run_model.mjs "$DIR/colors/run/model.onnx" "$DIR/colors/feeds.json" |
    /usr/bin/python3 -c '
import json, sys, numpy as np
z = np.array(json.load(sys.stdin)["logits"]["data"]).reshape(4, 3)
p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
print("row  class  probability")
for i, r in enumerate(p): print(f"{i:<4} {r.argmax():<6} {r.max():.4f}")'
fi

step "6/13 dlsys server: a tracked training run, registered and promoted to production; a dataset pushed twice"
# Starts `dlsys server` on a fresh data directory $1 (its output in $2): sets SERVER and URL.
start_server() {
  rm -rf "$1"
  "$DLSYS" server --data-dir "$1" --port 0 --access-log off >"$2" 2>&1 &
  SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  for _ in $(seq 300); do grep -q "dlsys server on" "$2" && break; sleep 0.1; done
  URL=$(sed -n 's/^dlsys server on \(http[^ ]*\).*/\1/p' "$2")
  [ -n "$URL" ] || { cat "$2"; echo "dlsys server did not start"; exit 1; }
}
HOME_DIR="$DIR/home"
start_server "$HOME_DIR" "$DIR/server.out"
echo "server: $URL (data directory $HOME_DIR)"
"$DLSYS" train examples/digits/mlp.yaml --out "$DIR/digits-tracked" --threads 2 --server "$URL" 2>&1 | tail -3
"$DLSYS" models register digits --run 1 --server "$URL"
"$DLSYS" models alias digits production 1 --server "$URL"
"$DLSYS" models list --server "$URL"
"$DLSYS" runs list --server "$URL"
# The server's bounds (docs/security.md): a bogus token is refused from the headers, a body
# nested 65,536 deep gets 400 naming the limit, and /metrics shows the connection cap.
/usr/bin/python3 - "$URL" <<'PY'
import sys, urllib.request, urllib.error
url = sys.argv[1]
def ask(path, data=None, headers={}):
    try:
        r = urllib.request.urlopen(urllib.request.Request(url + path, data=data, headers=headers))
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
print("bogus token:", *ask("/api/v1/runs", headers={"Authorization": "Bearer dls_bogus"}))
print("nested body:", *ask("/api/v1/runs/search", data=b"[" * 65536 + b"]" * 65536))
cap = [l for l in ask("/metrics")[1].splitlines() if l.startswith("dlsys_http_connections_max")]
print("connection cap:", cap[0].split()[1], "(docs/security.md lists every bound)")
PY

step "7/13 serving: deploy digits@production, infer the validation split over KServe v2, roll to version 2 under load, then a canary and a shadow"
"$DLSYS" deploy create digits --model digits@production --max-batch 32 --max-delay-us 1000 --server "$URL"
"$DLSYS" train examples/digits/mlp.yaml --out "$DIR/digits-v2" --threads 2 --server "$URL" 2>&1 | tail -1
"$DLSYS" models register digits --run 2 --server "$URL"
/usr/bin/python3 scripts/demo_serve.py "$URL" digits "$DIR/digits/val_x.npy" "$DIR/digits/val_y.npy" \
  --alias-move "$DLSYS" 2
# Version 1 back as a 20% canary (sticky per X-Request-Key), then rolled back; then as a shadow
# that gets a copy of every request, compared with the answers served and never returned.
"$DLSYS" deploy update digits --canary digits@1 --weight 20 --server "$URL" | grep canary
/usr/bin/python3 scripts/demo_serve.py "$URL" digits "$DIR/digits/val_x.npy" "$DIR/digits/val_y.npy"
"$DLSYS" deploy show digits --server "$URL" | grep -A1 "canary:"
"$DLSYS" deploy rollback digits --server "$URL" | head -1
"$DLSYS" deploy update digits --shadow digits@1 --server "$URL" >/dev/null
/usr/bin/python3 scripts/demo_serve.py "$URL" digits "$DIR/digits/val_x.npy" "$DIR/digits/val_y.npy"
"$DLSYS" deploy show digits --server "$URL" | grep "shadow:"
"$DLSYS" deploy list --server "$URL"

step "8/13 the training service: a train job killed with SIGKILL mid-run, retried from its checkpoint to the same weights"
"$DLSYS" jobs submit examples/jobs/digits-train.yaml --server "$URL"
# Wait for its first checkpoint (every 100 steps), then kill its process as a crash would.
for _ in $(seq 300); do
  [ -e "$HOME_DIR/jobs/1/run/checkpoints/latest" ] && break
  sleep 0.05
done
PID=$("$DLSYS" jobs show 1 --json --server "$URL" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
[ "$PID" -gt 1 ] || { "$DLSYS" jobs show 1 --server "$URL"; echo "job 1 is not running"; exit 1; }
kill -KILL -- "-$PID" && echo "killed job 1's process group $PID (its latest checkpoint: $(cat "$HOME_DIR/jobs/1/run/checkpoints/latest"))"
"$DLSYS" jobs logs 1 -f --server "$URL" | grep -c '"event":"eval"' | sed 's/^/epoch evaluations in the log, both attempts: /'
"$DLSYS" jobs list --server "$URL"
# The same job without the kill, trained directly: byte-identical weights.
"$DLSYS" train examples/digits/mlp.yaml --set epochs=60 --set target_accuracy=0 --set lr=0.002 \
  --set train.checkpoint_every=100 --threads 1 --out "$DIR/digits-uninterrupted" --json >/dev/null
cmp "$HOME_DIR/jobs/1/run/model.onnx" "$DIR/digits-uninterrupted/model.onnx" \
  && echo "the retried job's model.onnx is byte-identical to the uninterrupted run's"

step "9/13 hyperparameter search: 27 random trials of the digits MLP, stopped early by ASHA, the best registered"
"$DLSYS" search submit examples/search/digits-asha.yaml --wait --quiet --server "$URL"
"$DLSYS" search show 1 --server "$URL" | head -12
"$DLSYS" models list --server "$URL"
kill -TERM "$SERVER"
wait "$SERVER"
trap - EXIT

step "13/13 data-parallel training: the digits MLP on 1, 2 and 4 processes (Gloo on loopback, gradient buckets overlapped with the backward pass), the optimizer's state sharded on 2, 4 workers that lose one (it hangs) and go on as 2, and 4 ranks with no supervisor that lose rank 0 and re-form as 2: one model, byte for byte"
# 12 epochs (276 steps): long enough for the faults below to land in the middle of the runs.
EPOCHS=12
for n in 1 2 4; do
  "$DLSYS" train examples/digits/mlp.yaml --set micro_batches=4 --set target_accuracy=0 --epochs $EPOCHS \
    --nproc "$n" --out "$DIR/dp$n" --quiet | grep -E "^trained|^gradients"
done
"$DLSYS" train examples/digits/mlp.yaml --set micro_batches=4 --set target_accuracy=0 --epochs $EPOCHS \
  --nproc 2 --zero 1 --out "$DIR/dpz" --quiet | grep -E "^rank|^trained"
# Rank 3 hangs (SIGSTOP) once the first checkpoint exists: the others' heartbeat names it within
# --heartbeat-s, and --min-workers 2 goes on as 2 workers from that checkpoint.
"$DLSYS" train examples/digits/mlp.yaml --set micro_batches=4 --set target_accuracy=0 --epochs $EPOCHS \
  --nproc 4 --min-workers 2 --heartbeat-s 2 --checkpoint-every 10 --out "$DIR/dpe" --quiet \
  >"$DIR/dpe.out" 2>&1 &
ELASTIC=$!
for _ in $(seq 600); do [ -e "$DIR/dpe/checkpoints/latest" ] && break; sleep 0.05; done
pkill -STOP -f -- "--out $DIR/dpe .*--rank 3 " || echo "(the run ended before rank 3 could be stopped)"
wait "$ELASTIC" || { cat "$DIR/dpe.out"; exit 1; }
grep -E "heartbeat|failed|stopped|continuing|^trained" "$DIR/dpe.out"
# Four ranks started one by one, as on four machines (no supervisor), meeting in a shared
# folder: rank 0, which writes the checkpoints, is killed once the first one exists. The others
# re-form the group by themselves: ranks 1 and 2 go on as 0 and 1, rank 3 is not needed.
for r in 0 1 2 3; do
  "$DLSYS" train examples/digits/mlp.yaml --set micro_batches=4 --set target_accuracy=0 \
    --epochs $EPOCHS --rank "$r" --world-size 4 \
    --rendezvous "file://$(cd "$DIR" && pwd)/dpm-rendezvous" \
    --min-workers 2 --heartbeat-s 1 --threads 1 --checkpoint-every 10 --out "$DIR/dpm" --quiet \
    >"$DIR/dpm-$r.out" 2>&1 &
  eval "MACHINE$r=\$!"
done
for _ in $(seq 600); do [ -e "$DIR/dpm/checkpoints/latest" ] && break; sleep 0.05; done
kill -KILL "$MACHINE0" 2>/dev/null || echo "(the run ended before rank 0 could be killed)"
wait "$MACHINE0" 2>/dev/null || true  # killed: bash would report it
for pid in "$MACHINE1" "$MACHINE2" "$MACHINE3"; do
  wait "$pid" || { cat "$DIR"/dpm-*.out; exit 1; }
done
grep -hE "lost its group|continuing as|not needed" "$DIR"/dpm-[123].out || true
sha256sum "$DIR"/dp1/model.onnx "$DIR"/dp2/model.onnx "$DIR"/dp4/model.onnx "$DIR"/dpz/model.onnx \
  "$DIR"/dpe/model.onnx "$DIR"/dpm/model.onnx
[ "$(sha256sum "$DIR"/dp{1,2,4,z,e,m}/model.onnx | cut -d' ' -f1 | sort -u | wc -l)" = 1 ] ||
  { echo "the models differ"; exit 1; }
echo "the same model from 1, 2 and 4 workers, with the optimizer sharded, after a worker hung,"
echo "and after rank 0 of four ranks with no supervisor was killed"

step "10/13 pipelines: retrain started by new digits data: check, train, evaluate against production, gate, canary at 10%, promote"
# A server of its own (a fresh data directory), run from the repository's root: the pipeline's
# paths are relative to it. Each `data push` is an event of the pipeline's dataset trigger.
start_server "$DIR/flow-home" "$DIR/flow-server.out"
"$DLSYS" pipelines create examples/pipelines/retrain.yaml --server "$URL"
"$DLSYS" pipelines show retrain --server "$URL" | grep trigger
# Waits until run $1 of retrain exists (its trigger started it), then follows it to its end.
follow_run() {
  for _ in $(seq 300); do
    "$DLSYS" pipelines show "$1" --server "$URL" --quiet >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$DLSYS" pipelines show "$1" --wait --server "$URL"
}
head -400 ../shared/data/digits/digits.csv >"$DIR/digits-first-400.csv"
echo "a first, small digits version lands (400 rows):"
"$DLSYS" data push "$DIR/digits-first-400.csv" --name digits --split 0.8,0.2 --server "$URL" | head -1
follow_run 1
echo "the whole digits data lands as the next version:"
"$DLSYS" data push ../shared/data/digits/digits.csv --name digits --split 0.8,0.2 --server "$URL" | head -1
follow_run 2
"$DLSYS" models list --server "$URL"
"$DLSYS" deploy list --server "$URL"
echo "the same version again, by hand: every step up to the evaluation is a cached result"
"$DLSYS" pipelines run retrain -p data=digits@v2 --wait --server "$URL" | grep -E "cached|better|SUCCEEDED$"

step "11/13 monitoring: digits' served inputs against its training data; dimmed inputs drift, the alert starts the retrain pipeline"
# The same server: every request to digits sampled; windows of 2 s so the demo sees them end.
"$DLSYS" deploy update digits --sample-rate 1 --server "$URL" >/dev/null
cat >"$DIR/monitor.yaml" <<'YAML'
defaults: {windows: [2s, 1m], history: 30, drift: {false_alarm_rate: 0.001}}
rules:
  - {name: digits-drift, deployment: digits, signal: drift, window: 2s, severity: critical,
     notify: {pipeline: retrain}}
  - {name: digits-accuracy, deployment: digits, signal: accuracy, window: 1m, below: 0.9}
YAML
"$DLSYS" monitor config apply "$DIR/monitor.yaml" --server "$URL"
/usr/bin/python3 scripts/demo_monitor.py "$URL" digits --seconds 5 --labels "$DIR/labels.csv"
"$DLSYS" monitor feedback digits "$DIR/labels.csv" --server "$URL"
sleep 4  # the last window ends and the monitor's next pass reads it
"$DLSYS" monitor show digits --history 4 --server "$URL" | grep -E "^(reference|c2[0-9] |c3[0-6] )|drifted in|labels|accuracy"
echo "the same traffic with every pixel at half its brightness:"
/usr/bin/python3 scripts/demo_monitor.py "$URL" digits --seconds 5 --scale 0.5 --seed 2
for _ in $(seq 100); do
  "$DLSYS" alerts list --state firing --json --server "$URL" | grep -q digits-drift && break
  sleep 0.2
done
"$DLSYS" alerts list --server "$URL"
"$DLSYS" monitor show digits --history 4 --server "$URL" | grep -E "^(c2[0-9] |c3[0-6] )|drifted in"
echo "the alert started the retrain pipeline (on the newest data: the same version, so its gate decides):"
follow_run 4 | tail -4

step "12/13 the interactive environment: the web UI of this server, the Python client, and a notebook run by dlsys notebook"
echo "the web UI is at $URL/ (a headless chromium draws three of its pages):"
for page in runs models/digits deployments/digits; do
  png="$DIR/ui-${page//\//-}.png"
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --window-size=1400,900 --virtual-time-budget=5000 \
    --screenshot="$png" "$URL/#/$page" >/dev/null 2>&1 && echo "  $URL/#/$page -> $png"
done
echo "the Python client (clients/python, standard library only) logs a run and reads it back:"
PYTHONPATH=clients/python DLSYS_URL="$URL" /usr/bin/python3 - <<'PY'
import dlsys
c = dlsys.Client()
with c.start_run(experiment="demo-client", params={"lr": 0.1}) as run:
    for step in range(100):
        run.log_metric("loss", 1 / (step + 1) + (2.0 if step == 50 else 0), step)
h = c.get_metric_history(run.id, "loss", max_points=12)
print(f"  run {run.id}: {h.total_points} points, {len(h)} kept; the spike at step 50 is",
      "kept" if any(p.step == 50 and p.value > 2 for p in h) else "LOST")
print(f"  models: {[m['name'] for m in c.list_models()]}; deployments: {[d['name'] for d in c.list_deployments()]}")
PY
echo "examples/notebooks/explore.ipynb, run to its end by dlsys notebook against this server:"
DLSYS_EXAMPLE_DATASET=digits DLSYS_EXAMPLE_DEPLOYMENT=digits "$DLSYS" notebook --server "$URL" \
  --dir "$DIR/notebooks" --execute examples/notebooks/explore.ipynb --output "$DIR/explore.ipynb"
kill -TERM "$SERVER"
wait "$SERVER"
trap - EXIT

# A versioned dataset: the digits CSV pushed twice. The second push finds the same data as the
# latest version and makes no new one (as git refuses an empty commit).
"$DLSYS" data push ../shared/data/digits/digits.csv --name digits --data-dir "$HOME_DIR" -m "digits" | tail -2
"$DLSYS" data push ../shared/data/digits/digits.csv --name digits --data-dir "$HOME_DIR" | head -1
"$DLSYS" data versions digits --data-dir "$HOME_DIR"
printf '\nNext: README.md walks through the same steps on your own model.\n'
