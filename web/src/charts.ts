// Time-series charts on uPlot. Points are drawn as the server sends them: a downsampled series
// keeps each bucket's min, max and last, so a one-step spike is always drawn.
import uPlot from 'uplot';
import { api, enc, qs } from './api';
import { errorBox, fmtNum, h, isAbort, replace, seriesColor } from './dom';

export interface SeriesSpec {
  label: string;
  color?: string;
  width?: number;
  dash?: number[];
}

export interface ChartOpts {
  title?: string;
  height?: number;
  /** x is a Unix time in seconds (live charts) instead of a step. */
  time?: boolean;
  legend?: boolean;
  yLabel?: string;
  xLabel?: string;
  points?: boolean;
  /** Called after the user zooms x (drag) with the visible range; null when they reset (double click). */
  onZoom?: (range: { min: number; max: number } | null) => void;
}

/** A uPlot that follows its container's width. */
export function chart(el: HTMLElement, series: SeriesSpec[], data: uPlot.AlignedData, o: ChartOpts = {}): uPlot {
  let suppress = false;
  const width = Math.max(280, el.clientWidth || 600);
  const opts: uPlot.Options = {
    title: o.title,
    width,
    height: o.height ?? 240,
    legend: { show: o.legend ?? series.length <= 12, live: true },
    // One x value would give an empty range: pad it (a single window, a single step). uPlot
    // itself widens one time point by 86,400 / 1e-3 seconds (2.7 years) before this is called,
    // so one point is recognised from the data.
    scales: {
      x: {
        time: Boolean(o.time),
        range: (u, min, max) => {
          const pad = o.time ? 300 : 1;
          const xs = u.data?.[0];
          if (xs && xs.length === 1) return [xs[0] - pad, xs[0] + pad];
          return min === max ? [min - pad, max + pad] : [min, max];
        },
      },
    },
    cursor: {
      drag: { x: true, y: false, setScale: true },
      bind: o.onZoom
        ? {
            dblclick: (u) => () => {
              suppress = true;
              o.onZoom?.(null);
              suppress = false;
              void u;
              return null;
            },
          }
        : undefined,
    },
    axes: [
      { label: o.xLabel, stroke: '#556', grid: { stroke: '#eef0f3' } },
      { label: o.yLabel, stroke: '#556', grid: { stroke: '#eef0f3' }, size: 60, values: (_u, vals) => vals.map((v) => fmtNum(v, 3)) },
    ],
    series: [
      { label: o.time ? 'time' : o.xLabel ?? 'step' },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color ?? seriesColor(i),
        width: s.width ?? 1.5,
        dash: s.dash,
        spanGaps: true,
        points: { show: o.points ?? false, size: 4 },
        value: (_u: uPlot, v: number | null) => (v === null || v === undefined ? '—' : fmtNum(v, 5)),
      })),
    ],
    hooks: {
      setScale: [
        (u, key) => {
          if (key !== 'x' || suppress || !o.onZoom) return;
          const { min, max } = u.scales.x;
          if (min === undefined || max === undefined || min === null || max === null) return;
          o.onZoom({ min, max });
        },
      ],
    },
  };
  const u = new uPlot(opts, data, el);
  const ro = new ResizeObserver(() => {
    const w = Math.max(280, el.clientWidth);
    if (Math.abs(w - u.width) > 4) u.setSize({ width: w, height: u.height });
  });
  ro.observe(el);
  // Keep the observer as long as the chart: uPlot's destroy also stops it.
  u.hooks.destroy = [...(u.hooks.destroy ?? []), () => ro.disconnect()];
  (u as unknown as { _setQuiet: (d: uPlot.AlignedData, reset: boolean) => void })._setQuiet = (d, reset) => {
    suppress = true;
    u.setData(d, reset);
    suppress = false;
  };
  return u;
}

/** Series past which overlay() draws without a legend, hover values or hover points. */
export const MANY_SERIES = 50;

/**
 * Many series, each on its own steps (a comparison's runs, downsampled each with its own
 * buckets). Up to MANY_SERIES it is chart() on the steps joined. Past it, uPlot keeps the axes,
 * the grid and drag-to-zoom on x, and the series are drawn in its draw hook as plain polylines
 * from their own points: joined, 1,000 downsampled runs are a table of 1,000 x 1,000 mostly
 * empty cells, and uPlot's per-series setup and path building cost ~10x the drawing. Every
 * point is drawn (a bucket's min and max stay on screen); y spans all the values and stays put
 * when x is zoomed. No legend or hover values: for 1,000 runs they are noise.
 */
export function overlay(el: HTMLElement, series: SeriesSpec[], data: { steps: number[]; values: number[] }[], o: ChartOpts = {}): uPlot {
  if (series.length <= MANY_SERIES) return chart(el, series, align(data), o);
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (const d of data) {
    if (!d.steps.length) continue;
    x0 = Math.min(x0, d.steps[0]);
    x1 = Math.max(x1, d.steps[d.steps.length - 1]);
    for (const v of d.values) {
      if (v < y0) y0 = v;
      if (v > y1) y1 = v;
    }
  }
  if (x0 > x1) x0 = x1 = 0;
  if (y0 > y1) y0 = y1 = 0;
  const pad = y1 > y0 ? (y1 - y0) * 0.05 : Math.abs(y0) * 0.1 || 1;
  const yRange: [number, number] = [y0 - pad, y1 + pad];
  const draw = (u: uPlot) => {
    const { left, top, width, height } = u.bbox;
    const sx = u.scales.x;
    if (sx.min == null || sx.max == null) return;
    const xmin = sx.min;
    const kx = width / (sx.max - sx.min || 1);
    const ky = height / (yRange[1] - yRange[0]);
    const g = u.ctx;
    g.save();
    g.beginPath();
    g.rect(left, top, width, height);
    g.clip();
    g.lineJoin = 'round';
    data.forEach((d, s) => {
      const n = d.steps.length;
      if (!n) return;
      g.beginPath();
      g.strokeStyle = series[s].color ?? seriesColor(s);
      g.lineWidth = (series[s].width ?? 1) * uPlot.pxRatio;
      g.moveTo(left + (d.steps[0] - xmin) * kx, top + (yRange[1] - d.values[0]) * ky);
      for (let i = 1; i < n; i++) g.lineTo(left + (d.steps[i] - xmin) * kx, top + (yRange[1] - d.values[i]) * ky);
      g.stroke();
    });
    g.restore();
  };
  const opts: uPlot.Options = {
    width: Math.max(280, el.clientWidth || 600),
    height: o.height ?? 240,
    legend: { show: false },
    scales: {
      x: { time: false, range: (_u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) },
      y: { auto: false, range: () => yRange },
    },
    cursor: { drag: { x: true, y: false, setScale: true }, points: { show: false } },
    axes: [
      { label: o.xLabel, stroke: '#556', grid: { stroke: '#eef0f3' } },
      { label: o.yLabel, stroke: '#556', grid: { stroke: '#eef0f3' }, size: 60, values: (_u, vals) => vals.map((v) => fmtNum(v, 3)) },
    ],
    // One hidden series spans x (what a double click resets the zoom to) and y.
    series: [{}, { show: false, scale: 'y' }],
    hooks: { draw: [draw] },
  };
  const u = new uPlot(opts, [[x0, x1], [y0, y1]], el);
  const ro = new ResizeObserver(() => {
    const w = Math.max(280, el.clientWidth);
    if (Math.abs(w - u.width) > 4) u.setSize({ width: w, height: u.height });
  });
  ro.observe(el);
  u.hooks.destroy = [...(u.hooks.destroy ?? []), () => ro.disconnect()];
  return u;
}

/** Replaces a chart's data without it counting as a user zoom. */
export function setQuiet(u: uPlot, data: uPlot.AlignedData, resetScales: boolean): void {
  (u as unknown as { _setQuiet: (d: uPlot.AlignedData, reset: boolean) => void })._setQuiet(data, resetScales);
}

interface History {
  run_id: number;
  key: string;
  total_points: number;
  downsampled: boolean;
  points: { step: number; timestamp: number; value: number }[];
}

/**
 * One run's metric as a chart: fetched downsampled to `maxPoints`; a zoom (drag) fetches the
 * visible step range again at full resolution for that range; a double click shows it all.
 */
export function metricChart(el: HTMLElement, runId: number, key: string, signal: AbortSignal, maxPoints = 1000): void {
  const caption = h('div', { class: 'chart-caption' });
  const box = h('div', { class: 'chart-box' });
  replace(el, h('h3', { class: 'chart-title' }, key), box, caption);
  const base = `/api/v1/runs/${runId}/metrics/${enc(key)}`;
  let full: uPlot.AlignedData | null = null;
  let u: uPlot | null = null;
  let seq = 0;
  let timer = 0;
  const describe = (hist: History, range: string) => {
    caption.textContent = `${hist.points.length} of ${hist.total_points} points${hist.downsampled ? ' (downsampled: each bucket keeps its min, max and last)' : ''}${range}. Drag to zoom, double-click to reset.`;
  };
  const toData = (hist: History): uPlot.AlignedData => [hist.points.map((p) => p.step), hist.points.map((p) => p.value)];
  const load = async (range: { min: number; max: number } | null) => {
    const my = ++seq;
    const q = range ? qs({ max_points: maxPoints, min_step: Math.max(0, Math.floor(range.min)), max_step: Math.max(0, Math.ceil(range.max)) }) : qs({ max_points: maxPoints });
    try {
      const hist = await api.get<History>(base + q, signal);
      if (my !== seq) return;
      const data = toData(hist);
      if (!u) {
        full = data;
        u = chart(box, [{ label: key, color: '#2563eb' }], data, { points: hist.points.length <= 150, onZoom: (r) => zoom(r), xLabel: 'step' });
        signal.addEventListener('abort', () => u?.destroy());
      } else if (range) {
        setQuiet(u, data, false);
      }
      describe(hist, range ? `, steps ${Math.floor(range.min)}–${Math.ceil(range.max)}` : '');
    } catch (e) {
      if (isAbort(e)) return;
      caption.replaceChildren(errorBox(e, `metric ${key}`));
    }
  };
  const zoom = (r: { min: number; max: number } | null) => {
    clearTimeout(timer);
    if (!r) {
      seq++;
      if (u && full) setQuiet(u, full, true);
      caption.textContent = 'All steps. Drag to zoom.';
      return;
    }
    // The scale set when the chart is drawn (or reset) covers every step: nothing to fetch.
    const xs = full?.[0];
    if (xs && xs.length && r.min <= xs[0] && r.max >= xs[xs.length - 1]) return;
    timer = window.setTimeout(() => void load(r), 150);
  };
  void load(null);
}

/** Aligns series with different steps onto one x axis (nulls where a series has no point). */
export function align(series: { steps: number[]; values: number[] }[]): uPlot.AlignedData {
  const set = new Set<number>();
  let sorted = true;
  let prev: number[] | null = null;
  for (const s of series) {
    if (prev && (prev.length !== s.steps.length || prev.some((v, i) => v !== s.steps[i]))) sorted = false;
    prev = s.steps;
  }
  if (sorted && prev) {
    // Every series has the same steps: no join needed.
    return [Float64Array.from(prev), ...series.map((s) => s.values)];
  }
  for (const s of series) for (const x of s.steps) set.add(x);
  const xs = Float64Array.from(set).sort();
  const index = new Map<number, number>();
  xs.forEach((x, i) => index.set(x, i));
  const ys = series.map((s) => {
    const out: (number | null)[] = new Array(xs.length).fill(null);
    for (let i = 0; i < s.steps.length; i++) out[index.get(s.steps[i]) as number] = s.values[i];
    return out;
  });
  return [xs, ...ys];
}
