// Runs: the server's filter, sort by a column (order_by), chosen param/metric/tag columns,
// server-side pages (page_token), and a selection to compare.
import { api, qs } from '../api';
import { badge, chip, errorBox, fmtNum, fmtTime, h, link, loading, pageHeader, quoteKey, replace, span, table, type Column } from '../dom';
import { href, route } from '../router';
import type { Experiment, Run } from '../types';

/** Runs picked for comparison; kept while moving between pages of the list. */
export const selected = new Set<number>();
/** page_token of each page before the current one, for "Previous". */
let pageStack: { key: string; tokens: string[] } = { key: '', tokens: [] };

function fieldOf(col: string): { kind: 'params' | 'metrics' | 'tags'; key: string } | null {
  const m = col.match(/^(params|metrics|tags)\.(.+)$/);
  return m ? { kind: m[1] as 'params' | 'metrics' | 'tags', key: m[2].replace(/^`(.*)`$/, '$1') } : null;
}

function orderField(col: string): string {
  const f = fieldOf(col);
  return f ? `${f.kind}.${quoteKey(f.key)}` : col;
}

route('runs', 'Runs', async (ctx) => {
  const { root, signal, query } = ctx;
  const experimentQ = query.get('experiment') ?? '';
  const filter = query.get('filter') ?? '';
  const orderBy = query.get('order_by') ?? '';
  const pageSize = Number(query.get('page_size') ?? '50') || 50;
  const pageToken = query.get('page_token') ?? '';
  const colsQ = query.get('cols');
  const stackKey = `${experimentQ}|${filter}|${orderBy}|${pageSize}`;
  if (pageStack.key !== stackKey) pageStack = { key: stackKey, tokens: [] };

  const nav = (over: Record<string, string | undefined>) => {
    const q: Record<string, string | undefined> = { experiment: experimentQ, filter, order_by: orderBy, cols: colsQ ?? undefined, page_size: pageSize === 50 ? undefined : String(pageSize), ...over };
    location.hash = href(['runs'], q);
  };

  root.append(pageHeader('Runs', 'Tracked training runs: filter with the server’s grammar, sort by any column, compare up to 1,000.'));
  const experiments = await api.get<{ experiments: Experiment[] }>('/api/v1/experiments?page_size=1000', signal).then((r) => r.experiments).catch(() => [] as Experiment[]);
  const exp = experiments.find((e) => String(e.id) === experimentQ || e.name === experimentQ);

  const expSel = h('select', { name: 'experiment', 'data-testid': 'experiment' }, h('option', { value: '' }, 'all experiments'), experiments.map((e) => h('option', { value: e.name, selected: exp?.id === e.id }, e.name)));
  const filterIn = h('input', {
    type: 'search', name: 'filter', class: 'wide', value: filter, 'data-testid': 'filter', spellcheck: 'false',
    placeholder: "metrics.accuracy > 0.9 and params.optimizer = 'adam'",
  });
  const form = h('form', { class: 'toolbar' }, 'Experiment ', expSel, ' Filter ', filterIn, h('button', { type: 'submit' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    nav({ experiment: expSel.value || undefined, filter: filterIn.value.trim() || undefined, page_token: undefined });
  });
  expSel.addEventListener('change', () => nav({ experiment: expSel.value || undefined, page_token: undefined }));
  root.append(form);
  const help = h('details', { class: 'help' }, h('summary', null, 'Filter grammar'), h('p', null, 'Clauses joined by ', h('code', null, 'and'), ': ', h('code', null, 'params.K'), ', ', h('code', null, 'tags.K'), ' (strings: = != like), ', h('code', null, 'metrics.K'), ' (latest value: = != < <= > >=), ', h('code', null, 'status'), ', ', h('code', null, 'name'), ', ', h('code', null, 'start_time'), ', ', h('code', null, 'end_time'), '. Quote strings with \' or "; keys with other characters in backquotes: ', h('code', null, 'metrics.`val loss` < 0.3'), '.'));
  root.append(help);
  const out = h('div', null, loading('Loading runs'));
  root.append(out);

  let runs: Run[];
  let next = '';
  try {
    const ans = await api.get<{ runs: Run[]; next_page_token?: string }>(
      `/api/v1/runs${qs({ experiment_ids: exp ? exp.id : undefined, filter, order_by: orderBy, page_size: pageSize, page_token: pageToken })}`,
      signal,
    );
    runs = ans.runs;
    next = ans.next_page_token ?? '';
  } catch (e) {
    replace(out, errorBox(e, filter ? 'The filter was not accepted' : 'Runs could not be listed'));
    out.firstElementChild?.setAttribute('data-testid', 'filter-error');
    return;
  }

  // Columns: those asked for, else the first params and metrics seen on this page.
  const seen = { params: new Set<string>(), metrics: new Set<string>(), tags: new Set<string>() };
  for (const r of runs) {
    Object.keys(r.params).forEach((k) => seen.params.add(k));
    Object.keys(r.metrics).forEach((k) => seen.metrics.add(k));
    Object.keys(r.tags).forEach((k) => seen.tags.add(k));
  }
  const cols: string[] = colsQ !== null
    ? colsQ.split(',').map((c) => c.trim()).filter(Boolean)
    : [...[...seen.params].sort().slice(0, 4).map((k) => `params.${k}`), ...[...seen.metrics].sort().filter((k) => !k.startsWith('job.')).slice(0, 4).map((k) => `metrics.${k}`)];

  const [sortField, sortDir] = orderBy ? orderBy.trim().split(/\s+(?=(?:ASC|DESC|asc|desc)$)/) : ['start_time', 'DESC'];
  const sortCol = (field: string): Pick<Column<Run>, 'sort' | 'sorted'> => {
    const ofield = orderField(field);
    const active = (sortField ?? '').trim() === ofield;
    const dir = (sortDir ?? 'DESC').toUpperCase();
    return {
      sorted: active ? (dir === 'ASC' ? 'asc' : 'desc') : null,
      sort: () => nav({ order_by: `${ofield} ${active && dir === 'DESC' ? 'ASC' : 'DESC'}`, page_token: undefined }),
    };
  };

  const compareBtn = h('button', { type: 'button', class: 'primary', 'data-testid': 'compare' }, '');
  const clearBtn = h('button', { type: 'button' }, 'Clear selection');
  const updateCompare = () => {
    compareBtn.textContent = `Compare ${selected.size} selected`;
    compareBtn.disabled = selected.size < 1;
    clearBtn.disabled = selected.size === 0;
  };
  compareBtn.addEventListener('click', () => {
    location.hash = href(['compare'], { runs: [...selected].slice(0, 1000).join(',') });
  });
  clearBtn.addEventListener('click', () => {
    selected.clear();
    out.querySelectorAll<HTMLInputElement>('input.pick').forEach((c) => (c.checked = false));
    updateCompare();
  });
  updateCompare();
  const allBox = h('input', { type: 'checkbox', title: 'Select this page', checked: runs.length > 0 && runs.every((r) => selected.has(r.id)) });
  allBox.addEventListener('change', () => {
    for (const r of runs) if (allBox.checked) selected.add(r.id);
    else selected.delete(r.id);
    out.querySelectorAll<HTMLInputElement>('input.pick').forEach((c) => (c.checked = allBox.checked));
    updateCompare();
  });

  const columns: Column<Run>[] = [
    {
      title: '',
      cell: (r) => {
        const cb = h('input', { type: 'checkbox', class: 'pick', checked: selected.has(r.id), 'data-run': r.id, title: `Select run ${r.id}` });
        cb.addEventListener('change', () => {
          if (cb.checked) selected.add(r.id);
          else selected.delete(r.id);
          updateCompare();
        });
        return cb;
      },
    },
    { title: 'Run', cell: (r) => link(href(['runs', r.id]), `#${r.id}`) },
    { title: 'Name', cell: (r) => link(href(['runs', r.id]), r.name || '(unnamed)'), ...sortCol('name') },
    { title: 'Status', cell: (r) => badge(r.status), ...sortCol('status') },
    { title: 'Started', cell: (r) => fmtTime(r.start_time), ...sortCol('start_time') },
    { title: 'Duration', cls: 'num', cell: (r) => span(r.start_time, r.end_time), ...sortCol('end_time'), titleHint: 'sorts by end time' },
    ...cols.map((c): Column<Run> => {
      const f = fieldOf(c);
      return {
        title: c,
        cls: f?.kind === 'metrics' ? 'num' : '',
        cell: (r) => {
          if (!f) return '';
          if (f.kind === 'metrics') return fmtNum(r.metrics[f.key]?.value);
          return r[f.kind][f.key] ?? '';
        },
        ...sortCol(c),
      };
    }),
  ];

  const picker = columnPicker(cols, seen, (next) => nav({ cols: next.join(','), page_token: undefined }));
  const pager = h(
    'div',
    { class: 'pager' },
    h('button', { type: 'button', disabled: !pageToken, onclick: () => { const prev = pageStack.tokens.pop(); nav({ page_token: prev || undefined }); } }, '← Previous'),
    h('span', { class: 'muted' }, ` page ${pageStack.tokens.length + 1} · ${runs.length} runs `),
    h('button', { type: 'button', disabled: !next, 'data-testid': 'next-page', onclick: () => { pageStack.tokens.push(pageToken); nav({ page_token: next }); } }, 'Next →'),
    ' Rows per page ',
    (() => {
      const sel = h('select', null, [25, 50, 100, 200].map((n) => h('option', { value: String(n), selected: n === pageSize }, String(n))));
      sel.addEventListener('change', () => nav({ page_size: sel.value, page_token: undefined }));
      return sel;
    })(),
  );
  const matching = h('a', { href: href(['compare'], { experiment: exp?.name, filter: filter || undefined }), title: 'Compare the first 1,000 runs this filter matches' }, 'Compare all matching (first 1,000)');
  columns[0].title = '';
  const tbl = table(runs, columns, { cls: 'runs', emptyText: filter ? 'No run matches this filter.' : 'No runs yet.' });
  const headCheckbox = tbl.querySelector('thead th');
  if (headCheckbox) headCheckbox.append(allBox);
  replace(
    out,
    h('div', { class: 'toolbar' }, compareBtn, clearBtn, matching, picker),
    tbl,
    pager,
    orderBy ? h('p', { class: 'muted' }, 'Sorted by ', h('code', null, orderBy), '. ', link(href(['runs'], { experiment: experimentQ, filter, cols: colsQ ?? undefined }), 'Default order')) : null,
  );
});

function columnPicker(cols: string[], seen: { params: Set<string>; metrics: Set<string>; tags: Set<string> }, apply: (cols: string[]) => void): HTMLElement {
  const chosen = new Set(cols);
  const groups: HTMLElement[] = [];
  for (const kind of ['params', 'metrics', 'tags'] as const) {
    const keys = [...new Set([...seen[kind], ...cols.filter((c) => c.startsWith(`${kind}.`)).map((c) => c.slice(kind.length + 1))])].sort();
    if (!keys.length) continue;
    groups.push(
      h('fieldset', null, h('legend', null, kind), keys.map((k) => {
        const id = `${kind}.${k}`;
        const cb = h('input', { type: 'checkbox', checked: chosen.has(id) });
        cb.addEventListener('change', () => (cb.checked ? chosen.add(id) : chosen.delete(id)));
        return h('label', { class: 'pickcol' }, cb, ' ', k);
      })),
    );
  }
  const custom = h('input', { type: 'text', placeholder: 'metrics.K or params.K', class: 'narrow2' });
  return h(
    'details',
    { class: 'colpicker' },
    h('summary', null, 'Columns'),
    h('div', { class: 'colpicker-body' }, groups, h('div', null, 'Add ', custom),
      h('button', { type: 'button', onclick: () => { const extra = custom.value.trim(); const list = [...chosen]; if (extra && fieldOf(extra) && !chosen.has(extra)) list.push(extra); apply(list); } }, 'Show these columns'),
      h('span', { class: 'muted' }, ' ', chip(`${chosen.size} chosen`))),
  );
}
