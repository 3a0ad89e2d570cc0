// Monitoring: per deployment, drift per column over time (a heat map of PSI against its limit
// per window, and the most drifted columns as curves), live accuracy by version, latency, labels,
// change detection; and the alerts.
import type uPlot from 'uplot';
import { api, enc, qs } from '../api';
import { chart } from '../charts';
import { badge, chip, empty, errorBox, fmtNum, fmtPct, fmtTime, h, kv, link, loading, pageHeader, replace, section, table } from '../dom';
import { href, route } from '../router';
import type { Alert } from '../types';

interface MonitorSummary {
  deployment: string;
  model: string;
  version: number;
  samples: number;
  labels: number;
  alerts_firing: number;
  window: { start: number; length_s: number; samples: number; drifted: number };
  error?: string;
}

interface ColumnDrift {
  column: string;
  count: number;
  psi: number | null;
  ks: number | null;
  psi_limit: number | null;
  ks_limit: number | null;
  decided: boolean;
  drift: boolean;
  mean: number | null;
  reference_mean: number | null;
  nulls: number;
  out_of_range: number;
}
interface MonitorWindow {
  start: number;
  samples: number;
  judged: boolean;
  latency: Record<string, { samples: number; p99_ms: number | null }>;
  drifted: number;
  multivariate_drifted: number;
  columns: ColumnDrift[];
}
interface MonitorDetail {
  deployment: string;
  model: string;
  version: number;
  samples: number;
  reference: { source: string; rows: number; columns: number };
  window_s: number;
  windows_s: number[];
  windows: MonitorWindow[];
  quality: { start: number; labels: number; accuracy?: number; mae?: number; by_version?: Record<string, { labels: number; accuracy?: number; mae?: number }> }[];
  labels: Record<string, number>;
  change: Record<string, unknown>;
  alerts: Alert[];
}

function windowName(s: number): string {
  if (s % 86400 === 0) return `${s / 86400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

route('monitoring', 'Monitoring', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('Monitoring', 'Served traffic against the training data: drift, live accuracy, alerts.'));
  const box = h('div', null, loading());
  root.append(box);
  const render = async () => {
    const { deployments } = await api.get<{ deployments: MonitorSummary[] }>('/api/v1/monitor', signal);
    replace(box, table(deployments, [
      { title: 'Deployment', cell: (d) => link(href(['monitoring', d.deployment]), d.deployment) },
      { title: 'Model', cell: (d) => link(href(['models', d.model], { version: d.version }), `${d.model} v${d.version}`) },
      { title: 'Samples', cls: 'num', cell: (d) => d.samples },
      { title: 'Labels', cls: 'num', cell: (d) => d.labels },
      { title: 'This window', cell: (d) => (d.window ? `${d.window.samples} samples in ${windowName(d.window.length_s)} since ${fmtTime(d.window.start * 1000)}` : '—') },
      { title: 'Drifted columns', cls: 'num', cell: (d) => (d.window ? (d.window.drifted ? chip(String(d.window.drifted), 'bad') : '0') : '—') },
      { title: 'Alerts firing', cls: 'num', cell: (d) => (d.alerts_firing ? chip(String(d.alerts_firing), 'bad') : '0') },
      { title: '', cell: (d) => (d.error ? h('span', { class: 'bad' }, d.error) : null) },
    ], { emptyText: 'No deployment samples its requests. Turn it on with `dlsys deploy update NAME --sample-rate 0.1`.' }));
  };
  try {
    await render();
  } catch (e) {
    replace(box, errorBox(e, 'Monitoring'));
    return;
  }
  ctx.every(5000, render);
  root.append(section('Alerts', await alertsTable({ limit: 20 }, signal)), h('p', null, link('#/alerts', 'All alerts')));
});

route('monitoring/:name', 'Monitoring', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const name = params.name;
  const history = query.get('history') ?? '24';
  const windowQ = query.get('window') ?? '';
  root.append(pageHeader(`Monitoring ${name}`, link('#/monitoring', 'Monitoring'), ' / ', name, ' · ', link(href(['deployments', name]), 'deployment')));
  const d = await api.get<MonitorDetail>(`/api/v1/monitor/deployments/${enc(name)}${qs({ window: windowQ, history })}`, signal);
  const winSel = h('select', { name: 'window' }, d.windows_s.map((s) => h('option', { value: windowName(s), selected: s === d.window_s }, windowName(s))));
  const histSel = h('select', { name: 'history' }, ['6', '12', '24', '48', '96'].map((n) => h('option', { value: n, selected: n === history }, `${n} windows`)));
  const nav = () => (location.hash = href(['monitoring', name], { window: winSel.value, history: histSel.value }));
  winSel.addEventListener('change', nav);
  histSel.addEventListener('change', nav);
  root.append(h('div', { class: 'toolbar' }, 'Window ', winSel, ' History ', histSel));
  const wins = [...d.windows].sort((a, b) => a.start - b.start);
  const last = wins[wins.length - 1];
  root.append(h('div', { class: 'cols2' },
    section('Summary', kv([
      ['Model', link(href(['models', d.model], { version: d.version }), `${d.model} v${d.version}`)],
      ['Samples', String(d.samples)],
      ['Reference', `${d.reference.source}: ${d.reference.rows} rows, ${d.reference.columns} columns`],
      ['Latest window', last ? `${fmtTime(last.start * 1000)}: ${last.samples} samples, ${last.drifted} columns drifted${last.multivariate_drifted ? `, multivariate ${last.multivariate_drifted}` : ''}${last.judged ? '' : ' (too few samples to judge)'}` : '—'],
      ['Labels', Object.entries(d.labels).map(([k, v]) => `${k.replace(/_/g, ' ')} ${v}`).join(', ')],
      ['Change detection', h('code', null, JSON.stringify(d.change))],
    ])),
    section('Alerts', d.alerts.length ? alertRows(d.alerts) : empty('No alerts for this deployment.')),
  ));
  // Live accuracy per window and version.
  const q = [...d.quality].sort((a, b) => a.start - b.start);
  const qBox = h('div', { class: 'chart-box' });
  root.append(section('Live quality (labelled outcomes)', q.length ? qBox : empty('No labels joined yet: post them to /api/v1/deployments/NAME/feedback.')));
  const charts: uPlot[] = [];
  signal.addEventListener('abort', () => charts.forEach((c) => c.destroy()));
  if (q.length) {
    const metric = q.some((x) => x.accuracy !== undefined) ? 'accuracy' : 'mae';
    const versions = [...new Set(q.flatMap((x) => Object.keys(x.by_version ?? {})))].sort();
    const data: uPlot.AlignedData = [q.map((x) => x.start), q.map((x) => (x[metric] ?? null) as number | null), ...versions.map((v) => q.map((x) => (x.by_version?.[v]?.[metric] ?? null) as number | null))];
    charts.push(chart(qBox, [{ label: `${metric} (all)`, color: '#111827', width: 2 }, ...versions.map((v) => ({ label: `v${v}` }))], data, { time: true, points: true, height: 200 }));
    root.append(table(q.slice(-12).reverse(), [
      { title: 'Window', cell: (x) => fmtTime(x.start * 1000) },
      { title: 'Labels', cls: 'num', cell: (x) => x.labels },
      { title: metric, cls: 'num', cell: (x) => (metric === 'accuracy' ? fmtPct(x.accuracy) : fmtNum(x.mae)) },
      { title: 'By version', cell: (x) => Object.entries(x.by_version ?? {}).map(([v, b]) => chip(`v${v}: ${metric === 'accuracy' ? fmtPct(b.accuracy) : fmtNum(b.mae)} of ${b.labels}`)) },
    ], { cls: 'compact' }));
  }
  // Drift per column over time: a heat map of PSI / limit, then curves for the worst columns.
  const cols = [...new Set(wins.flatMap((w) => w.columns.map((c) => c.column)))];
  const worst = (c: string) => Math.max(0, ...wins.map((w) => { const x = w.columns.find((y) => y.column === c); return x && x.psi !== null && x.psi_limit ? x.psi / x.psi_limit : 0; }));
  const ranked = [...cols].sort((a, b) => worst(b) - worst(a));
  const heat = h('div', { class: 'heat-wrap' }, heatmap(wins, ranked));
  const driftChart = h('div', { class: 'chart-box' });
  root.append(section('Drift per column over time', h('p', { class: 'muted' }, 'Each cell is a window: PSI divided by its limit (calibrated for the window’s sample size); red when the column drifted. Columns most drifted first.'), heat, h('h3', null, 'PSI of the 6 most drifted columns'), driftChart));
  if (wins.length && ranked.length) {
    const top = ranked.slice(0, 6);
    const data: uPlot.AlignedData = [wins.map((w) => w.start), ...top.map((c) => wins.map((w) => w.columns.find((x) => x.column === c)?.psi ?? null))];
    charts.push(chart(driftChart, top.map((c) => ({ label: c })), data, { time: true, points: true, height: 220 }));
  }
  // Latency p99 per version per window.
  const lv = [...new Set(wins.flatMap((w) => Object.keys(w.latency ?? {})))].sort();
  if (lv.length) {
    const latChart = h('div', { class: 'chart-box' });
    root.append(section('Latency p99 (ms) per version', latChart));
    const data: uPlot.AlignedData = [wins.map((w) => w.start), ...lv.map((v) => wins.map((w) => w.latency?.[v]?.p99_ms ?? null))];
    charts.push(chart(latChart, lv.map((v) => ({ label: `v${v}` })), data, { time: true, points: true, height: 180 }));
  }
  if (last) {
    root.append(section('Columns in the latest window', table([...last.columns].sort((a, b) => Number(b.drift) - Number(a.drift) || ((b.psi ?? 0) / (b.psi_limit || 1)) - ((a.psi ?? 0) / (a.psi_limit || 1))), [
      { title: 'Column', cell: (c) => c.column },
      { title: 'Drift', cell: (c) => (c.drift ? chip('drift', 'bad') : c.decided ? chip('no', 'ok') : chip('undecided')) },
      { title: 'PSI', cls: 'num', cell: (c) => `${fmtNum(c.psi)} / ${fmtNum(c.psi_limit)}` },
      { title: 'KS', cls: 'num', cell: (c) => `${fmtNum(c.ks)} / ${fmtNum(c.ks_limit)}` },
      { title: 'Mean', cls: 'num', cell: (c) => `${fmtNum(c.mean)} (ref ${fmtNum(c.reference_mean)})` },
      { title: 'Count', cls: 'num', cell: (c) => c.count },
      { title: 'Nulls', cls: 'num', cell: (c) => c.nulls },
      { title: 'Out of range', cls: 'num', cell: (c) => c.out_of_range },
    ], { cls: 'compact' })));
  }
});

function heatmap(wins: MonitorWindow[], cols: string[]): HTMLElement {
  if (!wins.length || !cols.length) return empty('No windows yet.');
  const head = h('tr', null, h('th', null, 'column'), wins.map((w) => h('th', { title: fmtTime(w.start * 1000) }, fmtTime(w.start * 1000).slice(11, 16))));
  const rows = cols.slice(0, 80).map((c) => h('tr', null, h('th', null, c), wins.map((w) => {
    const x = w.columns.find((y) => y.column === c);
    if (!x || x.psi === null) return h('td', { class: 'heat none' }, '');
    const r = x.psi_limit ? Math.min(2, x.psi / x.psi_limit) : 0;
    const bg = x.drift ? `hsl(0 80% ${Math.round(70 - 20 * Math.min(1, r - 1))}%)` : `hsl(${Math.round(140 - 100 * Math.min(1, r))} 60% ${Math.round(92 - 25 * Math.min(1, r))}%)`;
    return h('td', { class: 'heat', style: `background:${bg}`, title: `${c} ${fmtTime(w.start * 1000)}: PSI ${fmtNum(x.psi)} (limit ${fmtNum(x.psi_limit)}), KS ${fmtNum(x.ks)}${x.drift ? ' — drifted' : ''}` }, fmtNum(x.psi, 2));
  })));
  return h('div', null, h('table', { class: 'heatmap', 'data-testid': 'heatmap' }, h('thead', null, head), h('tbody', null, rows)), cols.length > 80 ? h('p', { class: 'muted' }, `The 80 most drifted of ${cols.length} columns.`) : null);
}

function alertRows(alerts: Alert[]): HTMLElement {
  return table(alerts, [
    { title: 'Alert', cell: (a) => a.rule },
    { title: 'Deployment', cell: (a) => link(href(['monitoring', a.deployment]), a.deployment) },
    { title: 'Severity', cell: (a) => chip(a.severity, a.severity === 'critical' ? 'bad' : '') },
    { title: 'State', cell: (a) => badge(a.state) },
    { title: 'Value', cls: 'num', cell: (a) => fmtNum(a.value) },
    { title: 'Message', cell: (a) => a.message },
    { title: 'Started', cell: (a) => fmtTime(a.started_at) },
    { title: 'Fired', cell: (a) => fmtTime(a.fired_at) },
    { title: 'Resolved', cell: (a) => fmtTime(a.resolved_at) },
  ], { cls: 'compact', emptyText: 'No alerts.' });
}

async function alertsTable(q: Record<string, string | number | undefined>, signal: AbortSignal): Promise<HTMLElement> {
  try {
    const { alerts } = await api.get<{ alerts: Alert[] }>(`/api/v1/alerts${qs(q)}`, signal);
    return alertRows(alerts);
  } catch (e) {
    return errorBox(e, 'alerts');
  }
}

route('alerts', 'Alerts', async (ctx) => {
  const { root, signal, query } = ctx;
  const state = query.get('state') ?? '';
  const dep = query.get('deployment') ?? '';
  root.append(pageHeader('Alerts', 'Alert rules fired by monitoring (docs/monitoring.md).'));
  root.append(h('div', { class: 'tabs' }, ['', 'FIRING', 'PENDING', 'RESOLVED'].map((s) => h('a', { href: href(['alerts'], { state: s, deployment: dep }), class: s === state ? 'active' : '' }, s ? s.toLowerCase() : 'all'))));
  const box = h('div', null, loading());
  root.append(box);
  const render = async () => replace(box, await alertsTable({ state, deployment: dep, limit: 200 }, signal));
  await render();
  ctx.every(5000, render);
});
