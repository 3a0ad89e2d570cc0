// bench/ui's browser part (bench.mjs --browser): the runs page and a comparison timed in Debian's
// chromium, headless, driven by playwright-core (web/node_modules), against the seeded server.
// Each round opens a new browser context (nothing cached) and measures, from the user's action to
// the answer drawn, on the page's own clock (performance.now(), from the navigation's start: the
// harness's own latency to start a renderer is not counted; a MutationObserver sees the answer
// appear and notes the time at the second animation frame after, when it has been drawn):
//   - first screen: navigation to the runs page until its table holds rows;
//   - filter: the filter submitted until the new table is drawn;
//   - sort: a metric column's header clicked until the new table is drawn;
//   - compare: navigation to a comparison of 1,000 runs (the UI's files cached, as after any page
//     of it) until its charts, its table of differences and its parallel coordinates are drawn;
//     and the same in a browser that never loaded the UI.
import path from 'node:path';
import { createRequire } from 'node:module';

export async function runBrowserBench({ url, compareIds, rounds, repo, log }) {
  const require = createRequire(path.join(repo, 'web', 'package.json'));
  const { chromium } = require('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  const out = { 'runs page, first screen': [], 'runs page, filter': [], 'runs page, sort by a metric': [],
    'compare 1,000 runs': [], 'compare 1,000 runs, the UI not cached': [] };
  // The table that is there now is marked; the answer is the next one drawn.
  const markTable = (page) => page.evaluate(() => document.querySelector('table.runs')?.setAttribute('data-old', '1'));
  const newTable = (page) => page.waitForFunction(() => {
    const t = document.querySelector('table.runs:not([data-old])');
    return (t && t.querySelector('tbody tr')) || document.querySelector('main .empty');
  }, null, { timeout: 30000 });
  // In the page, from the document's start: the first performance.now() at which each answer is
  // on screen, checked at every DOM change.
  const observer = () => {
    const tests = {
      runsTable: () => document.querySelector('table.runs tbody tr') !== null,
      compared: () => document.querySelector('[data-testid=diff-table]') !== null &&
        document.querySelector('.chart-cell .uplot') !== null && document.querySelector('[data-testid=parallel]') !== null &&
        !document.querySelector('.loading'),
    };
    // Noted once the frame that shows it is drawn: the second animation frame after the DOM
    // change (what the page's scripts, style, layout and paint took in between is counted).
    window.__first = {};
    const pending = new Set();
    const obs = new MutationObserver(() => {
      for (const [name, test] of Object.entries(tests))
        if (!(name in window.__first) && !pending.has(name) && test()) {
          pending.add(name);
          requestAnimationFrame(() => requestAnimationFrame(() => { window.__first[name] = performance.now(); }));
        }
    });
    obs.observe(document, { childList: true, subtree: true, attributes: true });
    // The user's action, on the same clock (the harness's click first waits for the element).
    document.addEventListener('click', () => { window.__clickAt = performance.now(); }, true);
  };
  // Since the last click, until the frame after the new table appeared is drawn.
  const sinceClick = (page) => page.evaluate(() => new Promise((resolve) =>
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - window.__clickAt)))));
  const first = (page, name) => page.waitForFunction((n) => window.__first && window.__first[n], name, { timeout: 60000 }).then((h) => h.jsonValue());
  try {
    for (let r = 0; r < rounds; ++r) {
      const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      await context.addInitScript(observer);
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`${url}/#/runs?experiment=bench-ui&cols=params.p3,metrics.m2,metrics.m5`);
      out['runs page, first screen'].push(await first(page, 'runsTable'));

      await markTable(page);
      await page.fill('[data-testid=filter]', "params.p3 = 'v7' and metrics.m5 > 0.5");
      await page.click('form.toolbar button[type=submit]');
      await newTable(page);
      out['runs page, filter'].push(await sinceClick(page));

      await markTable(page);
      await page.click('table.runs thead button.sort:text("metrics.m2")');
      await newTable(page);
      out['runs page, sort by a metric'].push(await sinceClick(page));

      // A new document (the harness's clock would count a renderer's start).
      await page.goto('about:blank');
      await page.goto(`${url}/#/compare?runs=${compareIds.join(',')}`);
      out['compare 1,000 runs'].push(await first(page, 'compared'));
      // The same from a browser that never loaded the UI (its script not cached or compiled).
      const cold = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      await cold.addInitScript(observer);
      const coldPage = await cold.newPage();
      coldPage.on('pageerror', (e) => errors.push(String(e)));
      await coldPage.goto(`${url}/#/compare?runs=${compareIds.join(',')}`);
      out['compare 1,000 runs, the UI not cached'].push(await first(coldPage, 'compared'));
      await cold.close();
      if (errors.length) throw new Error(`the page failed: ${errors.join('; ')}`);
      log(`browser round ${r + 1}: ${Object.entries(out).map(([k, v]) => `${k} ${v[r].toFixed(0)} ms`).join(', ')}`);
      await context.close();
    }
  } finally {
    await browser.close();
  }
  return out;
}
