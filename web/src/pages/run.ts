// One run: header, params, tags, latest metrics, a chart per metric key (zoom fetches the
// visible steps again), artifacts (downloaded with the token as a blob; small text and JSON
// previewed), its job's log, and its lineage.
import { api, download, enc, rawRequest } from '../api';
import { metricChart } from '../charts';
import { actionButton, badge, empty, errorBox, fmtBytes, fmtNum, fmtTime, h, kv, link, loading, pageHeader, replace, section, span, table } from '../dom';
import { href, route } from '../router';
import type { Experiment, Lineage, Run } from '../types';
import { lineageGraph } from './models';

const PREVIEW_MAX = 256 * 1024;
const TEXTUAL = /\.(txt|json|jsonl|yaml|yml|csv|tsv|log|md|py|sh|cfg|ini|toml)$/i;

route('runs/:id', 'Run', async (ctx) => {
  const { root, signal, params } = ctx;
  const id = Number(params.id);
  const run = await api.get<Run>(`/api/v1/runs/${id}`, signal);
  const exp = await api.get<Experiment>(`/api/v1/experiments/${run.experiment_id}`, signal).catch(() => null);
  root.append(
    pageHeader(
      h('span', null, run.name || `run ${run.id}`, ' ', badge(run.status)),
      link('#/runs', 'Runs'), ' / ',
      exp ? link(href(['runs'], { experiment: exp.name }), exp.name) : `experiment ${run.experiment_id}`, ' / ', `#${run.id}`,
    ),
  );
  const jobId = run.tags['dlsys.job_id'];
  root.append(
    h(
      'div',
      { class: 'cols2' },
      section(
        'Run',
        kv([
          ['Id', String(run.id)],
          ['Status', badge(run.status)],
          ['Started', fmtTime(run.start_time)],
          ['Ended', fmtTime(run.end_time)],
          ['Duration', span(run.start_time, run.end_time)],
          ['Last heard from', fmtTime(run.heartbeat_time)],
          ['End reason', run.end_reason || '—'],
          ['Created by', run.created_by],
          ['Job', jobId ? link(href(['jobs', jobId]), `job ${jobId}`) : '—'],
          ['Lineage', link(href(['lineage', 'run', run.id]), 'datasets → this run → models')],
        ]),
      ),
      section('Params', Object.keys(run.params).length ? kv(Object.entries(run.params).sort().map(([k, v]) => [k, h('code', null, v)])) : empty('No params.')),
    ),
  );
  const metricKeys = Object.keys(run.metrics).sort();
  root.append(
    h(
      'div',
      { class: 'cols2' },
      section('Latest metrics', metricKeys.length ? table(metricKeys, [
        { title: 'Key', cell: (k) => k },
        { title: 'Value', cls: 'num', cell: (k) => fmtNum(run.metrics[k].value, 6) },
        { title: 'Step', cls: 'num', cell: (k) => run.metrics[k].step },
        { title: 'Time', cell: (k) => fmtTime(run.metrics[k].timestamp) },
      ], { cls: 'compact' }) : empty('No metrics.')),
      section('Tags', Object.keys(run.tags).length ? kv(Object.entries(run.tags).sort().map(([k, v]) => [k, v])) : empty('No tags.')),
    ),
  );
  const charts = h('div', { class: 'charts' });
  root.append(section('Metric charts', metricKeys.length ? charts : empty('This run logged no metrics.')));
  for (const k of metricKeys) {
    const cell = h('div', { class: 'chart-cell', 'data-metric': k });
    charts.append(cell);
    metricChart(cell, id, k, signal);
  }
  const arts = h('div', null, loading('Listing artifacts'));
  root.append(section('Artifacts', arts));
  void artifacts(arts, id, signal);
  if (jobId) {
    const logBox = h('div', null, loading('Reading the log'));
    root.append(section(`Log of job ${jobId}`, logBox));
    void (async () => {
      try {
        const first = await api.get<{ size: number }>(`/api/v1/jobs/${enc(jobId)}/log?offset=0&max_bytes=4`, signal);
        const from = Math.max(0, first.size - 65536);
        const ans = await api.get<{ text: string; size: number }>(`/api/v1/jobs/${enc(jobId)}/log?offset=${from}&max_bytes=65536`, signal);
        replace(logBox, from > 0 ? h('p', { class: 'muted' }, `The last 64 KiB of ${fmtBytes(ans.size)}; `, link(href(['jobs', jobId]), 'the whole log on the job’s page'), '.') : null, h('pre', { class: 'log' }, ans.text || '(empty)'));
      } catch (e) {
        replace(logBox, errorBox(e, 'log'));
      }
    })();
  }
  const lin = h('div', null, loading('Reading lineage'));
  root.append(section('Lineage', lin));
  try {
    const l = await api.get<Lineage>(`/api/v1/lineage/run/${id}?depth=4`, signal);
    replace(lin, l.edges.length ? lineageGraph(l) : empty('No lineage recorded for this run (no dataset version in, no model version out).'));
  } catch (e) {
    replace(lin, errorBox(e, 'lineage'));
  }
});

interface Artifact {
  path: string;
  sha256: string;
  size: number;
  created_at: number;
}

async function artifacts(box: HTMLElement, runId: number, signal: AbortSignal): Promise<void> {
  try {
    const { artifacts } = await api.get<{ artifacts: Artifact[] }>(`/api/v1/runs/${runId}/artifacts`, signal);
    const preview = h('div', { class: 'preview' });
    const url = (a: Artifact) => `/api/v1/runs/${runId}/artifacts/${a.path.split('/').map(enc).join('/')}`;
    replace(
      box,
      table(artifacts, [
        { title: 'Path', cell: (a) => h('code', null, a.path) },
        { title: 'Size', cls: 'num', cell: (a) => fmtBytes(a.size) },
        { title: 'SHA-256', cell: (a) => h('code', { title: a.sha256 }, a.sha256.slice(0, 12)) },
        { title: 'Created', cell: (a) => fmtTime(a.created_at) },
        {
          title: '',
          cell: (a) => h('span', { class: 'row-actions' },
            actionButton('Download', async () => { await download(url(a), a.path.split('/').pop() || 'artifact'); return 'saved'; }),
            a.size <= PREVIEW_MAX && TEXTUAL.test(a.path)
              ? actionButton('Preview', async () => {
                  const r = await rawRequest('GET', url(a), undefined, { signal });
                  let text = await r.text();
                  if (/\.json$/i.test(a.path)) {
                    try {
                      text = JSON.stringify(JSON.parse(text), null, 2);
                    } catch {
                      /* shown as it is */
                    }
                  }
                  replace(preview, h('h3', null, a.path), h('pre', { class: 'json', 'data-testid': 'preview' }, text));
                  return '';
                })
              : null),
        },
      ], { emptyText: 'No artifacts.' }),
      preview,
    );
  } catch (e) {
    replace(box, errorBox(e, 'artifacts'));
  }
}
