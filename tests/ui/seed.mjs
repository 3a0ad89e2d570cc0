// Seeds a running `dlsys server` with something on every page of the web UI: two dataset
// versions (a diff with drift) and a dataset with quarantined rows, an experiment of 30 runs with
// params and metric histories (one with a spike), a model trained on the dataset (two versions,
// production alias, a deployment with a canary and request sampling), inference traffic, a job
// that sleeps (to be cancelled), a job that logs and ends, a pipeline run, and a tiny search.
//
// Used by ui_test.mjs; also on its own to get a server to develop against:
//   node tests/ui/seed.mjs --dlsys build/dlsys [--dir /tmp/uidev] [--port 8099]
// which starts a server on a new data directory, seeds it, prints its URL and keeps it running.
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Starts `dlsys server` and resolves with {url, proc} once it printed its address. */
export function startServer(dlsys, dataDir, extra = [], logFile = null) {
  return new Promise((resolve, reject) => {
    const args = ['server', '--data-dir', dataDir, '--port', '0', '--access-log', 'off',
      '--monitor-interval-ms', '500', '--job-stop-grace-s', '1', ...extra];
    const proc = spawn(dlsys, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let done = false;
    const log = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : null;
    const onData = (chunk) => {
      const s = chunk.toString();
      if (log) log.write(s);
      if (done) return;
      out += s;
      const m = out.match(/^dlsys server on (http:\/\/\S+)/m);
      if (m) { done = true; clearTimeout(timer); resolve({ url: m[1], proc }); }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('error', (e) => {
      if (!done) { done = true; clearTimeout(timer); reject(new Error(`dlsys server could not start: ${e.message}`)); }
    });
    proc.on('exit', (code) => {
      if (!done) { done = true; clearTimeout(timer); reject(new Error(`dlsys server exited (${code}) before it started:\n${out}`)); }
    });
    const timer = setTimeout(() => {
      if (!done) { done = true; proc.kill('SIGKILL'); reject(new Error(`dlsys server did not start in 30 s:\n${out}`)); }
    }, 30000);
  });
}

/** Stops a server started by startServer (SIGTERM, then SIGKILL after 10 s). */
export function stopServer(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
    proc.on('exit', () => { clearTimeout(t); resolve(); });
    proc.kill('SIGTERM');
  });
}

export function client(url, token = '') {
  async function call(method, p, body, headers = {}) {
    const h = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      if (typeof body === 'string' || body instanceof Uint8Array) payload = body;
      else { payload = JSON.stringify(body); h['Content-Type'] = 'application/json'; }
    }
    const r = await fetch(url + p, { method, headers: h, body: payload });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status}: ${text.slice(0, 500)}`);
    try { return JSON.parse(text); } catch { return text; }
  }
  return {
    get: (p) => call('GET', p),
    post: (p, b, h) => call('POST', p, b ?? {}, h),
    put: (p, b) => call('PUT', p, b),
    patch: (p, b) => call('PATCH', p, b),
  };
}

async function cli(dlsys, args, env = {}) {
  try {
    const { stdout } = await execFileP(dlsys, args, {
      cwd: REPO, env: { ...process.env, ...env }, maxBuffer: 64 << 20, timeout: 180000,
    });
    return stdout;
  } catch (e) {
    throw new Error(`dlsys ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, timeoutMs = 60000, everyMs = 300) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

// Deterministic pseudo-random numbers (the same seed data every time).
function rng(seed) {
  let s = seed >>> 0;
  return () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 4294967296; };
}

/**
 * Seeds the server at `url`. Returns ids the test uses:
 * {experimentRuns, manyRuns, trainedRun, sleeperJob, doneJob, pipelineRun, searchId}.
 */
export async function seed({ dlsys, url, token = '', work, digitsCsv, log = () => {} }) {
  const api = client(url, token);
  const env = { DLSYS_SERVER: url, DLSYS_TOKEN: token };
  fs.mkdirSync(work, { recursive: true });
  const ids = {};

  // ---- jobs first: they run while the rest is seeded ----
  log('jobs');
  const sleeper = await api.post('/api/v1/jobs', {
    kind: 'command', name: 'sleeper', command: ['sleep', '600'], working_dir: work,
    resources: { threads: 1, memory: 0 },
  });
  ids.sleeperJob = sleeper.id;
  const done = await api.post('/api/v1/jobs', {
    kind: 'command', name: 'hello', working_dir: work,
    command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo "step $i: loss 0.$((9 - i))"; done; echo done'],
    resources: { threads: 1, memory: 0 },
  });
  ids.doneJob = done.id;

  // ---- datasets ----
  log('datasets');
  const lines = fs.readFileSync(digitsCsv, 'utf8').trim().split('\n');
  const first = path.join(work, 'digits-first-400.csv');
  fs.writeFileSync(first, lines.slice(0, 400).join('\n') + '\n');
  await cli(dlsys, ['data', 'push', first, '--name', 'digits', '--split', '0.8,0.2', '-m', 'the first 400 digits', '--quiet'], env);
  await cli(dlsys, ['data', 'push', digitsCsv, '--name', 'digits', '--split', '0.8,0.2', '-m', 'all 1797 digits', '--quiet'], env);
  // A small table with a header, then a new version with two bad rows quarantined.
  const r = rng(7);
  let csv = 'temperature,humidity,site,label\n';
  for (let i = 0; i < 300; i++) csv += `${(20 + 5 * r()).toFixed(2)},${(40 + 20 * r()).toFixed(1)},${['north', 'south', 'east'][i % 3]},${i % 2}\n`;
  await api.post('/api/v1/datasets/sensors/versions?format=csv&message=' + encodeURIComponent('first readings') + '&split=0.8,0.2', csv);
  let csv2 = csv;
  for (let i = 0; i < 200; i++) csv2 += `${(26 + 6 * r()).toFixed(2)},${(45 + 20 * r()).toFixed(1)},${['north', 'south', 'west'][i % 3]},${i % 2}\n`;
  csv2 += '31.5,50.0,south,0,extra\n29.0,48.5\n';
  await api.post('/api/v1/datasets/sensors/versions?format=csv&policy=quarantine&message=' + encodeURIComponent('warmer week, two bad rows') + '&split=0.8,0.2', csv2);

  // ---- an experiment of 30 runs ----
  log('runs');
  const rand = rng(42);
  const runIds = [];
  const makeRun = async (i) => {
    const lr = +(0.0005 * Math.pow(2, i % 6)).toFixed(5);
    const bs = [32, 64, 128][i % 3];
    const opt = i % 4 === 0 ? 'sgd' : 'adam';
    const run = await api.post('/api/v1/runs', {
      experiment: 'sweep', name: `trial-${String(i).padStart(2, '0')}`,
      params: { lr: String(lr), batch_size: String(bs), optimizer: opt, layers: String(2 + (i % 3)) },
      tags: { team: i % 2 ? 'vision' : 'core', purpose: 'ui test' },
    });
    const metrics = [];
    const steps = 200;
    const rate = 0.01 + lr * 5 + rand() * 0.01;
    for (let s = 0; s < steps; s++) {
      let loss = 2.3 * Math.exp(-rate * s) + 0.05 + 0.03 * rand();
      if (i === 3 && s === 137) loss = 9.5; // one spike the charts must not hide
      const acc = Math.min(0.995, 1 - loss / 2.5 + 0.01 * rand());
      metrics.push({ key: 'loss', value: +loss.toFixed(5), step: s, timestamp: 1760000000000 + s * 1000 });
      metrics.push({ key: 'accuracy', value: +acc.toFixed(5), step: s, timestamp: 1760000000000 + s * 1000 });
      if (s % 20 === 19) metrics.push({ key: 'val loss', value: +(loss * 1.1).toFixed(5), step: s, timestamp: 1760000000000 + s * 1000 });
    }
    await api.post(`/api/v1/runs/${run.id}/log-batch`, { metrics });
    if (i !== 29) await api.patch(`/api/v1/runs/${run.id}`, { status: i === 7 ? 'FAILED' : 'FINISHED' });
    return run.id;
  };
  for (let i = 0; i < 30; i += 6) {
    runIds.push(...await Promise.all([0, 1, 2, 3, 4, 5].map((k) => makeRun(i + k))));
  }
  ids.experimentRuns = runIds;
  // ---- 120 small runs (a comparison past 50 series draws them its own way); run 77's loss
  // jumps to 100 at step 20 ----
  ids.manyRuns = [];
  const manyRun = async (i) => {
    const run = await api.post('/api/v1/runs', { experiment: 'many', name: `m-${i}`, params: { seed: String(i), width: String(16 << (i % 4)) } });
    const steps = Array.from({ length: 40 }, (_, s) => s);
    const values = steps.map((s) => (i === 77 && s === 20 ? 100 : +(2 * Math.exp(-0.05 * s) + 0.1 * rand()).toFixed(5)));
    await api.post(`/api/v1/runs/${run.id}/log-batch`, { series: [{ key: 'loss', steps, values }] });
    return run.id;
  };
  for (let i = 0; i < 120; i += 20) ids.manyRuns.push(...(await Promise.all(Array.from({ length: 20 }, (_, k) => manyRun(i + k)))));
  // A small text and a JSON artifact on the first run.
  const jsonArt = JSON.stringify({ note: 'hello from the UI test', classes: 10 }, null, 2);
  await fetch(`${url}/api/v1/runs/${runIds[0]}/artifacts/summary.json`, { method: 'PUT', body: jsonArt, headers: token ? { Authorization: `Bearer ${token}` } : {} });
  await fetch(`${url}/api/v1/runs/${runIds[0]}/artifacts/notes/readme.txt`, { method: 'PUT', body: 'plain text artifact\nline two\n', headers: token ? { Authorization: `Bearer ${token}` } : {} });

  // ---- a model trained on the dataset, registered twice, deployed with a canary ----
  log('train');
  const trainOut = await cli(dlsys, ['train', 'examples/digits/mlp-dataset.yaml', '--out', path.join(work, 'train'), '--epochs', '2', '--threads', '1', '--server', url], env);
  const m = trainOut.match(/tracked as run (\d+)/);
  if (!m) throw new Error(`dlsys train did not say which run it tracked:\n${trainOut}`);
  ids.trainedRun = Number(m[1]);
  log('models');
  await api.post('/api/v1/models', { name: 'digits', description: 'the digits MLP' });
  await api.post('/api/v1/models/digits/versions', { run_id: ids.trainedRun, description: 'first' });
  await api.post('/api/v1/models/digits/versions', { run_id: ids.trainedRun, description: 'second (the canary)' });
  await api.put('/api/v1/models/digits/aliases/production', { version: 1 });
  await api.put('/api/v1/models/digits/aliases/staging', { version: 2 });
  log('deploy');
  await api.post('/api/v1/deployments', {
    name: 'digits', model: 'digits', ref: 'production',
    config: { sample_rate: 1, max_batch: 8, canary: { model: 'digits', version: 2, weight: 20 } },
  });
  // Traffic: 60 requests, some from each side of the canary.
  log('traffic');
  const rows = lines.slice(0, 60).map((l) => l.split(',').map(Number));
  await Promise.all(rows.map(async (row, k) => {
    const body = { id: `req-${k}`, inputs: [{ name: 'input', shape: [1, 64], datatype: 'FP32', data: row.slice(0, 64) }] };
    const res = await fetch(`${url}/v2/models/digits/infer`, {
      method: 'POST', body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json', 'X-Request-Key': `user-${k}`, ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    });
    await res.text();
  }));
  // Labels for live accuracy.
  try {
    await api.post('/api/v1/deployments/digits/feedback', { labels: rows.map((row, k) => ({ id: `req-${k}`, label: String(row[64]) })) });
  } catch (e) { log(`feedback: ${e.message}`); }

  // ---- a pipeline of command steps ----
  log('pipeline');
  const spec = [
    'name: hello-flow',
    'description: prepare -> check -> report, each a command step',
    'params:',
    '  greeting: hello',
    'steps:',
    '  - name: prepare',
    '    kind: command',
    '    with: {command: [sh, -c, "echo ${params.greeting} from prepare"]}',
    '  - name: check',
    '    kind: gate',
    '    needs: [prepare]',
    '    condition: "1 == 1"',
    '  - name: report',
    '    kind: command',
    '    needs: [check]',
    '    with: {command: [sh, -c, "echo report done"]}',
    '',
  ].join('\n');
  await api.post('/api/v1/pipelines', { spec, file: 'hello-flow.yaml' });
  const prun = await api.post('/api/v1/pipelines/hello-flow/runs', { params: {}, trigger: 'manual' });
  ids.pipelineRun = prun.id;

  // ---- a tiny search: 3 trials of 1 epoch ----
  log('search');
  try {
    const s = await api.post('/api/v1/searches', {
      name: 'tiny-asha',
      trial: { spec: path.join(REPO, 'examples/digits/mlp.yaml'), hyperparameters: { target_accuracy: 0 }, resources: { threads: 1 } },
      space: { lr: { log_uniform: [0.001, 0.01] } },
      algorithm: 'random', trials: 3, seed: 1, metric: 'val_accuracy', mode: 'max',
      parallelism: 1, epochs: 3, asha: { min_epochs: 1, reduction_factor: 3 },
    });
    ids.searchId = s.id;
  } catch (e) { log(`search not seeded: ${e.message}`); }

  // Wait for the pipeline run and the short job to end (they are quick).
  log('waiting');
  await until('the pipeline run to end', async () => {
    const pr = await api.get(`/api/v1/pipelines/hello-flow/runs/${ids.pipelineRun}`);
    return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(pr.state);
  }, 90000, 500);
  await until('the hello job to end', async () => {
    const j = await api.get(`/api/v1/jobs/${ids.doneJob}`);
    return ['SUCCEEDED', 'FAILED', 'CANCELLED'].includes(j.state);
  }, 60000, 300);
  return ids;
}

// ---- on its own: a seeded server to develop against ----
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
  const dlsys = path.resolve(arg('--dlsys', path.join(REPO, 'build/dlsys')));
  const dir = arg('--dir', fs.mkdtempSync(path.join(os.tmpdir(), 'dlsys-ui-')));
  const extra = [];
  if (arg('--web-dir')) extra.push('--web-dir', arg('--web-dir'));
  const { url, proc } = await startServer(dlsys, path.join(dir, 'data'), extra, path.join(dir, 'server.log'));
  console.log(`server ${url} (data ${dir}/data)`);
  const t0 = Date.now();
  const ids = await seed({
    dlsys, url, work: path.join(dir, 'work'),
    digitsCsv: arg('--digits', path.join(REPO, '..', 'shared/data/digits/digits.csv')),
    log: (s) => console.log(`seed: ${s} (${((Date.now() - t0) / 1000).toFixed(1)} s)`),
  });
  console.log(JSON.stringify(ids));
  console.log(`seeded in ${((Date.now() - t0) / 1000).toFixed(1)} s; server ${url} keeps running (pid ${proc.pid})`);
}
