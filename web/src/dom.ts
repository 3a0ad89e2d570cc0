// Small DOM helpers: element building, formatting, and the pieces every page uses.
import { ApiError } from './api';

type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, unknown> & {
  class?: string;
  style?: string;
};

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs | null = null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (k === 'class') {
        el.className = String(v);
      } else if (k === 'value' && 'value' in el) {
        (el as HTMLInputElement).value = String(v);
      } else if (k === 'checked' && 'checked' in el) {
        (el as HTMLInputElement).checked = Boolean(v);
      } else if (v === true) {
        el.setAttribute(k, '');
      } else {
        el.setAttribute(k, String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function replace(el: Element, ...children: Child[]): void {
  clear(el);
  append(el, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number | undefined> = {}, ...children: (Node | string)[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, String(v));
  for (const c of children) el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

// ---- formatting ----

export function fmtTime(ms: number | null | undefined): string {
  if (!ms) return '—';
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtAgo(ms: number | null | undefined): string {
  if (!ms) return '—';
  const s = (Date.now() - ms) / 1000;
  if (s < 0) return fmtTime(ms);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !isFinite(ms) || ms < 0) return '—';
  const s = ms / 1000;
  if (s < 1) return `${Math.round(ms)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function span(start: number | null | undefined, end: number | null | undefined): string {
  if (!start) return '—';
  return fmtDuration((end || Date.now()) - start);
}

export function fmtNum(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined) return '—';
  if (typeof v !== 'number') return String(v);
  if (!isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(digits)));
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${u[i]}`;
}

export function fmtPct(v: number | null | undefined): string {
  if (v === null || v === undefined || !isFinite(v)) return '—';
  return `${(v * 100).toFixed(1)}%`;
}

// ---- pieces ----

export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'AbortError';
}

export function errorBox(e: unknown, what = ''): HTMLElement {
  const msg = errorText(e);
  const code = e instanceof ApiError && e.status ? ` (HTTP ${e.status} ${e.code})` : '';
  return h('div', { class: 'error', role: 'alert' }, what ? h('strong', null, `${what}: `) : null, msg, h('span', { class: 'muted' }, code));
}

export function loading(what = 'Loading'): HTMLElement {
  return h('p', { class: 'loading' }, `${what}…`);
}

export function empty(text: string): HTMLElement {
  return h('p', { class: 'empty' }, text);
}

export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h('a', { href }, ...children);
}

const STATE_CLASS: Record<string, string> = {
  RUNNING: 'running', QUEUED: 'queued', PENDING: 'queued', WAITING: 'waiting',
  FINISHED: 'ok', SUCCEEDED: 'ok', COMPLETED: 'ok', READY: 'ok', ready: 'ok', RESOLVED: 'ok',
  FAILED: 'bad', KILLED: 'bad', ERROR: 'bad', FIRING: 'bad', failed: 'bad',
  CANCELLED: 'off', SKIPPED: 'off', STOPPED: 'off', ARCHIVED: 'off',
};

export function badge(state: string | null | undefined, extra = ''): HTMLElement {
  const st = state ?? '—';
  return h('span', { class: `badge ${STATE_CLASS[st] ?? 'neutral'} ${extra}`.trim(), title: st }, st);
}

export function chip(text: string, cls = ''): HTMLElement {
  return h('span', { class: `chip ${cls}`.trim() }, text);
}

/** A two-column table of names and values. */
export function kv(rows: [string, Child][]): HTMLTableElement {
  return h('table', { class: 'kv' }, h('tbody', null, rows.map(([k, v]) => h('tr', null, h('th', null, k), h('td', null, v)))));
}

export interface Column<T> {
  title: string;
  cell: (row: T, index: number) => Child;
  cls?: string;
  /** When set, the header is a button that calls it. */
  sort?: () => void;
  sorted?: 'asc' | 'desc' | null;
  titleHint?: string;
}

export function table<T>(rows: T[], cols: Column<T>[], opts: { cls?: string; rowAttrs?: (r: T) => Attrs; emptyText?: string } = {}): HTMLElement {
  if (!rows.length && opts.emptyText) return empty(opts.emptyText);
  const head = h(
    'tr',
    null,
    cols.map((c) => {
      const label = c.sorted === 'asc' ? `${c.title} ▲` : c.sorted === 'desc' ? `${c.title} ▼` : c.title;
      return h('th', { class: c.cls, title: c.titleHint }, c.sort ? h('button', { class: 'sort', type: 'button', onclick: c.sort }, label) : label);
    }),
  );
  const body = h('tbody');
  const frag = document.createDocumentFragment();
  rows.forEach((r, i) => {
    frag.appendChild(h('tr', opts.rowAttrs ? opts.rowAttrs(r) : null, cols.map((c) => h('td', { class: c.cls }, c.cell(r, i)))));
  });
  body.appendChild(frag);
  return h('div', { class: 'table-wrap' }, h('table', { class: `grid ${opts.cls ?? ''}`.trim() }, h('thead', null, head), body));
}

export function section(title: string, ...children: Child[]): HTMLElement {
  return h('section', { class: 'panel' }, h('h2', null, title), ...children);
}

export function pageHeader(title: Child, ...sub: Child[]): HTMLElement {
  return h('header', { class: 'page-head' }, h('h1', null, title), sub.length ? h('div', { class: 'sub' }, ...sub) : null);
}

export function jsonBlock(v: unknown): HTMLElement {
  return h('pre', { class: 'json' }, JSON.stringify(v, null, 2));
}

/** A button that runs an async action, shows it is busy, and reports the outcome beside it. */
export function actionButton(label: string, action: () => Promise<string | void>, opts: { cls?: string; title?: string; testid?: string } = {}): HTMLElement {
  const status = h('span', { class: 'action-status' });
  const btn = h('button', { type: 'button', class: opts.cls ?? '', title: opts.title, 'data-testid': opts.testid }, label);
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    status.className = 'action-status';
    status.textContent = '…';
    try {
      const msg = await action();
      status.textContent = msg ?? 'done';
      status.className = 'action-status ok';
    } catch (e) {
      if (isAbort(e)) return;
      status.textContent = errorText(e);
      status.className = 'action-status bad';
    } finally {
      btn.disabled = false;
    }
  });
  return h('span', { class: 'action' }, btn, status);
}

/** Colors for many series: golden-angle hues. */
export function seriesColor(i: number, alpha = 1): string {
  const hue = (i * 137.508) % 360;
  return alpha >= 1 ? `hsl(${hue.toFixed(1)} 70% 45%)` : `hsl(${hue.toFixed(1)} 70% 45% / ${alpha})`;
}

/** Quotes a key for the filter and order_by grammar when it has characters beyond [A-Za-z0-9_]. */
export function quoteKey(k: string): string {
  return /^[A-Za-z0-9_]+$/.test(k) ? k : `\`${k}\``;
}
