// Models: their versions and aliases (moved, added and removed by editors; their history from
// the audit log for admins), the lineage graph (dataset version → run → model version →
// deployment), and the lineage page of any node.
import { api, canWrite, enc, isAdmin } from '../api';
import { actionButton, chip, empty, errorBox, fmtAgo, fmtBytes, fmtTime, h, kv, link, loading, pageHeader, replace, section, table } from '../dom';
import { dag, type GEdge, type GNode } from '../graph';
import { href, route } from '../router';
import type { Deployment, Lineage, LineageRef, Model, ModelVersion } from '../types';

route('models', 'Models', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('Models', 'Registered models, their versions and aliases.'));
  const { models } = await api.get<{ models: Model[] }>('/api/v1/models?page_size=1000', signal);
  root.append(
    table(models, [
      { title: 'Model', cell: (m) => link(href(['models', m.name]), m.name) },
      { title: 'Versions', cls: 'num', cell: (m) => m.version_count },
      { title: 'Latest', cls: 'num', cell: (m) => m.latest_version },
      { title: 'Aliases', cell: (m) => Object.entries(m.aliases ?? {}).map(([a, v]) => chip(`${a} → ${v}`, a === 'production' ? 'ok' : '')) },
      { title: 'Description', cell: (m) => m.description },
      { title: 'Updated', cell: (m) => fmtAgo(m.updated_at) },
    ], { emptyText: 'No models registered. Register one with `dlsys models register NAME --run ID`.' }),
  );
});

route('models/:name', 'Model', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const name = params.name;
  root.append(pageHeader(name, link('#/models', 'Models'), ' / ', name));
  const [model, { versions }, deps] = await Promise.all([
    api.get<Model>(`/api/v1/models/${enc(name)}`, signal),
    api.get<{ versions: ModelVersion[] }>(`/api/v1/models/${enc(name)}/versions`, signal),
    api.get<{ deployments: Deployment[] }>('/api/v1/deployments', signal).then((d) => d.deployments).catch(() => [] as Deployment[]),
  ]);
  const aliases = model.aliases ?? {};
  const mine = deps.filter((d) => d.model === name || d.config?.canary?.model === name || d.config?.shadow?.model === name);
  root.append(
    h('div', { class: 'cols2' },
      section('Model', kv([
        ['Name', model.name],
        ['Description', model.description || '—'],
        ['Versions', String(model.version_count ?? versions.length)],
        ['Created', fmtTime(model.created_at)],
        ['Updated', fmtTime(model.updated_at)],
        ['Deployments', mine.length ? mine.map((d) => link(href(['deployments', d.name]), d.name)) : 'none'],
      ])),
      section('Aliases', aliasPanel(name, aliases, versions)),
    ),
  );
  const vsorted = [...versions].sort((a, b) => b.version - a.version);
  root.append(
    section('Versions', table(vsorted, [
      { title: 'Version', cell: (v) => link(href(['models', name], { version: v.version }), `v${v.version}`) },
      { title: 'Status', cell: (v) => chip(v.status, v.status === 'READY' ? 'ok' : '') },
      { title: 'Aliases', cell: (v) => v.aliases.map((a) => chip(a, a === 'production' ? 'ok' : '')) },
      { title: 'Run', cell: (v) => (v.run_id ? link(href(['runs', v.run_id]), `run ${v.run_id}`) : h('span', { class: 'muted' }, 'uploaded')) },
      { title: 'Artifact', cell: (v) => h('code', null, v.artifact_path) },
      { title: 'Size', cls: 'num', cell: (v) => fmtBytes(v.size) },
      { title: 'SHA-256', cell: (v) => h('code', { title: v.sha256 }, v.sha256.slice(0, 12)) },
      { title: 'Created', cell: (v) => fmtTime(v.created_at) },
      { title: 'By', cell: (v) => v.created_by },
      { title: 'Description', cell: (v) => v.description },
      { title: '', cell: (v) => link(href(['lineage', 'model_version', `${name}/${v.version}`]), 'lineage') },
    ], { emptyText: 'No versions yet.' })),
  );
  // The lineage of one version: the one asked for, else production's, else the newest.
  const chosen = Number(query.get('version') ?? aliases.production ?? model.latest_version ?? vsorted[0]?.version ?? 0);
  const lin = h('div', null, loading('Reading lineage'));
  root.append(section(`Lineage of ${name} v${chosen}`, lin));
  if (chosen) {
    try {
      const l = await api.get<Lineage>(`/api/v1/lineage/model_version/${enc(`${name}/${chosen}`)}?depth=10`, signal);
      // Deployments serving the version now (as primary, canary or shadow) join the graph.
      const extra: { node: LineageRef; relation: string }[] = [];
      for (const d of mine) {
        const st = d.status;
        if (st?.model === name && st.version === chosen) extra.push({ node: { kind: 'deployment', id: d.name }, relation: 'serves' });
        else if (st?.canary?.model === name && st.canary.version === chosen) extra.push({ node: { kind: 'deployment', id: d.name }, relation: `canary ${st.canary.weight ?? ''}%` });
        else if (st?.shadow?.model === name && st.shadow.version === chosen) extra.push({ node: { kind: 'deployment', id: d.name }, relation: 'shadow' });
      }
      replace(lin, lineageGraph(l, extra), h('p', { class: 'muted' }, 'Each box links to its page. ', link(href(['lineage', 'model_version', `${name}/${chosen}`]), 'Open the full lineage page')));
    } catch (e) {
      replace(lin, errorBox(e, 'lineage'));
    }
  } else replace(lin, empty('No version.'));
  if (isAdmin()) {
    const hist = h('div', null, loading('Reading the audit log'));
    root.append(section('Alias history', hist));
    try {
      const entries: AuditEntry[] = [];
      let token = '';
      for (let i = 0; i < 5; i++) {
        const ans = await api.get<{ entries: AuditEntry[]; next_page_token?: string }>(`/api/v1/audit?page_size=1000${token ? `&page_token=${enc(token)}` : ''}`, signal);
        entries.push(...ans.entries.filter((e) => e.action.startsWith('model_alias') && e.target.startsWith(`model/${name}@`)));
        token = ans.next_page_token ?? '';
        if (!token) break;
      }
      replace(hist, table(entries, [
        { title: 'When', cell: (e) => fmtTime(e.timestamp) },
        { title: 'Who', cell: (e) => e.actor },
        { title: 'Alias', cell: (e) => e.target.slice(e.target.indexOf('@') + 1) },
        { title: 'Action', cell: (e) => e.action },
        { title: 'Move', cell: (e) => { const d = e.detail as { version?: number; previous_version?: number | null }; return d && d.version !== undefined ? `${d.previous_version ?? '—'} → ${d.version}` : JSON.stringify(e.detail); } },
      ], { emptyText: 'No alias moves in the recent audit log.' }));
    } catch (e) {
      replace(hist, errorBox(e, 'audit log'));
    }
  }
});

interface AuditEntry {
  timestamp: number;
  actor: string;
  action: string;
  target: string;
  detail: unknown;
}

function aliasPanel(name: string, aliases: Record<string, number>, versions: ModelVersion[]): HTMLElement {
  const entries = Object.entries(aliases).sort();
  const vopts = (sel: number) => [...versions].sort((a, b) => b.version - a.version).map((v) => h('option', { value: String(v.version), selected: v.version === sel }, `v${v.version}`));
  const write = canWrite();
  const rows = entries.map(([alias, v]) => {
    const sel = h('select', { 'data-alias': alias, name: `alias-${alias}` }, vopts(v));
    return h('tr', { 'data-alias-row': alias },
      h('th', null, alias),
      h('td', null, link(href(['models', name], { version: v }), `v${v}`)),
      write
        ? h('td', { class: 'row-actions' }, sel,
            actionButton('Move', async () => {
              const r = await api.put<{ version: number; previous_version: number | null }>(`/api/v1/models/${enc(name)}/aliases/${enc(alias)}`, { version: Number(sel.value) });
              setTimeout(() => window.dispatchEvent(new HashChangeEvent('hashchange')), 600);
              return `moved ${r.previous_version ?? '—'} → ${r.version}`;
            }, { testid: `move-${alias}` }),
            actionButton('Delete', async () => {
              await api.del(`/api/v1/models/${enc(name)}/aliases/${enc(alias)}`);
              setTimeout(() => window.dispatchEvent(new HashChangeEvent('hashchange')), 600);
              return 'deleted';
            }, { cls: 'danger' }))
        : null,
    );
  });
  const newName = h('input', { type: 'text', placeholder: 'alias', class: 'narrow2', pattern: '[A-Za-z0-9_-]{1,64}' });
  const newVer = h('select', null, vopts(versions.length ? Math.max(...versions.map((v) => v.version)) : 0));
  return h('div', { 'data-testid': 'aliases' },
    entries.length ? h('table', { class: 'kv' }, h('tbody', null, rows)) : empty('No aliases. `latest` always means the newest version.'),
    write && versions.length
      ? h('div', { class: 'toolbar' }, 'Point ', newName, ' at ', newVer,
          actionButton('Set alias', async () => {
            const a = newName.value.trim();
            if (!a) throw new Error('name the alias');
            await api.put(`/api/v1/models/${enc(name)}/aliases/${enc(a)}`, { version: Number(newVer.value) });
            setTimeout(() => window.dispatchEvent(new HashChangeEvent('hashchange')), 600);
            return `${a} → v${newVer.value}`;
          }))
      : null,
    !write ? h('p', { class: 'muted' }, 'Your role may read aliases, not move them.') : null,
  );
}

// ---- lineage ----

export function nodeHref(ref: LineageRef): string | undefined {
  switch (ref.kind) {
    case 'dataset_version': {
      const at = ref.id.lastIndexOf('@');
      return at > 0 ? href(['datasets', ref.id.slice(0, at), ref.id.slice(at + 1)]) : href(['datasets', ref.id]);
    }
    case 'run':
      return href(['runs', ref.id]);
    case 'model_version': {
      const sl = ref.id.lastIndexOf('/');
      return sl > 0 ? href(['models', ref.id.slice(0, sl)], { version: ref.id.slice(sl + 1) }) : href(['models', ref.id]);
    }
    case 'deployment':
      return href(['deployments', ref.id]);
    case 'pipeline_run': {
      const sl = ref.id.lastIndexOf('/');
      return sl > 0 ? href(['pipelines', ref.id.slice(0, sl), 'runs', ref.id.slice(sl + 1)]) : href(['pipelines', '-', 'runs', ref.id]);
    }
    default:
      return undefined;
  }
}

const KIND_LABEL: Record<string, string> = { dataset_version: 'dataset version', run: 'run', model_version: 'model version', deployment: 'deployment', pipeline_run: 'pipeline run' };

function nodeLabel(ref: LineageRef): string {
  if (ref.kind === 'run') return `run ${ref.id}`;
  if (ref.kind === 'model_version') return ref.id.replace(/\/(\d+)$/, ' v$1');
  if (ref.kind === 'pipeline_run') return `pipeline run ${ref.id}`;
  return ref.id;
}

export function lineageGraph(l: Lineage, extra: { node: LineageRef; relation: string }[] = []): HTMLElement {
  const key = (r: LineageRef) => `${r.kind}:${r.id}`;
  const nodes = new Map<string, GNode>();
  const add = (r: LineageRef, root = false, direction = '') => {
    if (nodes.has(key(r))) return;
    nodes.set(key(r), { id: key(r), label: nodeLabel(r), sub: KIND_LABEL[r.kind] ?? r.kind, href: nodeHref(r), cls: `k-${r.kind}${root ? ' root' : ''}`, title: `${KIND_LABEL[r.kind] ?? r.kind} ${r.id}${direction ? ` (${direction})` : ''}` });
  };
  add(l.root, true);
  for (const n of l.nodes) add(n, n.direction === 'root', n.direction);
  const edges: GEdge[] = [];
  const seen = new Set<string>();
  for (const e of l.edges) {
    add(e.src);
    add(e.dst);
    const k = `${key(e.src)}>${key(e.dst)}`;
    if (seen.has(k)) {
      const prev = edges.find((x) => `${x.src}>${x.dst}` === k);
      if (prev && prev.label && !prev.label.includes(e.relation)) prev.label += `, ${e.relation}`;
      continue;
    }
    seen.add(k);
    edges.push({ src: key(e.src), dst: key(e.dst), label: e.relation });
  }
  for (const x of extra) {
    add(x.node);
    const k = `${key(l.root)}>${key(x.node)}`;
    if (!seen.has(k)) edges.push({ src: key(l.root), dst: key(x.node), label: x.relation, dashed: true });
  }
  return dag([...nodes.values()], edges, { testid: 'lineage-graph' });
}

route('lineage/:kind/:id', 'Lineage', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const ref = { kind: params.kind, id: params.id };
  const depth = query.get('depth') ?? '10';
  const depthSel = h('select', null, ['1', '2', '3', '5', '10', '20'].map((d) => h('option', { value: d, selected: d === depth }, d)));
  depthSel.addEventListener('change', () => (location.hash = href(['lineage', ref.kind, ref.id], { depth: depthSel.value })));
  const self = nodeHref(ref);
  root.append(pageHeader(`Lineage of ${KIND_LABEL[ref.kind] ?? ref.kind} ${ref.id}`, self ? link(self, 'its page') : null, ' · depth ', depthSel));
  const l = await api.get<Lineage>(`/api/v1/lineage/${enc(ref.kind)}/${enc(ref.id)}?depth=${enc(depth)}`, signal);
  let extra: { node: LineageRef; relation: string }[] = [];
  if (ref.kind === 'model_version') {
    const sl = ref.id.lastIndexOf('/');
    const mname = ref.id.slice(0, sl);
    const ver = Number(ref.id.slice(sl + 1));
    const deps = await api.get<{ deployments: Deployment[] }>('/api/v1/deployments', signal).then((d) => d.deployments).catch(() => [] as Deployment[]);
    extra = deps.flatMap((d) => {
      const st = d.status;
      if (st?.model === mname && st.version === ver) return [{ node: { kind: 'deployment', id: d.name }, relation: 'serves' }];
      if (st?.canary?.model === mname && st.canary.version === ver) return [{ node: { kind: 'deployment', id: d.name }, relation: 'canary' }];
      if (st?.shadow?.model === mname && st.shadow.version === ver) return [{ node: { kind: 'deployment', id: d.name }, relation: 'shadow' }];
      return [];
    });
  }
  root.append(
    l.edges.length || extra.length ? section('Graph', lineageGraph(l, extra), h('p', { class: 'muted' }, 'Upstream on the left, downstream on the right; each box links to its page. Dashed: serving now (from the deployments’ status).')) : empty('No lineage recorded for this node.'),
    section('Edges', table(l.edges, [
      { title: 'From', cell: (e) => { const u = nodeHref(e.src); return u ? link(u, `${KIND_LABEL[e.src.kind] ?? e.src.kind} ${e.src.id}`) : e.src.id; } },
      { title: 'Relation', cell: (e) => e.relation },
      { title: 'To', cell: (e) => { const u = nodeHref(e.dst); return u ? link(u, `${KIND_LABEL[e.dst.kind] ?? e.dst.kind} ${e.dst.id}`) : e.dst.id; } },
      { title: '', cell: (e) => link(href(['lineage', e.src.kind === ref.kind && e.src.id === ref.id ? e.dst.kind : e.src.kind, e.src.kind === ref.kind && e.src.id === ref.id ? e.dst.id : e.src.id]), 'lineage of the other end') },
    ], { cls: 'compact', emptyText: 'No edges.' })),
  );
});
