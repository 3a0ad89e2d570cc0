// Datasets: names; a dataset's versions as a history (parents, messages) with diff and drift
// between two versions; a version's schema, statistics with histograms, sample rows and
// validation (quarantined rows live in NAME.quarantine).
import { api, enc, headLines, qs } from '../api';
import { chip, empty, errorBox, fmtBytes, fmtNum, fmtTime, h, jsonBlock, kv, link, loading, pageHeader, replace, s, section, table } from '../dom';
import { href, route, type PageCtx } from '../router';
import type { ColumnStats, DatasetVersion, Manifest } from '../types';

interface DatasetEntry {
  name: string;
  latest: DatasetVersion | null;
}

route('datasets', 'Datasets', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('Datasets', 'Immutable, content-addressed versions with schemas, splits and statistics.'));
  const body = h('div', null, loading());
  root.append(body);
  const { datasets } = await api.get<{ datasets: DatasetEntry[] }>('/api/v1/datasets', signal);
  replace(
    body,
    table(
      datasets,
      [
        { title: 'Dataset', cell: (d) => link(href(['datasets', d.name]), d.name) },
        { title: 'Latest', cell: (d) => (d.latest ? link(href(['datasets', d.name, `v${d.latest.version}`]), d.latest.label) : '—') },
        { title: 'Rows', cls: 'num', cell: (d) => d.latest?.rows ?? '—' },
        { title: 'Message', cell: (d) => d.latest?.message ?? '' },
        { title: 'Author', cell: (d) => d.latest?.author ?? '' },
        { title: 'Created', cell: (d) => fmtTime(d.latest?.created_ms) },
        { title: '', cell: (d) => (d.name.endsWith('.quarantine') ? chip('quarantined rows', 'warn') : null) },
      ],
      { emptyText: 'No datasets yet. Push one with `dlsys data push FILE --name NAME`.' },
    ),
  );
});

route('datasets/:name', 'Dataset', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const name = params.name;
  root.append(pageHeader(name, link('#/datasets', 'Datasets'), ' / ', name));
  const hist = h('div', null, loading('Loading versions'));
  root.append(section('Versions', hist));
  const [{ versions }, all] = await Promise.all([
    api.get<{ versions: DatasetVersion[] }>(`/api/v1/datasets/${enc(name)}/versions`, signal),
    api.get<{ datasets: DatasetEntry[] }>('/api/v1/datasets', signal).catch(() => ({ datasets: [] as DatasetEntry[] })),
  ]);
  const byId = new Map(versions.map((v) => [v.id, v]));
  const newest = [...versions].reverse();
  const shown = newest.slice(0, 50);
  // Parents come from each version's manifest: fetched for the versions shown.
  const parents = new Map<string, string>();
  const parentCell = new Map<string, HTMLElement>();
  replace(
    hist,
    table(
      shown,
      [
        { title: 'Version', cell: (v) => link(href(['datasets', name, `v${v.version}`]), v.label) },
        { title: 'Id', cell: (v) => h('code', { title: v.id }, v.id.slice(0, 12)) },
        { title: 'Parent', cell: (v) => { const c = h('span', { class: 'muted' }, '…'); parentCell.set(v.id, c); return c; } },
        { title: 'Rows', cls: 'num', cell: (v) => v.rows },
        { title: 'Message', cell: (v) => v.message },
        { title: 'Author', cell: (v) => v.author },
        { title: 'Created', cell: (v) => fmtTime(v.created_ms) },
        { title: 'Tags', cell: (v) => v.tags.map((t) => chip(t)) },
        { title: '', cell: (v) => link(href(['lineage', 'dataset_version', v.label]), 'lineage') },
      ],
      { emptyText: 'This dataset has no versions.' },
    ),
    versions.length > shown.length ? h('p', { class: 'muted' }, `The newest ${shown.length} of ${versions.length} versions.`) : null,
  );
  void Promise.all(
    shown.map(async (v) => {
      try {
        const full = await api.get<DatasetVersion>(`/api/v1/datasets/${enc(name)}/versions/${v.version}`, signal);
        const p = full.manifest?.parent;
        const cell = parentCell.get(v.id);
        if (!cell) return;
        if (p) {
          const pv = byId.get(p);
          parents.set(v.id, p);
          replace(cell, pv ? link(href(['datasets', name, `v${pv.version}`]), pv.label) : h('code', null, p.slice(0, 12)));
        } else replace(cell, h('span', { class: 'muted' }, 'none'));
      } catch {
        const cell = parentCell.get(v.id);
        if (cell) cell.textContent = '?';
      }
    }),
  );
  if (all.datasets.some((d) => d.name === `${name}.quarantine`)) {
    root.append(h('p', null, 'Rows that broke the schema are kept in ', link(href(['datasets', `${name}.quarantine`]), `${name}.quarantine`), '.'));
  }
  if (versions.length >= 2) {
    const from = query.get('from') ?? `v${newest[1].version}`;
    const to = query.get('to') ?? `v${newest[0].version}`;
    root.append(diffPanel(ctx, name, versions, from, to, query.get('psi') ?? '0.2', query.get('ks') ?? '0.1'));
  }
});

function diffPanel(ctx: PageCtx, name: string, versions: DatasetVersion[], from: string, to: string, psi: string, ks: string): HTMLElement {
  const opt = (sel: string) => versions.map((v) => h('option', { value: `v${v.version}`, selected: `v${v.version}` === sel }, v.label));
  const fromSel = h('select', { name: 'from' }, opt(from));
  const toSel = h('select', { name: 'to' }, opt(to));
  const psiIn = h('input', { type: 'number', step: '0.01', min: '0', value: psi, class: 'narrow', title: 'PSI threshold' });
  const ksIn = h('input', { type: 'number', step: '0.01', min: '0', max: '1', value: ks, class: 'narrow', title: 'KS threshold' });
  const out = h('div', null, loading('Comparing'));
  const form = h(
    'form',
    { class: 'toolbar' },
    'From ', fromSel, ' to ', toSel, ' PSI ', psiIn, ' KS ', ksIn,
    h('button', { type: 'submit' }, 'Diff'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = href(['datasets', name], { from: fromSel.value, to: toSel.value, psi: psiIn.value, ks: ksIn.value });
  });
  void (async () => {
    try {
      const d = await api.get<DiffAnswer>(`/api/v1/datasets/${enc(name)}/diff${qs({ from, to, psi, ks })}`, ctx.signal);
      replace(out, renderDiff(d));
    } catch (e) {
      replace(out, errorBox(e, 'diff'));
    }
  })();
  return section('Diff and drift between two versions', form, out);
}

interface DiffAnswer {
  from: string;
  to: string;
  rows: { added: number; removed: number; from: number; to: number; shards_shared?: number };
  schema: { added: unknown[]; removed: unknown[]; changed: unknown[] };
  drift: Record<string, { drift?: boolean; psi?: number; ks?: number; mean?: [number, number]; [k: string]: unknown }> & {
    __summary?: { columns_drifted: string[]; columns_added: string[]; columns_removed: string[]; thresholds: { psi: number; ks: number } };
  };
}

function renderDiff(d: DiffAnswer): HTMLElement {
  const summary = d.drift.__summary;
  const cols = Object.entries(d.drift)
    .filter(([k]) => k !== '__summary')
    .map(([k, v]) => ({ column: k, ...(v as Record<string, unknown>) }) as { column: string; drift?: boolean; psi?: number; ks?: number; mean?: [number, number]; [k: string]: unknown })
    .sort((a, b) => Number(Boolean(b.drift)) - Number(Boolean(a.drift)) || (b.psi ?? 0) - (a.psi ?? 0));
  const schemaChanges = [...d.schema.added.map((x) => ['added', x]), ...d.schema.removed.map((x) => ['removed', x]), ...d.schema.changed.map((x) => ['changed', x])];
  return h(
    'div',
    { 'data-testid': 'diff' },
    kv([
      ['Rows', `${d.rows.from} → ${d.rows.to}: ${d.rows.added} added, ${d.rows.removed} removed${d.rows.shards_shared !== undefined ? `, ${d.rows.shards_shared} shards shared` : ''}`],
      ['Schema', schemaChanges.length ? h('ul', null, schemaChanges.map(([k, x]) => h('li', null, `${k}: ${typeof x === 'string' ? x : JSON.stringify(x)}`))) : 'unchanged'],
      ['Drifted columns', summary?.columns_drifted.length ? summary.columns_drifted.map((c) => chip(c, 'bad')) : 'none'],
      ['Thresholds', summary ? `PSI ${summary.thresholds.psi}, KS ${summary.thresholds.ks}` : '—'],
    ]),
    table(cols, [
      { title: 'Column', cell: (c) => c.column },
      { title: 'Drift', cell: (c) => (c.drift ? chip('drift', 'bad') : chip('no', 'ok')) },
      { title: 'PSI', cls: 'num', cell: (c) => fmtNum(c.psi) },
      { title: 'KS', cls: 'num', cell: (c) => fmtNum(c.ks) },
      { title: 'Mean (from → to)', cls: 'num', cell: (c) => (Array.isArray(c.mean) ? `${fmtNum(c.mean[0])} → ${fmtNum(c.mean[1])}` : '—') },
      { title: 'Other', cell: (c) => { const rest = Object.fromEntries(Object.entries(c).filter(([k]) => !['column', 'drift', 'psi', 'ks', 'mean'].includes(k))); return Object.keys(rest).length ? h('code', null, JSON.stringify(rest)) : ''; } },
    ], { cls: 'compact' }),
  );
}

route('datasets/:name/:version', 'Dataset version', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const { name, version } = params;
  root.append(pageHeader(`${name}@${version}`, link('#/datasets', 'Datasets'), ' / ', link(href(['datasets', name]), name), ' / ', version));
  const v = await api.get<DatasetVersion>(`/api/v1/datasets/${enc(name)}/versions/${enc(version)}`, signal);
  const m = v.manifest as Manifest;
  const validation = m.validation ?? null;
  const split = m.split?.rows ? Object.entries(m.split.rows).map(([k, n]) => `${k} ${n}`).join(', ') : '—';
  let parentLink: HTMLElement | string = 'none';
  if (m.parent) {
    parentLink = h('code', null, m.parent.slice(0, 12));
    void api
      .get<{ versions: DatasetVersion[] }>(`/api/v1/datasets/${enc(name)}/versions`, signal)
      .then(({ versions }) => {
        const p = versions.find((x) => x.id === m.parent);
        if (p) replace(parentLink as HTMLElement, link(href(['datasets', name, `v${p.version}`]), p.label), ' · ', link(href(['datasets', name], { from: `v${p.version}`, to: `v${v.version}` }), 'diff with it'));
      })
      .catch(() => undefined);
  }
  root.append(
    section(
      'Version',
      kv([
        ['Label', v.label],
        ['Id', h('code', null, v.id)],
        ['Rows', String(v.rows)],
        ['Message', v.message || '—'],
        ['Author', v.author],
        ['Created', fmtTime(v.created_ms)],
        ['Parent', parentLink],
        ['Tags', v.tags.length ? v.tags.map((t) => chip(t)) : '—'],
        ['Split', split],
        ['Shards', `${m.shards.length} (${fmtBytes(m.shards.reduce((a, x) => a + (x.bytes ?? 0), 0))} stored)`],
        ['Source', m.source ? h('code', null, JSON.stringify(m.source)) : '—'],
        ['Lineage', link(href(['lineage', 'dataset_version', v.label]), 'dataset → runs → models')],
      ]),
    ),
  );
  root.append(
    section(
      'Validation',
      validation
        ? h(
            'div',
            { 'data-testid': 'validation' },
            kv(Object.entries(validation).map(([k, x]) => [k, typeof x === 'object' ? jsonBlock(x) : String(x)])),
            Number((validation as Record<string, unknown>).bad_rows ?? 0) > 0 && !name.endsWith('.quarantine')
              ? h('p', null, 'The rows that broke the schema: ', link(href(['datasets', `${name}.quarantine`]), `${name}.quarantine`), '.')
              : null,
          )
        : empty('No validation report: every row matched the schema.'),
    ),
  );
  root.append(section('Schema and statistics', statsTable(m)));
  const splitSel = h('select', { name: 'split' }, ['', 'train', 'validation', 'test'].map((sp) => h('option', { value: sp, selected: (query.get('split') ?? '') === sp }, sp || 'all rows')));
  splitSel.addEventListener('change', () => {
    location.hash = href(['datasets', name, version], { split: splitSel.value });
  });
  const rowsBox = h('div', null, loading('Reading rows'));
  root.append(section('Sample rows', h('div', { class: 'toolbar' }, 'Split ', splitSel), rowsBox));
  try {
    const { lines, more } = await headLines(`/api/v1/datasets/${enc(name)}/versions/${enc(version)}/rows${qs({ split: query.get('split') })}`, 51, signal);
    const rows = lines.filter((l) => l.length).map(parseCsvLine);
    if (rows.length <= 1) replace(rowsBox, empty('No rows.'));
    else {
      const header = rows[0];
      replace(
        rowsBox,
        table(rows.slice(1), header.map((col, i) => ({ title: col, cell: (r: string[]) => r[i] ?? '' })), { cls: 'compact mono' }),
        h('p', { class: 'muted' }, `The first ${rows.length - 1} rows${more ? ' (more not shown)' : ''}.`),
      );
    }
  } catch (e) {
    replace(rowsBox, errorBox(e, 'rows'));
  }
});

function statsTable(m: Manifest): HTMLElement {
  const stats = m.stats ?? {};
  const cols = m.schema.columns.filter((c) => !c.name.startsWith('__'));
  return table(cols, [
    { title: 'Column', cell: (c) => h('strong', null, c.name) },
    { title: 'Type', cell: (c) => h('code', null, c.type) },
    { title: 'Count', cls: 'num', cell: (c) => stats[c.name]?.count ?? '—' },
    { title: 'Nulls', cls: 'num', cell: (c) => stats[c.name]?.nulls ?? '—' },
    { title: 'Min', cls: 'num', cell: (c) => fmtNum(stats[c.name]?.min) },
    { title: 'Mean', cls: 'num', cell: (c) => fmtNum(stats[c.name]?.mean) },
    { title: 'Max', cls: 'num', cell: (c) => fmtNum(stats[c.name]?.max) },
    { title: 'Std', cls: 'num', cell: (c) => fmtNum(stats[c.name]?.std) },
    { title: 'Distribution', cell: (c) => distribution(stats[c.name]) },
  ], { cls: 'compact', emptyText: 'No columns.' });
}

function distribution(st: ColumnStats | undefined): Node | string {
  if (!st) return '—';
  if (st.histogram && st.histogram.counts.length) return histogram(st.histogram.counts, st.histogram.edges);
  if (st.top && st.top.length) {
    const top = st.top.slice(0, 5);
    return h('span', { class: 'tops' }, top.map((t) => chip(`${t.value} ×${t.count}`)), st.distinct_in_sample ? h('span', { class: 'muted' }, ` ${st.distinct_in_sample} distinct in sample`) : null);
  }
  return '—';
}

function histogram(counts: number[], edges: number[]): SVGElement {
  const W = 160;
  const H = 34;
  const max = Math.max(1, ...counts);
  const bw = W / counts.length;
  const svg = s('svg', { width: W, height: H, class: 'hist', viewBox: `0 0 ${W} ${H}` });
  counts.forEach((c, i) => {
    const bh = c > 0 ? Math.max(1, (c / max) * (H - 2)) : 0;
    const r = s('rect', { x: i * bw + 0.5, y: H - bh, width: Math.max(1, bw - 1), height: bh });
    r.appendChild(s('title', {}, `${fmtNum(edges[i])} – ${fmtNum(edges[i + 1])}: ${c}`));
    svg.appendChild(r);
  });
  return svg;
}

/** One CSV line (RFC 4180 quoting; a quoted field does not span lines in these exports' samples). */
export function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (q) {
      if (c === '"') {
        if (line[i + 1] === '"') {
          cur += '"';
          i++;
        } else q = false;
      } else cur += c;
    } else if (c === '"') q = true;
    else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

