// ONNX Runtime as a reference for tests: node run_model.mjs MODEL.onnx FEEDS.json
// FEEDS.json: {"name": {"type": "float32" | "int64" | "string", "dims": [...], "data": [...]}}.
// Prints {"name": {"dims": [...], "data": [...]}} for every output of the model (int64 as
// numbers). Default session options: ONNX Runtime's own graph optimizations and kernels.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

const [model, feedsPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(feedsPath, "utf8"));
const feeds = {};
for (const [name, t] of Object.entries(spec)) {
  let data = t.data;
  if (t.type === "float32") data = Float32Array.from(data);
  else if (t.type === "int64") data = BigInt64Array.from(data.map(BigInt));
  feeds[name] = new ort.Tensor(t.type, data, t.dims);
}
const session = await ort.InferenceSession.create(model);
const results = await session.run(feeds);
const out = {};
for (const [name, t] of Object.entries(results)) {
  const data = t.type === "int64" ? Array.from(t.data, Number) : Array.from(t.data);
  out[name] = { dims: t.dims, data };
}
process.stdout.write(JSON.stringify(out) + "\n");
