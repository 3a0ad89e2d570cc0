// Compare up to 1,000 runs: overlaid curves per metric key (one request for all histories,
// columnar, sent beside the request for the runs when their ids are known: the server picks the
// keys most of them logged), a table of differences (min, max, last, value at a chosen step),
// and parallel coordinates of the params that differ against a chosen metric.
import { api, ApiError, qs } from '../api';
import { overlay } from '../charts';
import { empty, errorBox, fmtNum, h, link, loading, pageHeader, replace, section, seriesColor, table, type Column } from '../dom';
import { href, route } from '../router';
import type { Experiment, Run } from '../types';

interface Hist {
  run_id: number;
  key: string;
  total_points: number;
  downsampled: boolean;
  steps: number[];
  values: number[];
}

const MAX_RUNS = 1000;
/** Rows of the table of differences drawn at first; a button adds as many again. */
const TABLE_ROWS = 100;
/** Charts by default (each of 1,000 runs is 1,000 series to fetch and draw) and points per series. */
const defaultKeyCount = (runs: number) => (runs > 200 ? 2 : 6);
const pointsPerSeries = (runs: number) => (runs > 200 ? 100 : runs > 50 ? 200 : 600);
type Histories = { keys: string[]; histories: Hist[] };
/** Significant digits of the values read (the table shows 5): half the bytes of every digit. */
const VALUE_DIGITS = 6;

route('compare', 'Compare runs', async (ctx) => {
  const { root, signal, query } = ctx;
  root.append(pageHeader('Compare runs', link('#/runs', 'Runs'), ' / compare'));
  const status = h('div', null, loading('Loading runs'));
  root.append(status);

  // Which runs: a list of ids, or the first 1,000 a filter matches.
  let runs: Run[];
  const idsQ = (query.get('runs') ?? '').split(',').map((x) => Number(x.trim())).filter((x) => Number.isInteger(x) && x > 0);
  const filter = query.get('filter') ?? '';
  const experimentQ = query.get('experiment') ?? '';
  const keysQ = query.get('keys');
  const keysAsked = keysQ ? keysQ.split(',').filter((k) => k !== '').slice(0, 20) : null;
  // The histories of the keys asked, or of those most of the runs logged (not job.* telemetry).
  const readHistories = (ids: number[], maxPoints: number): Promise<Histories> =>
    api.post<Histories>('/api/v1/runs/metric-histories', { run_ids: ids, ...(keysAsked ? { keys: keysAsked } : { top_keys: defaultKeyCount(ids.length), skip_key_prefix: 'job.' }), max_points: maxPoints, digits: VALUE_DIGITS }, signal);
  let early: { ids: number[]; maxPoints: number; answer: Promise<Histories> } | null = null;
  try {
    if (idsQ.length) {
      const ids = [...new Set(idsQ)].slice(0, MAX_RUNS);
      // Both requests at once: the histories do not wait for the runs.
      const maxPoints = pointsPerSeries(ids.length);
      early = { ids, maxPoints, answer: readHistories(ids, maxPoints) };
      early.answer.catch(() => undefined);  // awaited below; not an unhandled rejection meanwhile
      const ans = await api.post<{ runs: Run[] }>('/api/v1/runs/search', { run_ids: ids, page_size: MAX_RUNS }, signal);
      const byId = new Map(ans.runs.map((r) => [r.id, r]));
      runs = ids.map((i) => byId.get(i)).filter((r): r is Run => Boolean(r));
    } else if (filter || experimentQ) {
      let expIds: number[] | undefined;
      if (experimentQ) {
        const { experiments } = await api.get<{ experiments: Experiment[] }>('/api/v1/experiments?page_size=1000', signal);
        const e = experiments.find((x) => x.name === experimentQ || String(x.id) === experimentQ);
        if (!e) throw new Error(`no experiment '${experimentQ}'`);
        expIds = [e.id];
      }
      const ans = await api.get<{ runs: Run[] }>(`/api/v1/runs${qs({ filter, experiment_ids: expIds?.join(','), page_size: MAX_RUNS })}`, signal);
      runs = ans.runs;
    } else {
      replace(status, empty('Pick runs on the Runs page (their checkboxes, then Compare), or give #/compare?runs=1,2,3 or ?filter=….'));
      return;
    }
  } catch (e) {
    replace(status, errorBox(e, 'The runs could not be read'));
    return;
  }
  if (!runs.length) {
    replace(status, empty('No such runs.'));
    return;
  }

  // Metric keys: those in most runs first (ties by key, as the server orders them); by default 6
  // charts, 2 past 200 runs; the key picker shows more.
  const keyCount = new Map<string, number>();
  for (const r of runs) for (const k of Object.keys(r.metrics)) keyCount.set(k, (keyCount.get(k) ?? 0) + 1);
  const allKeys = [...keyCount.keys()].sort((a, b) => keyCount.get(b)! - keyCount.get(a)! || (a < b ? -1 : a > b ? 1 : 0));
  let keys = (keysAsked ? keysAsked.filter((k) => keyCount.has(k)) : allKeys.filter((k) => !k.startsWith('job.')).slice(0, defaultKeyCount(runs.length))).slice(0, 20);
  const metric = query.get('metric') && keyCount.has(query.get('metric')!) ? query.get('metric')! : keys[0] ?? allKeys[0] ?? '';
  const stepQ = query.get('step');
  const step = stepQ !== null && stepQ !== '' && Number.isFinite(Number(stepQ)) ? Math.max(0, Math.floor(Number(stepQ))) : null;
  const navTo = (over: Record<string, string | undefined>) => {
    const cur: Record<string, string | undefined> = {};
    query.forEach((v, k) => (cur[k] = v));
    location.hash = href(['compare'], { ...cur, ...over });
  };

  const runLabel = (r: Run) => `#${r.id} ${r.name}`;
  const color = new Map(runs.map((r, i) => [r.id, seriesColor(i, runs.length > 50 ? 0.55 : 1)]));

  replace(
    status,
    h('p', null, `${runs.length} runs`, runs.length >= MAX_RUNS ? ' (the first 1,000)' : '', '. ',
      runs.length <= 20 ? runs.map((r, i) => h('span', { class: 'runchip', style: `border-color:${seriesColor(i)}` }, link(href(['runs', r.id]), runLabel(r)))) : null),
  );

  // Key chooser.
  const keyBoxes = allKeys.map((k) => {
    const cb = h('input', { type: 'checkbox', checked: keys.includes(k), value: k });
    return h('label', { class: 'pickcol' }, cb, ' ', k);
  });
  root.append(
    h('details', { class: 'colpicker' }, h('summary', null, `Metric keys (${keys.length} of ${allKeys.length} shown; at most 20)`),
      h('div', { class: 'colpicker-body' }, keyBoxes,
        h('button', { type: 'button', onclick: () => { const chosen = keyBoxes.map((l) => l.querySelector('input')!).filter((c) => c.checked).map((c) => c.value).slice(0, 20); navTo({ keys: chosen.join(',') }); } }, 'Show these'))),
  );

  const chartsBox = h('div', { class: 'charts' }, loading('Loading metric histories'));
  root.append(section('Curves', chartsBox));
  const diffBox = h('div', null, loading());
  root.append(section('Differences', diffBox));
  const pcBox = h('div', null);
  root.append(section('Parallel coordinates: params against a metric', pcBox));

  const ids = runs.map((r) => r.id);
  let maxPoints = pointsPerSeries(runs.length);
  let hists: Hist[] = [];
  try {
    let ans: Histories | null = null;
    if (early) {
      maxPoints = early.maxPoints;
      try {
        ans = await early.answer;
      } catch (e) {
        // A run named that does not exist (a 404): asked again below for those found.
        if (!(e instanceof ApiError && e.status === 404) || ids.length === early.ids.length) throw e;
      }
    }
    if (!ans && keys.length) ans = await readHistories(ids, maxPoints);
    if (ans) {
      hists = ans.histories.filter((x) => keyCount.has(x.key));
      if (!keysAsked) keys = ans.keys.filter((k) => keyCount.has(k));
    }
  } catch (e) {
    replace(chartsBox, errorBox(e, 'metric histories'));
  }
  const byKey = new Map<string, Map<number, Hist>>();
  for (const hs of hists) {
    if (!byKey.has(hs.key)) byKey.set(hs.key, new Map());
    byKey.get(hs.key)!.set(hs.run_id, hs);
  }

  // ---- overlaid curves ----
  if (hists.length) {
    replace(chartsBox);
    for (const k of keys) {
      const m = byKey.get(k);
      if (!m) continue;
      const present = runs.filter((r) => m.get(r.id)?.steps.length);
      const cell = h('div', { class: 'chart-cell', 'data-metric': k });
      const box = h('div', { class: 'chart-box' });
      const down = present.some((r) => m.get(r.id)!.downsampled);
      cell.append(h('h3', { class: 'chart-title' }, k), box, h('div', { class: 'chart-caption' }, `${present.length} runs${down ? `; downsampled to ≤ ${maxPoints} points each, keeping each bucket’s min, max and last` : ''}`));
      chartsBox.append(cell);
      if (!present.length) {
        box.append(empty('No points.'));
        continue;
      }
      const u = overlay(box, present.map((r) => ({ label: runLabel(r), color: color.get(r.id), width: present.length > 50 ? 1 : 1.5 })), present.map((r) => m.get(r.id)!), { xLabel: 'step', legend: present.length <= 12 });
      signal.addEventListener('abort', () => u.destroy());
    }
  } else if (keys.length) {
    if (!chartsBox.querySelector('.error')) replace(chartsBox, empty('No metric histories.'));
  } else replace(chartsBox, empty('These runs logged no metrics.'));

  // ---- differences ----
  const paramKeys = [...new Set(runs.flatMap((r) => Object.keys(r.params)))].sort();
  const varying = paramKeys.filter((k) => new Set(runs.map((r) => r.params[k] ?? '∅')).size > 1);
  const metricSel = h('select', { name: 'metric', 'data-testid': 'diff-metric' }, allKeys.map((k) => h('option', { value: k, selected: k === metric }, k)));
  const stepIn = h('input', { type: 'number', min: '0', step: '1', value: step ?? '', placeholder: 'step', class: 'narrow', name: 'step' });
  const form = h('form', { class: 'toolbar' }, 'Metric ', metricSel, ' value at step ', stepIn, h('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    navTo({ metric: metricSel.value, step: stepIn.value || undefined });
  });
  let atStep = new Map<number, number>();
  if (step !== null && metric) {
    try {
      const ans = await api.post<{ histories: Hist[] }>('/api/v1/runs/metric-histories', { run_ids: ids, keys: [metric], max_points: 3, min_step: step, max_step: step }, signal);
      atStep = new Map(ans.histories.filter((x) => x.values.length).map((x) => [x.run_id, x.values[x.values.length - 1]]));
    } catch (e) {
      diffBox.append(errorBox(e, `values at step ${step}`));
    }
  }
  let mh = byKey.get(metric);
  if (!mh && metric) {
    try {
      const ans = await api.post<{ histories: Hist[] }>('/api/v1/runs/metric-histories', { run_ids: ids, keys: [metric], max_points: maxPoints, digits: VALUE_DIGITS }, signal);
      mh = new Map(ans.histories.map((x) => [x.run_id, x]));
    } catch (e) {
      diffBox.append(errorBox(e, metric));
    }
  }
  // Min and max are the series' own (to VALUE_DIGITS): a downsampled series keeps every bucket's
  // min and max.
  const stats = new Map<number, { min: number; max: number; last: number | null; n: number }>();
  for (const r of runs) {
    const hs = mh?.get(r.id);
    if (!hs || !hs.values.length) continue;
    let mn = Infinity;
    let mx = -Infinity;
    for (const v of hs.values) {
      if (v < mn) mn = v;
      if (v > mx) mx = v;
    }
    stats.set(r.id, { min: mn, max: mx, last: hs.values[hs.values.length - 1], n: hs.total_points });
  }
  const sortKey = query.get('sort') ?? '';
  const sortedRuns = [...runs];
  const val = (r: Run, k: string): number | string => {
    const st = stats.get(r.id);
    if (k === 'min') return st?.min ?? NaN;
    if (k === 'max') return st?.max ?? NaN;
    if (k === 'last') return st?.last ?? r.metrics[metric]?.value ?? NaN;
    if (k === 'step') return atStep.get(r.id) ?? NaN;
    if (k.startsWith('p:')) return r.params[k.slice(2)] ?? '';
    return r.id;
  };
  if (sortKey) {
    const [k, dir] = sortKey.split('~');
    const sign = dir === 'asc' ? 1 : -1;
    sortedRuns.sort((a, b) => {
      const x = val(a, k);
      const y = val(b, k);
      if (typeof x === 'number' && typeof y === 'number') {
        if (isNaN(x)) return 1;
        if (isNaN(y)) return -1;
        return sign * (x - y);
      }
      const nx = Number(x);
      const ny = Number(y);
      if (x !== '' && y !== '' && !isNaN(nx) && !isNaN(ny)) return sign * (nx - ny);
      return sign * String(x).localeCompare(String(y));
    });
  }
  const sortable = (k: string): Pick<Column<Run>, 'sort' | 'sorted'> => {
    const [cur, dir] = sortKey.split('~');
    return { sorted: cur === k ? (dir === 'asc' ? 'asc' : 'desc') : null, sort: () => navTo({ sort: `${k}~${cur === k && dir !== 'asc' ? 'asc' : 'desc'}` }) };
  };
  const best = (k: 'min' | 'max' | 'last') => {
    const vs = runs.map((r) => stats.get(r.id)?.[k]).filter((x): x is number => typeof x === 'number');
    return { lo: Math.min(...vs), hi: Math.max(...vs) };
  };
  const ext = { min: best('min'), max: best('max'), last: best('last') };
  const mark = (v: number | null | undefined, e: { lo: number; hi: number }) =>
    v === null || v === undefined ? '—' : h('span', { class: v === e.lo ? 'lo' : v === e.hi ? 'hi' : '', title: v === e.lo ? 'the lowest of these runs' : v === e.hi ? 'the highest of these runs' : undefined }, fmtNum(v, 5));
  const cols: Column<Run>[] = [
    { title: 'Run', cell: (r) => h('span', null, h('i', { class: 'swatch', style: `background:${color.get(r.id)}` }), link(href(['runs', r.id]), runLabel(r))), ...sortable('id') },
    ...varying.map((k): Column<Run> => ({ title: k, cell: (r) => r.params[k] ?? '—', ...sortable(`p:${k}`) })),
    { title: `${metric} min`, cls: 'num', cell: (r) => mark(stats.get(r.id)?.min, ext.min), ...sortable('min') },
    { title: `${metric} max`, cls: 'num', cell: (r) => mark(stats.get(r.id)?.max, ext.max), ...sortable('max') },
    { title: `${metric} last`, cls: 'num', cell: (r) => mark(stats.get(r.id)?.last ?? r.metrics[metric]?.value, ext.last), ...sortable('last') },
    ...(step !== null ? [{ title: `${metric} @ step ${step}`, cls: 'num', cell: (r: Run) => fmtNum(atStep.get(r.id), 5), ...sortable('step') }] : []),
    { title: 'points', cls: 'num', cell: (r) => stats.get(r.id)?.n ?? '—' },
  ];
  // The first rows at once (a table of 1,000 runs x every param is most of the page's layout
  // time); a button adds more.
  const tableBox = h('div');
  const showRows = (n: number) => {
    const t = table(sortedRuns.slice(0, n), cols, { cls: 'compact', emptyText: 'No runs.' });
    t.querySelector('table')?.setAttribute('data-testid', 'diff-table');
    const more = Math.min(TABLE_ROWS * 4, sortedRuns.length - n);
    replace(
      tableBox,
      t,
      more > 0
        ? h('p', { class: 'muted' }, `The first ${n} of ${sortedRuns.length} runs (sort a column to see others first). `,
            h('button', { type: 'button', 'data-testid': 'diff-more', onclick: () => showRows(n + more) }, `Show ${more} more`))
        : null,
    );
  };
  showRows(TABLE_ROWS);
  replace(
    diffBox,
    form,
    varying.length ? h('p', { class: 'muted' }, `Params that differ: ${varying.join(', ')}`, paramKeys.length > varying.length ? `; the same in every run: ${paramKeys.filter((k) => !varying.includes(k)).map((k) => `${k}=${runs[0].params[k] ?? '∅'}`).join(', ')}` : '') : h('p', { class: 'muted' }, 'Every run has the same params.'),
    tableBox,
  );

  // ---- parallel coordinates ----
  const pcMetricSel = h('select', null, allKeys.map((k) => h('option', { value: k, selected: k === metric }, k)));
  pcMetricSel.addEventListener('change', () => navTo({ metric: pcMetricSel.value }));
  const canvas = h('canvas', { class: 'pc', 'data-testid': 'parallel' });
  replace(pcBox, h('div', { class: 'toolbar' }, 'Color and last axis: ', pcMetricSel, h('span', { class: 'muted' }, ' (its last value)')), varying.length ? canvas : empty('No param differs between these runs.'));
  if (varying.length) {
    // Drawn when the box is first laid out (the observer's first call) and when its width
    // changes: once per width, never from a script that would force a layout.
    let drawnWidth = -1;
    const ro = new ResizeObserver((entries) => {
      const width = Math.floor(entries[entries.length - 1].contentRect.width);
      if (width === drawnWidth) return;
      drawnWidth = width;
      parallel(canvas, width, runs, varying, metric, (r) => stats.get(r.id)?.last ?? r.metrics[metric]?.value ?? null);
    });
    ro.observe(pcBox);
    ctx.onLeave(() => ro.disconnect());
  }
});

/** Parallel coordinates on a canvas: one axis per param (numbers scaled, text as evenly spaced categories), the metric last. */
function parallel(canvas: HTMLCanvasElement, boxWidth: number, runs: Run[], params: string[], metric: string, metricOf: (r: Run) => number | null): void {
  const width = Math.max(400, boxWidth - 4);
  const height = 320;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = width * dpr;
  canvas.height = height * dpr;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const g = canvas.getContext('2d');
  if (!g) return;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  const axes = [...params.map((p) => ({ name: p, get: (r: Run): string | number | null => r.params[p] ?? null })), { name: metric, get: (r: Run) => metricOf(r) }];
  const top = 34;
  const bottom = height - 26;
  const left = 50;
  const right = width - 50;
  const step = axes.length > 1 ? (right - left) / (axes.length - 1) : 0;
  // Each axis maps a value to y.
  const scales = axes.map((ax) => {
    const raw = runs.map((r) => ax.get(r));
    const nums = raw.filter((v) => v !== null && v !== '' && !isNaN(Number(v))).map(Number);
    const numeric = nums.length === raw.filter((v) => v !== null && v !== '').length && nums.length > 0;
    if (numeric) {
      const lo = Math.min(...nums);
      const hi = Math.max(...nums);
      return { numeric, lo, hi, cats: [] as string[], y: (v: unknown) => (v === null || v === '' ? null : hi === lo ? (top + bottom) / 2 : bottom - ((Number(v) - lo) / (hi - lo)) * (bottom - top)) };
    }
    const cats = [...new Set(raw.filter((v) => v !== null).map(String))].sort();
    return { numeric, lo: 0, hi: 0, cats, y: (v: unknown) => (v === null ? null : cats.length === 1 ? (top + bottom) / 2 : bottom - (cats.indexOf(String(v)) / (cats.length - 1)) * (bottom - top)) };
  });
  const ms = scales[scales.length - 1];
  // The metric's colour in 32 steps: the runs of one step are one path and one stroke (a stroke
  // per run made 1,000 runs cost ~200 ms of canvas work).
  const LEVELS = 32;
  const levelOf = (v: number | null) => (v === null || !ms.numeric || ms.hi === ms.lo ? -1 : Math.min(LEVELS - 1, Math.floor(((v - ms.lo) / (ms.hi - ms.lo)) * LEVELS)));
  const colorOfLevel = (l: number) => (l < 0 ? 'rgba(37,99,235,0.45)' : `hsla(${(240 - (240 * (l + 0.5)) / LEVELS).toFixed(0)}, 75%, 45%, 0.55)`);
  g.lineWidth = runs.length > 300 ? 0.6 : 1.2;
  const byLevel = new Map<number, Run[]>();
  for (const r of runs) {
    const l = levelOf(metricOf(r));
    if (!byLevel.has(l)) byLevel.set(l, []);
    byLevel.get(l)!.push(r);
  }
  for (const [l, group] of byLevel) {
    g.strokeStyle = colorOfLevel(l);
    g.beginPath();
    for (const r of group) {
      let pen = false;
      axes.forEach((ax, i) => {
        const y = scales[i].y(ax.get(r));
        const x = left + i * step;
        if (y === null) {
          pen = false;
          return;
        }
        if (pen) g.lineTo(x, y);
        else g.moveTo(x, y);
        pen = true;
      });
    }
    g.stroke();
  }
  g.font = '12px system-ui, sans-serif';
  g.textAlign = 'center';
  axes.forEach((ax, i) => {
    const x = left + i * step;
    g.strokeStyle = '#334';
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(x, top);
    g.lineTo(x, bottom);
    g.stroke();
    g.fillStyle = '#112';
    g.fillText(ax.name, x, 14);
    g.fillStyle = '#556';
    const sc = scales[i];
    if (sc.numeric) {
      g.fillText(fmtNum(sc.hi, 3), x, top - 4);
      g.fillText(fmtNum(sc.lo, 3), x, bottom + 14);
    } else {
      g.textAlign = 'left';
      for (const c of sc.cats.slice(0, 12)) {
        const y = sc.y(c);
        if (y !== null) g.fillText(c.length > 14 ? `${c.slice(0, 13)}…` : c, x + 4, y + 4);
      }
      g.textAlign = 'center';
    }
  });
}
