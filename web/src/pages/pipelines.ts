// Pipelines: their steps as a DAG, runs, and a run's DAG with each step's state, cache hits,
// timings, logs and outputs; run, cancel and retry (editors).
import { api, canWrite, enc, qs } from '../api';
import { actionButton, badge, chip, empty, errorBox, fmtTime, h, jsonBlock, kv, link, loading, pageHeader, replace, section, span, table } from '../dom';
import { dag, type GEdge, type GNode } from '../graph';
import { href, route } from '../router';
import type { Pipeline, PipelineRun, PipelineStep } from '../types';

const FINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
const STATE_CLS: Record<string, string> = { SUCCEEDED: 's-ok', FAILED: 's-bad', RUNNING: 's-run', PENDING: 's-wait', WAITING: 's-wait', SKIPPED: 's-off', CANCELLED: 's-off' };

route('pipelines', 'Pipelines', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('Pipelines', 'DAGs of data, training, evaluation, gate and deployment steps.'));
  const box = h('div', null, loading());
  root.append(box);
  const render = async () => {
    const { pipelines } = await api.get<{ pipelines: Pipeline[] }>('/api/v1/pipelines', signal);
    replace(box, table(pipelines, [
      { title: 'Pipeline', cell: (p) => link(href(['pipelines', p.name]), p.name) },
      { title: 'Version', cls: 'num', cell: (p) => p.version },
      { title: 'Owner', cell: (p) => p.owner },
      { title: 'Updated', cell: (p) => fmtTime(p.updated_at) },
      { title: 'Last run', cell: (p) => (p.last_run ? h('span', null, link(href(['pipelines', p.name, 'runs', p.last_run.id]), `#${p.last_run.id}`), ' ', badge(p.last_run.state), ` ${p.last_run.trigger}`) : '—') },
      { title: 'Started', cell: (p) => fmtTime(p.last_run?.created_at) },
    ], { emptyText: 'No pipelines. Create one with `dlsys pipelines create SPEC.yaml`.' }));
  };
  await render();
  ctx.every(3000, render);
});

function specGraph(p: Pipeline): HTMLElement {
  const steps = p.steps ?? [];
  const nodes: GNode[] = steps.map((s) => ({ id: s.name, label: s.name, sub: s.kind, cls: 'k-step' }));
  const edges: GEdge[] = steps.flatMap((s) => (s.depends_on ?? []).map((d) => ({ src: d, dst: s.name })));
  return dag(nodes, edges, { testid: 'pipeline-graph' });
}

route('pipelines/:name', 'Pipeline', async (ctx) => {
  const { root, signal, params, query } = ctx;
  const name = params.name;
  root.append(pageHeader(name, link('#/pipelines', 'Pipelines'), ' / ', name));
  const p = await api.get<Pipeline>(`/api/v1/pipelines/${enc(name)}`, signal);
  const paramInputs = Object.entries(p.params ?? {}).map(([k, v]) => [k, h('input', { type: 'text', value: String(v), name: k, class: 'narrow2' })] as const);
  root.append(
    h('div', { class: 'cols2' },
      section('Pipeline', kv([
        ['Name', p.name],
        ['Description', p.description || '—'],
        ['Version', String(p.version)],
        ['Owner', p.owner],
        ['Updated', fmtTime(p.updated_at)],
        ['Params', Object.keys(p.params ?? {}).length ? h('code', null, JSON.stringify(p.params)) : 'none'],
        ['Spec', h('details', null, h('summary', null, 'YAML'), h('pre', { class: 'json' }, p.spec_text ?? ''))],
      ])),
      canWrite()
        ? section('Start a run', h('div', { class: 'form-grid' }, paramInputs.map(([k, inp]) => h('label', null, k, inp))),
            (() => {
              const noCache = h('input', { type: 'checkbox' });
              return h('div', { class: 'toolbar' }, h('label', null, noCache, ' without the step cache'),
                actionButton('Run', async () => {
                  const ps: Record<string, string> = {};
                  for (const [k, inp] of paramInputs) ps[k] = inp.value;
                  const r = await api.post<PipelineRun>(`/api/v1/pipelines/${enc(name)}/runs`, { params: ps, no_cache: noCache.checked, trigger: 'manual' });
                  location.hash = href(['pipelines', name, 'runs', r.id]);
                  return `run ${r.id} started`;
                }, { cls: 'primary' }));
            })())
        : h('div'),
    ),
    section('Steps', specGraph(p), table(p.steps ?? [], [
      { title: 'Step', cell: (s) => s.name },
      { title: 'Kind', cell: (s) => h('code', null, s.kind) },
      { title: 'Needs', cell: (s) => (s.depends_on ?? []).join(', ') || '—' },
      { title: 'Fan-out', cell: (s) => (s.fan_out ? JSON.stringify(s.fan_out) : '—') },
      { title: 'Retries', cls: 'num', cell: (s) => s.retries ?? 0 },
      { title: 'Timeout', cls: 'num', cell: (s) => (s.timeout_seconds ? `${s.timeout_seconds} s` : '—') },
      { title: 'Cache', cell: (s) => (s.cache === false ? 'off' : 'on') },
    ], { cls: 'compact' })),
  );
  const state = query.get('state') ?? '';
  const runsBox = h('div', null, loading());
  root.append(section('Runs', h('div', { class: 'tabs' }, ['', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => h('a', { href: href(['pipelines', name], { state: s }), class: s === state ? 'active' : '' }, s || 'all'))), runsBox));
  const render = async () => {
    const { runs } = await api.get<{ runs: PipelineRun[] }>(`/api/v1/pipelines/${enc(name)}/runs${qs({ state, page_size: 100 })}`, signal);
    replace(runsBox, table(runs, [
      { title: 'Run', cell: (r) => link(href(['pipelines', name, 'runs', r.id]), `#${r.id}`) },
      { title: 'State', cell: (r) => badge(r.state) },
      { title: 'Trigger', cell: (r) => `${r.trigger}${r.event_id ? ` (${r.event_id})` : ''}` },
      { title: 'Version', cls: 'num', cell: (r) => r.pipeline_version },
      { title: 'Params', cell: (r) => h('code', null, JSON.stringify(r.params)) },
      { title: 'Owner', cell: (r) => r.owner },
      { title: 'Started', cell: (r) => fmtTime(r.created_at) },
      { title: 'Took', cls: 'num', cell: (r) => span(r.created_at, r.ended_at || null) },
      { title: 'Attempt', cls: 'num', cell: (r) => r.attempt },
    ], { emptyText: 'No runs yet.' }));
  };
  await render();
  ctx.every(3000, render);
});

route('pipelines/:name/runs/:id', 'Pipeline run', async (ctx) => {
  const { root, signal, params } = ctx;
  const id = Number(params.id);
  const head = h('div');
  const graphBox = h('div', null, loading());
  const stepsBox = h('div');
  const logsBox = h('div');
  root.append(head, section('Steps', graphBox, stepsBox), section('Logs and outputs', logsBox));
  let spec: Pipeline | null = null;
  let lastKey = '';
  const render = async (): Promise<boolean> => {
    const run = await api.get<PipelineRun>(`/api/v1/pipelines/${enc(params.name)}/runs/${id}`, signal);
    const name = run.pipeline;
    if (!spec) spec = await api.get<Pipeline>(`/api/v1/pipelines/${enc(name)}`, signal).catch(() => null);
    replace(head,
      pageHeader(h('span', null, `${name} run ${id} `, badge(run.state)), link('#/pipelines', 'Pipelines'), ' / ', link(href(['pipelines', name]), name), ` / run ${id}`),
      h('div', { class: 'cols2' },
        kv([
          ['State', h('span', { 'data-testid': 'run-state' }, badge(run.state), run.cancel_requested && !FINAL.has(run.state) ? ' cancelling' : '')],
          ['Trigger', `${run.trigger}${run.event_id ? ` (${run.event_id})` : ''}`],
          ['Params', h('code', null, JSON.stringify(run.params))],
          ['Pipeline version', String(run.pipeline_version)],
          ['Attempt', String(run.attempt)],
          ['Owner', run.owner],
          ['Started', fmtTime(run.created_at)],
          ['Took', span(run.created_at, run.ended_at || null)],
          ['End reason', run.end_reason || '—'],
          ['Cache', run.no_cache ? 'off for this run' : 'on'],
        ]),
        h('div', { class: 'toolbar' },
          canWrite() && !FINAL.has(run.state) && !run.cancel_requested ? actionButton('Cancel run', async () => { await api.post(`/api/v1/pipelines/${enc(name)}/runs/${id}/cancel`); void render(); return 'cancel requested'; }, { cls: 'danger' }) : null,
          canWrite() && (run.state === 'FAILED' || run.state === 'CANCELLED') ? actionButton('Retry', async () => { await api.post(`/api/v1/pipelines/${enc(name)}/runs/${id}/retry`); void render(); return 'running again'; }) : null,
          link(href(['lineage', 'pipeline_run', id]), 'lineage'),
        ),
      ),
    );
    const steps = run.steps ?? [];
    // The DAG: spec steps (their dependencies) colored by the state of their instances.
    const byStep = new Map<string, PipelineStep[]>();
    for (const s of steps) {
      if (!byStep.has(s.step)) byStep.set(s.step, []);
      byStep.get(s.step)!.push(s);
    }
    const names = spec?.steps?.length ? spec.steps.map((s) => s.name) : [...byStep.keys()];
    const agg = (xs: PipelineStep[] | undefined): string => {
      if (!xs?.length) return 'WAITING';
      for (const st of ['FAILED', 'RUNNING', 'PENDING', 'CANCELLED', 'WAITING']) if (xs.some((x) => x.state === st)) return st;
      if (xs.every((x) => x.state === 'SKIPPED')) return 'SKIPPED';
      return 'SUCCEEDED';
    };
    const nodes: GNode[] = names.map((n) => {
      const xs = byStep.get(n);
      const st = agg(xs);
      const cached = xs?.some((x) => x.cached);
      const kind = xs?.[0]?.kind ?? spec?.steps?.find((s) => s.name === n)?.kind ?? '';
      const took = xs?.length && xs[0].started_at ? span(Math.min(...xs.map((x) => x.started_at || Infinity)), Math.max(...xs.map((x) => x.ended_at || 0)) || null) : '';
      return { id: n, label: `${n}${xs && xs.length > 1 ? ` ×${xs.length}` : ''}`, sub: `${kind} · ${st.toLowerCase()}${cached ? ' · cached' : ''}${took ? ` · ${took}` : ''}`, cls: `k-step ${STATE_CLS[st] ?? ''}`, title: `${n}: ${st}` };
    });
    const edges: GEdge[] = (spec?.steps ?? []).flatMap((s) => (s.depends_on ?? []).map((d) => ({ src: d, dst: s.name })));
    const key = JSON.stringify(nodes.map((n) => [n.id, n.sub]));
    if (key !== lastKey) {
      lastKey = key;
      replace(graphBox, dag(nodes, edges, { testid: 'pipeline-graph' }), h('p', { class: 'muted' }, spec && spec.version !== run.pipeline_version ? `Dependencies from version ${spec.version} of the pipeline (this run used version ${run.pipeline_version}).` : ''));
      replace(stepsBox, table(steps, [
        { title: 'Step', cell: (s) => `${s.step}${s.item >= 0 ? `[${s.item}]` : ''}` },
        { title: 'Kind', cell: (s) => h('code', null, s.kind) },
        { title: 'State', cell: (s) => badge(s.state) },
        { title: 'Cache', cell: (s) => (s.cached ? chip('hit', 'ok') : s.cache_key ? chip('miss') : '—') },
        { title: 'Attempts', cls: 'num', cell: (s) => s.attempts },
        { title: 'Started', cell: (s) => fmtTime(s.started_at) },
        { title: 'Took', cls: 'num', cell: (s) => (s.started_at ? span(s.started_at, s.ended_at || null) : '—') },
        { title: 'Job', cell: (s) => (s.job_id ? link(href(['jobs', s.job_id]), `#${s.job_id}`) : '—') },
        { title: 'End reason', cell: (s) => s.end_reason },
        { title: 'Outputs', cell: (s) => (s.outputs && Object.keys(s.outputs as object).length ? h('details', null, h('summary', null, 'outputs'), jsonBlock(s.outputs), h('div', { class: 'muted' }, 'inputs'), jsonBlock(s.inputs)) : '—') },
      ], { cls: 'compact', emptyText: 'No steps yet.' }));
    }
    try {
      const logs = await api.get<{ steps: (PipelineStep & { log?: string })[] }>(`/api/v1/pipelines/${enc(name)}/runs/${id}/logs`, signal);
      replace(logsBox, logs.steps.length
        ? logs.steps.map((s) => h('details', { class: 'steplog', open: s.state === 'FAILED' || logs.steps.length <= 4 },
            h('summary', null, `${s.step}${s.item >= 0 ? `[${s.item}]` : ''} `, badge(s.state), s.cached ? chip('cached', 'ok') : null, s.end_reason ? h('span', { class: 'muted' }, ` ${s.end_reason}`) : null),
            s.log !== undefined ? h('pre', { class: 'log' }, s.log || '(empty)') : h('p', { class: 'muted' }, 'No log (this step runs inside the server).')))
        : empty('No step has started.'));
    } catch (e) {
      replace(logsBox, errorBox(e, 'logs'));
    }
    return FINAL.has(run.state);
  };
  const done = await render();
  if (!done) ctx.every(2000, async () => void (await render()));
});
