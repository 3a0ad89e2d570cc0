// The web UI in a real browser: Debian's chromium, headless, driven by playwright-core (from
// web/node_modules: one lockfile, web/package-lock.json), against a real `dlsys server` on a
// seeded temporary data directory. Every page must load with no console error and no error box;
// the main flows must work: filter and sort runs, compare two, open lineage and follow a node,
// move an alias, promote a canary, cancel a job; with --auth a viewer's token sees no write
// button and an editor's does. A screenshot of each page goes to --out.
//
//   node tests/ui/ui_test.mjs --dlsys build/dlsys --out build/ui-screenshots [--web-dir build/web]
//                             [--chromium /usr/bin/chromium] [--keep]
// Needs `npm ci` in web/ (playwright-core) and the UI built (`npm run build -- --outDir DIR`):
// by default the server finds it beside the binary (build/web) or in $DLSYS_WEB_DIR.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import { REPO, client, seed, startServer, stopServer } from './seed.mjs';

const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const dlsys = path.resolve(arg('--dlsys', path.join(REPO, 'build/dlsys')));
const outDir = path.resolve(arg('--out', path.join(REPO, 'build/ui-screenshots')));
const webDir = arg('--web-dir', '') ? path.resolve(arg('--web-dir')) : '';
const chromiumPath = arg('--chromium', process.env.CHROMIUM ?? '/usr/bin/chromium');
const digitsCsv = path.resolve(arg('--digits', path.join(REPO, '..', 'shared/data/digits/digits.csv')));
const keep = argv.includes('--keep');

function fail(msg) {
  console.error(`ui_test: FAIL: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}

for (const [what, p] of [['dlsys', dlsys], ['chromium', chromiumPath], ['the digits CSV', digitsCsv]]) {
  if (!fs.existsSync(p)) {
    console.error(`ui_test: ${what} not found at ${p}`);
    process.exit(2);
  }
}
let chromium;
try {
  const require = createRequire(path.join(REPO, 'web', 'package.json'));
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error(`ui_test: playwright-core is not installed: run \`npm ci\` in ${path.join(REPO, 'web')} (${e.message})`);
  process.exit(2);
}

fs.mkdirSync(outDir, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dlsys-ui-test-'));
const dataDir = path.join(tmp, 'data');
const serverLog = path.join(tmp, 'server.log');
const extra = webDir ? ['--web-dir', webDir] : [];
const t0 = Date.now();
const log = (s) => console.log(`ui_test: ${s} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

let server = null;
let browser = null;

/** Console errors and page errors of one page, with what is allowed at the moment. */
function watch(page, name) {
  const errors = [];
  const state = { allow: [] };
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const url = msg.location()?.url ?? '';
    if (state.allow.some((re) => re.test(`${text} ${url}`))) return;
    errors.push(`console error: ${text}${url ? ` (${url})` : ''}`);
  });
  page.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
  page.on('requestfailed', (req) => {
    const f = req.failure()?.errorText ?? '';
    if (f.includes('ERR_ABORTED')) return; // a fetch the page aborted when it was left
    errors.push(`request failed: ${req.url()} ${f}`);
  });
  return {
    errors,
    allow(...res) { state.allow.push(...res); },
    reset() { state.allow = []; },
    check(where) {
      if (errors.length) fail(`${where}: ${errors.join('; ')}`);
    },
    name,
  };
}

async function settle(page) {
  // Wait until no "Loading…" placeholder is left (every fetch answered).
  await page.waitForFunction(() => !document.querySelector('.loading') && !document.querySelector('.boot'), null, { timeout: 15000 })
    .catch(() => {});
  await page.waitForTimeout(150);
}

async function visit(page, w, base, hash, name, opts = {}) {
  await page.goto(`${base}/${hash}`);
  await page.waitForSelector(opts.selector ?? 'main .page h1', { timeout: 15000 }).catch(() => fail(`page ${name} (${hash}): ${opts.selector ?? 'its heading'} did not appear`));
  await settle(page);
  if (opts.wait) await opts.wait();
  const errBoxes = await page.$$eval('.error', (els) => els.map((e) => e.textContent));
  if (errBoxes.length && !opts.errorsAllowed) fail(`page ${name} (${hash}) shows an error: ${errBoxes.join(' | ')}`);
  const blank = await page.$eval('main', (m) => m.innerText.trim().length).catch(() => 0);
  if (!blank) fail(`page ${name} (${hash}) is blank`);
  w.check(`page ${name} (${hash})`);
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
}

async function main() {
  log(`server on a new data directory ${dataDir}`);
  ({ proc: server } = await startServer(dlsys, dataDir, extra, serverLog).then((r) => { base = r.url; return r; }));
  const home = await fetch(`${base}/`);
  const homeText = await home.text();
  if (home.status !== 200 || !homeText.includes('<script')) {
    fail(`GET / answers ${home.status} without the UI: ${homeText.slice(0, 300)}\nbuild it (cd web && npm ci && npm run build -- --outDir DIR) and pass --web-dir DIR`);
  }
  log('seeding');
  const ids = await seed({ dlsys, url: base, work: path.join(tmp, 'work'), digitsCsv, log: (s) => log(`seed: ${s}`) });
  const api = client(base);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const w = watch(page, 'admin');
  const r0 = ids.experimentRuns[0];

  // ---- every page ----
  const pages = [
    ['#/', 'overview'],
    ['#/datasets', 'datasets'],
    ['#/datasets/digits', 'dataset-digits', { wait: () => page.waitForSelector('[data-testid=diff]') }],
    ['#/datasets/digits/v2', 'dataset-version'],
    ['#/datasets/sensors/v2', 'dataset-validation', { wait: () => page.waitForSelector('[data-testid=validation]') }],
    ['#/datasets/sensors.quarantine/v1', 'dataset-quarantine'],
    ['#/runs', 'runs', { selector: 'table.runs' }],
    [`#/runs/${ids.experimentRuns[3]}`, 'run', { wait: () => page.waitForSelector('.chart-cell .uplot') }],
    [`#/runs/${ids.trainedRun}`, 'run-trained', { wait: () => page.waitForSelector('[data-testid=lineage-graph]') }],
    [`#/compare?runs=${ids.experimentRuns.slice(0, 10).join(',')}`, 'compare-10', { wait: () => page.waitForSelector('[data-testid=diff-table]') }],
    ['#/compare?experiment=sweep', 'compare-experiment', { wait: () => page.waitForSelector('[data-testid=parallel]') }],
    ['#/models', 'models'],
    ['#/models/digits', 'model', { wait: () => page.waitForSelector('[data-testid=lineage-graph]') }],
    ['#/lineage/model_version/digits%2F1', 'lineage', { wait: () => page.waitForSelector('[data-testid=lineage-graph]') }],
    ['#/deployments', 'deployments'],
    ['#/deployments/digits', 'deployment', { wait: () => page.waitForSelector('[data-testid=live]', { timeout: 8000 }) }],
    ['#/jobs', 'jobs'],
    [`#/jobs/${ids.doneJob}`, 'job', { wait: () => page.waitForFunction(() => (document.querySelector('[data-testid=log]')?.textContent ?? '').includes('done')) }],
    ['#/searches', 'searches'],
    ...(ids.searchId ? [[`#/searches/${ids.searchId}`, 'search']] : []),
    ['#/pipelines', 'pipelines'],
    ['#/pipelines/hello-flow', 'pipeline', { wait: () => page.waitForSelector('[data-testid=pipeline-graph]') }],
    [`#/pipelines/hello-flow/runs/${ids.pipelineRun}`, 'pipeline-run', { wait: () => page.waitForSelector('[data-testid=pipeline-graph]') }],
    ['#/monitoring', 'monitoring'],
    ['#/monitoring/digits', 'monitoring-digits', { wait: () => page.waitForSelector('[data-testid=heatmap]') }],
    ['#/alerts', 'alerts'],
  ];
  for (const [hash, name, opts] of pages) {
    await visit(page, w, base, hash, name, opts);
    log(`page ${name} ok`);
  }

  // ---- runs: filter, a filter error in the server's words, sort ----
  await visit(page, w, base, '#/runs?experiment=sweep', 'runs-sweep', { selector: 'table.runs' });
  const rowsOf = () => page.$$eval('table.runs tbody tr', (trs) => trs.length);
  if ((await rowsOf()) !== 30) fail(`runs: the experiment sweep shows ${await rowsOf()} runs, not 30`);
  await page.fill('[data-testid=filter]', "metrics.loss < 0.2 and params.optimizer = 'adam'");
  await page.click('form.toolbar button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('filter='));
  await page.waitForSelector('table.runs, .empty');
  await settle(page);
  const sweepId = (await api.get('/api/v1/experiments?name=sweep')).experiments[0].id;
  const want = (await api.get(`/api/v1/runs?experiment_ids=${sweepId}&filter=${encodeURIComponent("metrics.loss < 0.2 and params.optimizer = 'adam'")}&page_size=100`)).runs.length;
  const got = await rowsOf();
  if (got !== want || want === 0 || want === 30) fail(`runs: the filter shows ${got} runs, the server finds ${want}`);
  await page.screenshot({ path: path.join(outDir, 'runs-filtered.png'), fullPage: true });
  w.check('runs filtered');
  log(`filter ok (${got} runs)`);
  w.allow(/status of 400/);
  await page.fill('[data-testid=filter]', 'colour = 1');
  await page.click('form.toolbar button[type=submit]');
  const errText = await page.waitForSelector('[data-testid=filter-error]', { timeout: 10000 }).then((e) => e.textContent()).catch(() => '');
  if (!/unknown field 'colour'/.test(errText)) fail(`runs: a bad filter shows "${errText}", not the server's message`);
  await page.screenshot({ path: path.join(outDir, 'runs-filter-error.png'), fullPage: true });
  w.check('runs filter error');
  w.reset();
  await page.goto(`${base}/#/runs?experiment=sweep`);
  await page.waitForSelector('table.runs');
  await page.click('table.runs thead button.sort:text("Name")');
  await page.waitForFunction(() => new URLSearchParams(location.hash.split('?')[1] ?? '').get('order_by') === 'name DESC');
  await page.waitForSelector('table.runs');
  await settle(page);
  const names = await page.$$eval('table.runs tbody tr td:nth-child(3)', (tds) => tds.map((t) => t.textContent));
  if (names[0] !== 'trial-29' || names[names.length - 1] !== 'trial-00') fail(`runs: sorted by name DESC the first is ${names[0]} and the last ${names[names.length - 1]}`);
  w.check('runs sorted');
  log('sort ok');

  // ---- compare two ----
  const boxes = await page.$$('table.runs tbody input.pick');
  await boxes[0].check();
  await boxes[1].check();
  await page.click('[data-testid=compare]');
  await page.waitForFunction(() => location.hash.startsWith('#/compare?runs='));
  await page.waitForSelector('[data-testid=diff-table]');
  await page.waitForSelector('.chart-cell .uplot');
  await settle(page);
  const cmpRows = await page.$$eval('[data-testid=diff-table] tbody tr', (t) => t.length);
  if (cmpRows !== 2) fail(`compare: the table of differences has ${cmpRows} rows, not 2`);
  const charts = await page.$$eval('.chart-cell .uplot', (c) => c.length);
  if (charts < 3) fail(`compare: ${charts} charts, expected one per metric key (3)`);
  await page.screenshot({ path: path.join(outDir, 'compare-two.png'), fullPage: true });
  w.check('compare two');
  log('compare ok');

  // ---- the spike survives downsampling: run 4 of the sweep logged loss 9.5 at step 137 ----
  await page.goto(`${base}/#/compare?runs=${ids.experimentRuns[3]}&metric=loss&step=137`);
  await page.waitForSelector('[data-testid=diff-table]');
  await settle(page);
  const maxCell = await page.$eval('[data-testid=diff-table] tbody tr td:nth-last-child(4)', (td) => td.textContent);
  const atStep = await page.$eval('[data-testid=diff-table] tbody tr td:nth-last-child(2)', (td) => td.textContent);
  if (maxCell !== '9.5' || atStep !== '9.5') fail(`compare: the spike of 9.5 at step 137 shows as max ${maxCell}, at step ${atStep}`);
  w.check('compare spike');
  log('spike ok');

  // ---- 120 runs: past 50 the curves are drawn from each run's own points; the spike of run
  // 77 (100 at step 20, every other value below 2.2) is on the canvas's top quarter; the
  // table of differences shows 100 rows and a button for the rest ----
  await page.goto(`${base}/#/compare?runs=${ids.manyRuns.join(',')}`);
  await page.waitForSelector('[data-testid=diff-table]');
  await page.waitForSelector('.chart-cell[data-metric=loss] .uplot');
  await settle(page);
  const coloredTop = await page.$eval('.chart-cell[data-metric=loss] canvas', (c) => {
    const g = c.getContext('2d');
    const { data } = g.getImageData(0, 0, c.width, Math.floor(c.height / 4));
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, gg, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0 && Math.max(r, gg, b) - Math.min(r, gg, b) > 60) n++; // a run's colour, not the grey of the grid
    }
    return n;
  });
  if (coloredTop < 5) fail(`compare 120: the spike of run 77 is not drawn (${coloredTop} coloured pixels in the chart's top quarter)`);
  const rows120 = () => page.$$eval('[data-testid=diff-table] tbody tr', (t) => t.length);
  if ((await rows120()) !== 100) fail(`compare 120: the table shows ${await rows120()} rows at first, not 100`);
  await page.click('[data-testid=diff-more]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=diff-table] tbody tr').length === 120);
  await page.screenshot({ path: path.join(outDir, 'compare-120.png'), fullPage: true });
  w.check('compare 120');
  log(`compare 120 ok (${coloredTop} coloured pixels of the spike)`);

  // ---- lineage: from the model's graph to the run's page ----
  await page.goto(`${base}/#/models/digits`);
  await page.waitForSelector('[data-testid=lineage-graph]');
  await settle(page);
  await page.click(`[data-testid=lineage-graph] [data-node="run:${ids.trainedRun}"]`);
  await page.waitForFunction((id) => location.hash === `#/runs/${id}`, ids.trainedRun);
  await page.waitForSelector('main .page h1');
  await settle(page);
  w.check('lineage click');
  await page.goto(`${base}/#/lineage/run/${ids.trainedRun}`);
  await page.waitForSelector('[data-testid=lineage-graph]');
  await page.click('[data-testid=lineage-graph] [data-node^="dataset_version:digits@"]');
  await page.waitForFunction(() => location.hash.startsWith('#/datasets/digits/'));
  await page.waitForSelector('main .page h1');
  await settle(page);
  w.check('lineage to dataset');
  log('lineage ok');

  // ---- zoom a chart: the visible steps are fetched again ----
  await page.goto(`${base}/#/runs/${ids.experimentRuns[3]}`);
  const over = await page.waitForSelector('.chart-cell[data-metric=loss] .u-over');
  await settle(page);
  const cap0 = await page.textContent('.chart-cell[data-metric=loss] .chart-caption');
  if (/steps \d/.test(cap0)) fail(`run: the loss chart fetched a step range before any zoom: ${cap0}`);
  const bb = await over.boundingBox();
  await page.mouse.move(bb.x + bb.width * 0.6, bb.y + bb.height / 2);
  await page.mouse.down();
  await page.mouse.move(bb.x + bb.width * 0.75, bb.y + bb.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => /steps \d+–\d+/.test(document.querySelector('.chart-cell[data-metric=loss] .chart-caption')?.textContent ?? ''), null, { timeout: 10000 })
    .catch(() => fail('run: zooming the loss chart fetched nothing'));
  await page.screenshot({ path: path.join(outDir, 'run-zoomed.png'), fullPage: true });
  w.check('zoom');
  log('zoom ok');

  // ---- move an alias ----
  await page.goto(`${base}/#/models/digits`);
  await page.waitForSelector('[data-alias-row=staging]');
  await page.selectOption('select[data-alias=staging]', '1');
  await page.click('[data-testid=move-staging]');
  await page.waitForFunction(() => /moved/.test(document.querySelector('[data-alias-row=staging] .action-status')?.textContent ?? ''));
  const staging = await api.get('/api/v1/models/digits/aliases/staging');
  if (staging.version !== 1) fail(`models: staging points at ${staging.version} after the move to 1`);
  await page.waitForTimeout(800);
  await settle(page);
  await page.screenshot({ path: path.join(outDir, 'alias-moved.png'), fullPage: true });
  w.check('alias move');
  log('alias ok');

  // ---- change the canary weight, then promote it ----
  await page.goto(`${base}/#/deployments/digits`);
  await page.waitForSelector('[data-testid=promote]');
  await page.fill('[data-testid=weight]', '30');
  await page.click('[data-testid=set-weight]');
  await page.waitForFunction(() => /at 30%/.test(document.querySelector('[data-testid=deploy-actions]')?.textContent ?? '') || document.querySelector('[data-testid=deploy-actions] .action-status.bad'), null, { timeout: 15000 })
    .catch(() => fail('deployment: changing the canary weight did not answer'));
  const weightErr = await page.$eval('[data-testid=deploy-actions]', (el) => el.querySelector('.action-status.bad')?.textContent ?? '');
  if (weightErr) fail(`deployment: changing the canary weight failed: ${weightErr}`);
  let dep = await api.get('/api/v1/deployments/digits');
  if (dep.config.canary?.weight !== 30) fail(`deployment: the canary weight is ${dep.config.canary?.weight} after setting 30`);
  // The actions are rebuilt when the deployment's status catches up with the new weight (a poll
  // every 2 s): a click that lands on a button being replaced sends nothing, so click again until
  // the POST is seen (never twice once it was sent).
  for (let i = 0; i < 5; i++) {
    await page.waitForSelector('[data-testid=promote]');
    const sent = page.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/promote'), { timeout: 3000 }).catch(() => null);
    await page.click('[data-testid=promote]');
    if (await sent) break;
  }
  // The answer shows briefly ("promoted: ..."), then the page redraws without a canary: either
  // proves the click was answered.
  await page.waitForFunction(() => /promoted/.test(document.body.textContent ?? '') || document.querySelector('[data-testid=start-canary]'), null, { timeout: 20000 }).catch(() => fail('deployment: promote did not answer'));
  dep = await api.get('/api/v1/deployments/digits');
  const prod = await api.get('/api/v1/models/digits/aliases/production');
  if (dep.config.canary || prod.version !== 2) fail(`deployment: after promote the canary is ${JSON.stringify(dep.config.canary)} and production points at ${prod.version}`);
  await page.waitForTimeout(2500);
  await page.screenshot({ path: path.join(outDir, 'deployment-promoted.png'), fullPage: true });
  w.check('promote');
  log('promote ok');

  // ---- cancel the sleeping job ----
  await page.goto(`${base}/#/jobs/${ids.sleeperJob}`);
  await page.waitForSelector(`[data-testid=cancel-${ids.sleeperJob}]`, { timeout: 15000 }).catch(() => fail('job: no cancel button on the sleeping job'));
  await page.click(`[data-testid=cancel-${ids.sleeperJob}]`);
  await page.waitForFunction(() => /CANCELLED/.test(document.querySelector('[data-testid=job-state]')?.textContent ?? ''), null, { timeout: 30000 })
    .catch(() => fail('job: the page never showed the job CANCELLED'));
  const job = await api.get(`/api/v1/jobs/${ids.sleeperJob}`);
  if (job.state !== 'CANCELLED') fail(`job: state ${job.state} after cancel`);
  await page.screenshot({ path: path.join(outDir, 'job-cancelled.png'), fullPage: true });
  w.check('cancel job');
  log('cancel ok');
  await context.close();

  // ---- with --auth: a login form; a viewer sees no write button, an editor does ----
  await stopServer(server);
  server = null;
  const token = (role) => {
    const out = execFileSync(dlsys, ['tokens', 'create', '--role', role, '--name', `ui-${role}`, '--data-dir', dataDir, '--json', '--quiet'], { encoding: 'utf8' });
    try {
      return JSON.parse(out).token;
    } catch {
      return out.trim().split(/\s+/).pop();
    }
  };
  const viewer = token('viewer');
  const editor = token('editor');
  ({ proc: server } = await startServer(dlsys, dataDir, ['--auth', ...extra], serverLog).then((r) => { base = r.url; return r; }));
  log('server with --auth');
  const ctx2 = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p2 = await ctx2.newPage();
  const w2 = watch(p2, 'auth');
  w2.allow(/status of 401/);
  await p2.goto(`${base}/#/deployments/digits`);
  await p2.waitForSelector('[data-testid=login]').catch(() => fail('auth: no login form without a token'));
  await p2.screenshot({ path: path.join(outDir, 'login.png'), fullPage: true });
  await p2.fill('[data-testid=token]', 'not-a-token');
  await p2.click('[data-testid=login] button[type=submit]');
  await p2.waitForSelector('.login-error .error').catch(() => fail('auth: a bad token was not refused in words'));
  await p2.fill('[data-testid=token]', viewer);
  await p2.click('[data-testid=login] button[type=submit]');
  await p2.waitForSelector('[data-testid=whoami]');
  w2.reset();
  const who = await p2.textContent('[data-testid=whoami]');
  if (!/viewer/.test(who)) fail(`auth: signed in with a viewer token, the page says "${who}"`);
  if (await p2.evaluate(() => location.href.includes('token'))) fail('auth: the token is in the URL');
  await p2.waitForSelector('[data-testid=readonly]').catch(() => fail('auth: the viewer is not told the deployment is read-only'));
  await settle(p2);
  if (await p2.$('[data-testid=promote], [data-testid=rollback], [data-testid=set-weight], [data-testid=deploy-actions]')) fail('auth: a viewer sees deployment write buttons');
  await p2.screenshot({ path: path.join(outDir, 'viewer-deployment.png'), fullPage: true });
  await visit(p2, w2, base, '#/jobs', 'viewer-jobs');
  if (await p2.$('[data-testid^=cancel-]')) fail('auth: a viewer sees a cancel button');
  await visit(p2, w2, base, '#/models/digits', 'viewer-model');
  if (await p2.$('[data-testid^=move-]')) fail('auth: a viewer sees alias move buttons');
  await visit(p2, w2, base, `#/runs/${r0}`, 'viewer-run', { wait: () => p2.waitForSelector('.chart-cell .uplot') });
  w2.check('viewer');
  log('viewer ok');
  await ctx2.close();
  const ctx3 = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const p3 = await ctx3.newPage();
  const w3 = watch(p3, 'editor');
  w3.allow(/status of 401/);
  await p3.goto(`${base}/#/deployments/digits`);
  await p3.waitForSelector('[data-testid=login]');
  await p3.fill('[data-testid=token]', editor);
  await p3.click('[data-testid=login] button[type=submit]');
  await p3.waitForSelector('[data-testid=deploy-actions]').catch(() => fail('auth: an editor sees no deployment actions'));
  w3.reset();
  await settle(p3);
  await p3.screenshot({ path: path.join(outDir, 'editor-deployment.png'), fullPage: true });
  w3.check('editor');
  await ctx3.close();
  log('editor ok');
}

let base = '';
try {
  await main();
  log(`PASS: screenshots in ${outDir}`);
} catch (e) {
  if (!process.exitCode) {
    console.error(`ui_test: FAIL: ${e.stack ?? e}`);
    process.exitCode = 1;
  }
  if (fs.existsSync(serverLog)) console.error(`ui_test: server log: ${serverLog}\n${fs.readFileSync(serverLog, 'utf8').split('\n').slice(-30).join('\n')}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  if (server) await stopServer(server);
  if (!keep && !process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
  else console.log(`ui_test: data kept in ${tmp}`);
}
