// Deployments: live request rate, latency percentiles, errors and rejections (from successive
// polls of the deployment's status and the server's /metrics histograms), canary and shadow
// with agreement; promote, roll back and change the canary's weight (editors).
import type uPlot from 'uplot';
import { api, canWrite, enc, rawRequest } from '../api';
import { chart } from '../charts';
import { actionButton, badge, chip, empty, fmtBytes, fmtNum, fmtPct, fmtTime, h, jsonBlock, kv, link, loading, pageHeader, replace, section, table } from '../dom';
import { href, route } from '../router';
import type { Deployment, ModelVersion, VersionState } from '../types';

route('deployments', 'Deployments', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('Deployments', 'Models served over KServe v2 at /v2/models/NAME/infer.'));
  const box = h('div', null, loading());
  root.append(box);
  const render = async () => {
    const { deployments } = await api.get<{ deployments: Deployment[] }>('/api/v1/deployments', signal);
    replace(box, table(deployments, [
      { title: 'Deployment', cell: (d) => link(href(['deployments', d.name]), d.name) },
      { title: 'Model', cell: (d) => link(href(['models', d.model]), `${d.model}@${d.ref}`) },
      { title: 'Version', cls: 'num', cell: (d) => d.status?.version ?? '—' },
      { title: 'State', cell: (d) => badge(d.status?.state ?? 'unknown') },
      { title: 'Canary', cell: (d) => (d.status?.canary ? `v${d.status.canary.version} at ${d.status.canary.weight ?? 0}%` : '—') },
      { title: 'Shadow', cell: (d) => (d.status?.shadow ? `v${d.status.shadow.version}, agreement ${fmtPct(d.status.shadow.comparison?.agreement)}` : '—') },
      { title: 'Done', cls: 'num', cell: (d) => d.status?.stats?.done ?? '—' },
      { title: 'Failed', cls: 'num', cell: (d) => d.status?.stats?.failed ?? '—' },
      { title: 'Rejected', cls: 'num', cell: (d) => d.status?.stats?.rejected ?? '—' },
      { title: 'Queue', cls: 'num', cell: (d) => d.status?.stats?.queue_depth ?? '—' },
      { title: 'Memory', cls: 'num', cell: (d) => fmtBytes(d.status?.memory_bytes) },
    ], { emptyText: 'No deployments. Create one with `dlsys deploy create NAME --model MODEL@production`.' }));
  };
  await render();
  ctx.every(3000, render);
});

// ---- /metrics: the serving families of one deployment ----

interface Sample {
  t: number; // seconds
  outcomes: Record<string, number>; // success, error, timeout, rejected (all roles)
  buckets: Map<string, [number, number][]>; // role -> [le, cumulative count]
}

function labelsOf(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out[m[1]] = m[2].replace(/\\(.)/g, '$1');
  return out;
}

function parseMetrics(text: string, name: string): Omit<Sample, 't'> {
  const outcomes: Record<string, number> = {};
  const buckets = new Map<string, [number, number][]>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('dlsys_serve_request')) continue;
    const br = line.indexOf('{');
    const end = line.lastIndexOf('}');
    if (br < 0 || end < 0) continue;
    const metric = line.slice(0, br);
    const lab = labelsOf(line.slice(br + 1, end));
    if (lab.deployment !== name) continue;
    const v = Number(line.slice(end + 1).trim());
    if (metric === 'dlsys_serve_requests_total') outcomes[lab.outcome] = (outcomes[lab.outcome] ?? 0) + v;
    else if (metric === 'dlsys_serve_request_duration_seconds_bucket') {
      const role = `${lab.role} v${lab.version}`;
      if (!buckets.has(role)) buckets.set(role, []);
      buckets.get(role)!.push([lab.le === '+Inf' ? Infinity : Number(lab.le), v]);
    }
  }
  return { outcomes, buckets };
}

/** A quantile from cumulative histogram buckets (linear within the bucket), in seconds. */
function quantile(b: [number, number][], q: number): number | null {
  const sorted = [...b].sort((x, y) => x[0] - y[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (total <= 0) return null;
  const want = q * total;
  let prevLe = 0;
  let prevC = 0;
  for (const [le, c] of sorted) {
    if (c >= want) {
      if (!isFinite(le)) return prevLe;
      const inB = c - prevC;
      return inB > 0 ? prevLe + ((want - prevC) / inB) * (le - prevLe) : le;
    }
    prevLe = le;
    prevC = c;
  }
  return prevLe;
}

function deltaBuckets(a: [number, number][], b: [number, number][]): [number, number][] {
  const before = new Map(a.map(([le, c]) => [le, c]));
  return b.map(([le, c]) => [le, c - (before.get(le) ?? 0)]);
}

route('deployments/:name', 'Deployment', async (ctx) => {
  const { root, signal, params } = ctx;
  const name = params.name;
  root.append(pageHeader(name, link('#/deployments', 'Deployments'), ' / ', name));
  const statusBox = h('div', null, loading());
  const sidesBox = h('div');
  const actionsBox = h('div');
  const liveBox = h('div', { class: 'live' });
  const latBox = h('div', { class: 'latency' });
  const rateChartEl = h('div', { class: 'chart-box' });
  const latChartEl = h('div', { class: 'chart-box' });
  root.append(
    h('div', { class: 'cols2' }, section('Status', statusBox), section('Versions served', sidesBox)),
    section('Live traffic', liveBox, h('div', { class: 'charts' }, h('div', { class: 'chart-cell' }, h('h3', { class: 'chart-title' }, 'Requests per second'), rateChartEl), h('div', { class: 'chart-cell' }, h('h3', { class: 'chart-title' }, 'Latency (ms, over each poll)'), latChartEl)), latBox),
    canWrite() ? section('Actions', actionsBox) : h('p', { class: 'muted', 'data-testid': 'readonly' }, 'Your role may watch this deployment, not change it.'),
  );
  const versions = await api.get<{ versions: ModelVersion[] }>(`/api/v1/models/${enc((await api.get<Deployment>(`/api/v1/deployments/${enc(name)}`, signal)).model)}/versions`, signal).then((v) => v.versions).catch(() => [] as ModelVersion[]);
  const samples: Sample[] = [];
  const series = { t: [] as number[], ok: [] as (number | null)[], err: [] as (number | null)[], rej: [] as (number | null)[], p50: [] as (number | null)[], p90: [] as (number | null)[], p99: [] as (number | null)[] };
  let rateChart: uPlot | null = null;
  let latChart: uPlot | null = null;
  let lastActionsKey = '';
  signal.addEventListener('abort', () => {
    rateChart?.destroy();
    latChart?.destroy();
  });

  const poll = async () => {
    const [d, mtext] = await Promise.all([
      api.get<Deployment>(`/api/v1/deployments/${enc(name)}`, signal),
      rawRequest('GET', '/metrics', undefined, { signal }).then((r) => r.text()).catch(() => ''),
    ]);
    const st = d.status;
    replace(statusBox, kv([
      ['State', badge(st?.state ?? 'unknown')],
      ['Model', h('span', null, link(href(['models', d.model]), d.model), `@${d.ref}`, st ? h('span', null, ' → ', link(href(['models', d.model], { version: st.version }), `v${st.version}`)) : null)],
      ['Instances', String(st?.instances ?? '—')],
      ['Memory', fmtBytes(st?.memory_bytes)],
      ['Version switches', String(st?.switches ?? 0)],
      ['Queue depth', String(st?.stats?.queue_depth ?? '—')],
      ['Error', st?.error ? h('span', { class: 'bad' }, st.error) : '—'],
      ['Created', `${fmtTime(d.created_at)} by ${d.created_by}`],
      ['Updated', fmtTime(d.updated_at)],
      ['Monitoring', link(href(['monitoring', name]), 'drift and live accuracy')],
      ['Config', h('details', null, h('summary', null, 'settings'), jsonBlock(st?.config ?? d.config))],
    ]));
    const side = (role: string, v: VersionState | undefined, extra: (string | Node)[] = []) =>
      v ? h('tr', null, h('td', null, h('strong', null, role)), h('td', null, link(href(['models', v.model], { version: v.version }), `${v.model} v${v.version}`)), h('td', { class: 'num' }, v.weight !== undefined ? `${v.weight}%` : role === 'primary' && st?.canary ? `${100 - (st.canary.weight ?? 0)}%` : role === 'primary' ? '100%' : 'copy'), h('td', { class: 'num' }, String(v.stats?.done ?? '—')), h('td', { class: 'num' }, String(v.stats?.failed ?? '—')), h('td', { class: 'num' }, String(v.stats?.rejected ?? '—')), h('td', null, ...extra)) : null;
    replace(sidesBox, h('table', { class: 'grid compact', 'data-testid': 'sides' },
      h('thead', null, h('tr', null, ['Role', 'Version', 'Share', 'Done', 'Failed', 'Rejected', ''].map((t) => h('th', null, t)))),
      h('tbody', null,
        side('primary', st),
        side('canary', st?.canary),
        side('shadow', st?.shadow, st?.shadow?.comparison ? [chip(`agreement ${fmtPct(st.shadow.comparison.agreement)}`, (st.shadow.comparison.agreement ?? 1) < 0.95 ? 'bad' : 'ok'), ` ${st.shadow.comparison.agreed} agreed, ${st.shadow.comparison.disagreed} disagreed, ${st.shadow.comparison.failed} failed, ${st.shadow.comparison.dropped} dropped`] : []),
      )),
      !st?.canary && !st?.shadow ? h('p', { class: 'muted' }, 'No canary or shadow.') : null,
    );
    // Rates from successive polls.
    const t = Date.now() / 1000;
    const m = parseMetrics(mtext, name);
    const s: Sample = { t, ...m };
    if (!Object.keys(m.outcomes).length && st?.stats) {
      // No serving families in /metrics: fall back to the status counters.
      s.outcomes = { success: st.stats.done + (st.canary?.stats?.done ?? 0), error: st.stats.failed + (st.canary?.stats?.failed ?? 0), rejected: st.stats.rejected + (st.canary?.stats?.rejected ?? 0), timeout: st.stats.expired + (st.canary?.stats?.expired ?? 0) };
    }
    const prev = samples[samples.length - 1];
    samples.push(s);
    if (samples.length > 300) samples.shift();
    const o = s.outcomes;
    const lifetime: [string, number | null, number | null, number | null][] = [...s.buckets.entries()].map(([role, b]) => [role, quantile(b, 0.5), quantile(b, 0.9), quantile(b, 0.99)]);
    if (prev) {
      const dt = Math.max(0.001, t - prev.t);
      const rate = (k: string[]) => Math.max(0, k.reduce((a, x) => a + (o[x] ?? 0) - (prev.outcomes[x] ?? 0), 0) / dt);
      const all: [number, number][] = [];
      // Interval latency over every role: sum the bucket deltas.
      const merged = new Map<number, number>();
      for (const [role, b] of s.buckets) for (const [le, c] of deltaBuckets(prev.buckets.get(role) ?? [], b)) merged.set(le, (merged.get(le) ?? 0) + c);
      for (const [le, c] of merged) all.push([le, c]);
      const ms = (x: number | null) => (x === null ? null : x * 1000);
      series.t.push(t);
      series.ok.push(rate(['success']));
      series.err.push(rate(['error', 'timeout']));
      series.rej.push(rate(['rejected']));
      series.p50.push(ms(quantile(all, 0.5)));
      series.p90.push(ms(quantile(all, 0.9)));
      series.p99.push(ms(quantile(all, 0.99)));
      if (series.t.length > 300) for (const k of Object.keys(series) as (keyof typeof series)[]) series[k].shift();
      replace(liveBox, h('div', { class: 'stats', 'data-testid': 'live' },
        stat('requests/s', fmtNum(series.ok[series.ok.length - 1], 3)),
        stat('errors/s', fmtNum(series.err[series.err.length - 1], 3)),
        stat('rejections/s', fmtNum(series.rej[series.rej.length - 1], 3)),
        stat('p50 ms', fmtNum(series.p50[series.p50.length - 1], 3)),
        stat('p99 ms', fmtNum(series.p99[series.p99.length - 1], 3)),
        stat('total', String(Object.values(o).reduce((a, b) => a + b, 0))),
      ));
      const rdata: uPlot.AlignedData = [series.t, series.ok, series.err, series.rej];
      const ldata: uPlot.AlignedData = [series.t, series.p50, series.p90, series.p99];
      if (!rateChart) {
        rateChart = chart(rateChartEl, [{ label: 'ok/s', color: '#16a34a' }, { label: 'errors/s', color: '#dc2626' }, { label: 'rejected/s', color: '#d97706' }], rdata, { time: true, height: 200, points: true });
        latChart = chart(latChartEl, [{ label: 'p50', color: '#2563eb' }, { label: 'p90', color: '#7c3aed' }, { label: 'p99', color: '#dc2626' }], ldata, { time: true, height: 200, points: true });
      } else {
        rateChart.setData(rdata);
        latChart?.setData(ldata);
      }
    } else replace(liveBox, h('p', { class: 'muted' }, 'Measuring: rates appear after the next poll (every 2 s).'));
    replace(latBox, lifetime.length ? h('div', null, h('h3', null, 'Latency since the server started'), table(lifetime, [
      { title: 'Side', cell: (r) => r[0] },
      { title: 'p50 ms', cls: 'num', cell: (r) => fmtNum(r[1] === null ? null : r[1] * 1000, 3) },
      { title: 'p90 ms', cls: 'num', cell: (r) => fmtNum(r[2] === null ? null : r[2] * 1000, 3) },
      { title: 'p99 ms', cls: 'num', cell: (r) => fmtNum(r[3] === null ? null : r[3] * 1000, 3) },
    ], { cls: 'compact' }), h('p', { class: 'muted' }, 'Estimated from the histogram buckets of dlsys_serve_request_duration_seconds.')) : empty('No latency histogram yet.'));
    // Actions: rebuilt only when what they act on changes (so a typed weight is not lost).
    const key = JSON.stringify([d.config, st?.canary?.version, st?.version]);
    if (canWrite() && key !== lastActionsKey) {
      lastActionsKey = key;
      replace(actionsBox, actions(d, versions, () => void poll().catch(() => undefined)));
    }
  };
  await poll();
  ctx.every(2000, poll);
});

function stat(label: string, value: string): HTMLElement {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-v' }, value), h('div', { class: 'stat-l' }, label));
}

function actions(d: Deployment, versions: ModelVersion[], refresh: () => void): HTMLElement {
  const canary = d.config.canary;
  const base = `/api/v1/deployments/${enc(d.name)}`;
  const after = (msg: string) => {
    refresh();
    return msg;
  };
  const weight = h('input', { type: 'number', min: '0', max: '100', step: '1', value: String(canary?.weight ?? 10), class: 'narrow', 'data-testid': 'weight' });
  const ver = h('select', null, [...versions].sort((a, b) => b.version - a.version).map((v) => h('option', { value: String(v.version) }, `v${v.version}${v.aliases.length ? ` (${v.aliases.join(', ')})` : ''}`)));
  const newWeight = h('input', { type: 'number', min: '1', max: '100', step: '1', value: '10', class: 'narrow' });
  return h('div', { class: 'actions', 'data-testid': 'deploy-actions' },
    canary
      ? h('div', null,
          h('p', null, `Canary: ${canary.model} v${canary.version} at ${canary.weight ?? 10}%.`),
          h('div', { class: 'toolbar' },
            actionButton('Promote canary', async () => { await api.post(`${base}/promote`); return after('promoted: the canary is the primary now'); }, { cls: 'primary', testid: 'promote' }),
            actionButton('Roll back canary', async () => { await api.post(`${base}/rollback`); return after('rolled back: the canary is unloaded'); }, { cls: 'danger', testid: 'rollback' }),
          ),
          h('div', { class: 'toolbar' }, 'Canary weight ', weight, '% ',
            actionButton('Change weight', async () => {
              const w = Number(weight.value);
              if (!Number.isInteger(w) || w < 0 || w > 100) throw new Error('the weight is a whole percent from 0 to 100');
              await api.put(base, { model: d.model, ref: d.ref, config: { ...d.config, canary: { ...canary, weight: w } } });
              return after(`the canary answers ${w}% now`);
            }, { testid: 'set-weight' })),
        )
      : h('div', { class: 'toolbar' }, 'Start a canary: ', ver, ' at ', newWeight, '% ',
          actionButton('Start canary', async () => {
            const w = Number(newWeight.value);
            await api.put(base, { model: d.model, ref: d.ref, config: { ...d.config, canary: { model: d.model, version: Number(ver.value), weight: w } } });
            return after(`canary v${ver.value} at ${w}%`);
          }, { testid: 'start-canary' })),
    d.config.shadow
      ? actionButton('Stop the shadow', async () => {
          const { shadow: _s, ...rest } = d.config;
          void _s;
          await api.put(base, { model: d.model, ref: d.ref, config: rest });
          return after('shadow stopped');
        })
      : null,
    h('p', { class: 'muted' }, 'Promote moves the alias the deployment follows to the canary’s version (or pins the deployment to it); the new version loads beside the old before the switch.'),
  );
}

