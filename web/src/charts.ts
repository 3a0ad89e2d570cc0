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
    // One x value would give an empty range: pad it (a single window, a single step).
    scales: { x: { time: Boolean(o.time), range: (_u, min, max) => (min === max ? [min - (o.time ? 300 : 1), max + (o.time ? 300 : 1)] : [min, max]) } },
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
