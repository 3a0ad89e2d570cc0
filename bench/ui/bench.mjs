#!/usr/bin/env node
// bench/ui: the interactive environment's figures of issue 25 on a `dlsys server` (SQLite in a
// temporary data directory) seeded through its REST API:
//   - RUNS runs (default 100,000) with 20 params and 20 metrics each, of which HISTORY_RUNS
//     (default 1,000) have STEPS-step histories (default 1,000) of all 20 metrics;
//   - metric ingest through the REST batch endpoint (columnar "series", 10,000 points a request,
//     4 connections), in rounds: points/s, median and range;
//   - the REST calls behind the UI's pages, in rounds: the runs page's first page, a filter, a
//     sort by a metric, the 1,000 runs of a comparison and their histories;
//   - with --browser (playwright-core and Debian's chromium, the UI built): the runs page's first
//     screen, a filter and a sort answered on screen, and a comparison of 1,000 runs drawn.
// No peer runs here: MLflow is not installable (no PyPI); its users' figures are in
// docs/benchmarks.md beside ours. Usage:
//   node bench/ui/bench.mjs --dlsys build/dlsys [--runs 100000] [--history-runs 1000]
//     [--steps 1000] [--rounds 3] [--browser] [--json] [--hold: keep the seeded server up]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const flag = (name) => args.includes(name);
const DLSYS = opt('--dlsys', 'build/dlsys');
const RUNS = Number(opt('--runs', 100000));
const HISTORY_RUNS = Number(opt('--history-runs', 1000));
const STEPS = Number(opt('--steps', 1000));
const ROUNDS = Number(opt('--rounds', 3));
const PARAMS = 20, METRICS = 20;
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const fmtRange = (v, digits = 1) =>
  `${median(v).toFixed(digits)} [${Math.min(...v).toFixed(digits)}-${Math.max(...v).toFixed(digits)}]`;
const log = (s) => process.stderr.write(s + '\n');

// ---- the server ----
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dlsys-bench-ui-'));
const server = spawn(DLSYS, ['server', '--data-dir', dataDir, '--port', '0', '--access-log',
  'off', '--no-jobs', '--no-monitor', '--workers', '8'], { stdio: ['ignore', 'pipe', 'inherit'] });
const first = await new Promise((resolve, reject) => {
  const rl = readline.createInterface({ input: server.stdout });
  const timer = setTimeout(() => reject(new Error('the server did not start within 30 s')), 30000);
  rl.once('line', (line) => { clearTimeout(timer); resolve(line); });
  server.once('exit', (code) => reject(new Error(`the server exited (${code}) before it listened`)));
});
const m = /^dlsys server on (http:\/\/[^ ]+)/.exec(first);
if (!m) throw new Error(`unexpected first line from the server: ${first}`);
const URL_BASE = m[1];
const { hostname, port } = new URL(URL_BASE);
const stop = () => { try { server.kill('SIGTERM'); } catch { /* gone */ } };
process.on('exit', () => { stop(); fs.rmSync(dataDir, { recursive: true, force: true }); });

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
function call(method, target, body) {
  const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path: target, agent, timeout: 120000,
      headers: data ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) } : {} },
    (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode >= 400) reject(new Error(`${method} ${target}: ${res.statusCode} ${text.slice(0, 300)}`));
        else resolve(text ? JSON.parse(text) : null);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${target}: no answer within 120 s`)));
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}
async function pool(n, concurrency, fn) {
  let next = 0;
  const workers = Array.from({ length: concurrency }, async () => {
    for (let i; (i = next++) < n;) await fn(i);
  });
  await Promise.all(workers);
}
const time = async (fn) => { const t = performance.now(); await fn(); return performance.now() - t; };

// ---- seeding ----
const exp = await call('POST', '/api/v1/experiments', { name: 'bench-ui' });
const t0 = performance.now();
let done = 0;
const runIds = new Array(RUNS);
await pool(RUNS, 16, async (i) => {
  const params = {};
  for (let p = 0; p < PARAMS; ++p) params[`p${p}`] = `v${(i * 7 + p * 13) % 50}`;
  const run = await call('POST', '/api/v1/runs', { experiment_id: exp.id, name: `run-${i}`, params });
  runIds[i] = run.id;
  const series = [];
  const steps = i < HISTORY_RUNS ? STEPS : 1;
  for (let k = 0; k < METRICS; ++k) {
    const s = [], v = [];
    for (let j = 0; j < steps; ++j) {
      s.push(j);
      // A decaying curve per run with noise, and one spike per history (charts must show it).
      v.push(Math.exp(-j / (200 + (i % 97))) * (1 + k / 10) + ((i * 31 + j * 17 + k) % 100) / 1000 +
        (j === 500 + (i % 100) ? 5 : 0));
    }
    series.push({ key: `m${k}`, steps: s, values: v });
  }
  await call('POST', `/api/v1/runs/${run.id}/log-batch`, { series });
  if (++done % 10000 === 0) log(`seeded ${done}/${RUNS} runs (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
});
const seedSeconds = (performance.now() - t0) / 1000;
log(`seeded ${RUNS} runs (${HISTORY_RUNS} with ${STEPS}-step histories of ${METRICS} metrics) in ${seedSeconds.toFixed(0)} s`);

if (flag('--hold')) {
  // For a look by hand: the seeded server stays up until this process is stopped.
  console.log(`seeded server: ${URL_BASE}/#/runs?experiment=bench-ui (Ctrl-C stops it)`);
  await new Promise(() => {});
}

// ---- ingest ----
const ingestRun = await call('POST', '/api/v1/runs', { experiment: 'bench-ingest' });
const body = (() => {
  const series = [];
  for (let k = 0; k < 2; ++k) {
    const s = [], v = [];
    for (let j = 0; j < 5000; ++j) { s.push(j); v.push(1 / (j + 1 + k)); }
    series.push({ key: k ? 'loss' : 'acc', steps: s, values: v });
  }
  return JSON.stringify({ series });
})();
const ingest = [];
for (let r = 0; r < ROUNDS; ++r) {
  let points = 0;
  const end = performance.now() + 5000;
  const t = performance.now();
  await Promise.all(Array.from({ length: 4 }, async () => {
    while (performance.now() < end) {
      await call('POST', `/api/v1/runs/${ingestRun.id}/log-batch`, body);
      points += 10000;
    }
  }));
  ingest.push(points / ((performance.now() - t) / 1000));
  log(`ingest round ${r + 1}: ${Math.round(ingest[r])} points/s`);
}

// ---- the REST calls behind the pages ----
const e = exp.id;
const q = (s) => encodeURIComponent(s);
const compareIds = runIds.slice(0, 1000);
const cases = {
  [`runs page: first page (50 runs of ${RUNS})`]: () => call('GET', `/api/v1/runs?experiment_ids=${e}&page_size=50`),
  'runs page: filter params.p3 and metrics.m5': () => call('GET', `/api/v1/runs?experiment_ids=${e}&page_size=50&filter=${q("params.p3 = 'v7' and metrics.m5 > 0.5")}`),
  'runs page: sort by metrics.m2 DESC': () => call('GET', `/api/v1/runs?experiment_ids=${e}&page_size=50&order_by=${q('metrics.m2 DESC')}`),
  'compare: 1,000 runs': () => call('POST', '/api/v1/runs/search', { run_ids: compareIds, page_size: 1000 }),
  'compare: 1,000 histories of m0 (200 points each)': () => call('POST', '/api/v1/runs/metric-histories', { run_ids: compareIds, keys: ['m0'], max_points: 200 }),
};
const api = {};
for (const [name, fn] of Object.entries(cases)) {
  await fn();  // warm
  const rounds = [];
  for (let r = 0; r < ROUNDS; ++r) {
    const t = [];
    for (let i = 0; i < 10; ++i) t.push(await time(fn));
    rounds.push(median(t));
  }
  api[name] = rounds;
  log(`${name}: ${fmtRange(rounds)} ms`);
}

// ---- the browser ----
const browser = {};
if (flag('--browser')) {
  const { runBrowserBench } = await import(path.join(here, 'browser.mjs'));
  Object.assign(browser, await runBrowserBench({ url: URL_BASE, experiment: e, compareIds, rounds: ROUNDS, repo, log }));
}

const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) || [])[1] || 'unknown';
const result = { cpu, cores: os.cpus().length, runs: RUNS, history_runs: HISTORY_RUNS, steps: STEPS,
  seed_seconds: seedSeconds, ingest_points_per_s: ingest, api_ms: api, browser_ms: browser };
if (flag('--json')) console.log(JSON.stringify(result));
else {
  console.log(`CPU: ${cpu} (${os.cpus().length} cores); ${RUNS} runs, ${HISTORY_RUNS} with ${STEPS}-step histories; seeded in ${seedSeconds.toFixed(0)} s`);
  console.log(`metric ingest (series, 10,000 points a request, 4 connections): ${fmtRange(ingest.map((x) => x / 1e6), 2)} M points/s (floor 1.00)`);
  for (const [name, v] of Object.entries(api)) console.log(`${name}: ${fmtRange(v)} ms`);
  for (const [name, v] of Object.entries(browser)) console.log(`browser, ${name}: ${fmtRange(v)} ms`);
}
agent.destroy();
process.exit(0);
