// ONNX Runtime peer: node ort_bench.mjs MODEL.onnx --input NAME=FILE.npy [...] --threads N --seconds S
// Prints one JSON object like `dlsys bench --json`. All graph optimizations, sequential execution.
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";

function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString("latin1", hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const data = buf.subarray(hstart + hlen);
  const copy = new Uint8Array(data).buffer;
  if (descr === "<f4") return new ort.Tensor("float32", new Float32Array(copy), shape);
  if (descr === "<i8") return new ort.Tensor("int64", new BigInt64Array(copy), shape);
  if (descr === "<i4") return new ort.Tensor("int32", new Int32Array(copy), shape);
  throw new Error(`${path}: dtype ${descr} not handled by the benchmark`);
}

const args = process.argv.slice(2);
const model = args[0];
let threads = 2, seconds = 3;
const feeds = {};
for (let i = 1; i < args.length; i++) {
  if (args[i] === "--threads") threads = Number(args[++i]);
  else if (args[i] === "--seconds") seconds = Number(args[++i]);
  else if (args[i] === "--input") {
    const [name, file] = args[++i].split("=");
    feeds[name] = readNpy(file);
  }
}
const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: "sequential",
  graphOptimizationLevel: "all",
  executionProviders: ["cpu"],
});
const batch = Object.values(feeds)[0].dims[0];
const t0 = performance.now();
await session.run(feeds);
const first = performance.now() - t0;
const warmEnd = performance.now() + 300;
for (let w = 0; w < 3 || performance.now() < warmEnd; w++) await session.run(feeds);
const lat = [];
const start = performance.now();
while (lat.length < 5 || performance.now() - start < seconds * 1000) {
  const r0 = performance.now();
  await session.run(feeds);
  lat.push(performance.now() - r0);
}
const total = (performance.now() - start) / 1000;
lat.sort((a, b) => a - b);
const pct = (q) => lat[Math.min(lat.length - 1, Math.round(q * (lat.length - 1)))];
console.log(JSON.stringify({ runtime: "onnxruntime", version: ort.env.versions.common, model, batch, threads,
  median_ms: pct(0.5), p90_ms: pct(0.9), items_per_s: (batch * lat.length) / total, runs: lat.length,
  first_run_ms: first }));
