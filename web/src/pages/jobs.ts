// Jobs and searches: the queue and states, a job's live log (polled from its offset and
// appended), resource use, cancel (editors, their own; admins anyone's); a search's trials and
// ASHA rungs.
import type uPlot from 'uplot';
import { api, canWrite, me, qs } from '../api';
import { chart } from '../charts';
import { actionButton, badge, empty, errorBox, fmtBytes, fmtNum, fmtTime, h, jsonBlock, kv, link, loading, pageHeader, replace, section, span, table } from '../dom';
import { href, route } from '../router';
import type { Job, Search, Trial } from '../types';

const FINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
const STATES = ['', 'queued', 'running', 'succeeded', 'failed', 'cancelled'];

function mayCancel(owner: string): boolean {
  return canWrite() && (me.role === 'admin' || owner === me.name);
}

function cancelJob(j: Job, after: () => void): HTMLElement | null {
  if (FINAL.has(j.state) || !mayCancel(j.owner)) return null;
  if (j.cancel_requested) return h('span', { class: 'muted' }, 'cancelling…');
  return actionButton('Cancel', async () => {
    const r = await api.post<Job>(`/api/v1/jobs/${j.id}/cancel`);
    after();
    return r.state === 'CANCELLED' ? 'cancelled' : 'cancel requested';
  }, { cls: 'danger', testid: `cancel-${j.id}` });
}

route('jobs', 'Jobs', async (ctx) => {
  const { root, signal, query } = ctx;
  const state = query.get('state') ?? '';
  const token = query.get('page_token') ?? '';
  root.append(pageHeader('Jobs', 'The training service’s queue: train, command and predict jobs.'));
  root.append(h('div', { class: 'tabs' }, STATES.map((s) => h('a', { href: href(['jobs'], { state: s }), class: s === state ? 'active' : '' }, s || 'all'))));
  const usageBox = h('div');
  const box = h('div', null, loading());
  root.append(box, section('Use by owner', usageBox));
  const render = async () => {
    const ans = await api.get<{ jobs: Job[]; next_page_token?: string }>(`/api/v1/jobs${qs({ state, page_size: 100, page_token: token })}`, signal);
    replace(box,
      table(ans.jobs, [
        { title: 'Job', cell: (j) => link(href(['jobs', j.id]), `#${j.id}`) },
        { title: 'Name', cell: (j) => link(href(['jobs', j.id]), j.name) },
        { title: 'Kind', cell: (j) => j.kind },
        { title: 'Owner', cell: (j) => j.owner },
        { title: 'State', cell: (j) => h('span', null, badge(j.state), j.cancel_requested && !FINAL.has(j.state) ? ' cancelling' : '') },
        { title: 'Priority', cls: 'num', cell: (j) => j.priority },
        { title: 'Threads', cls: 'num', cell: (j) => j.threads },
        { title: 'Attempts', cls: 'num', cell: (j) => `${j.attempts}/${j.max_retries + 1}` },
        { title: 'Created', cell: (j) => fmtTime(j.created_at) },
        { title: 'Ran for', cls: 'num', cell: (j) => (j.started_at ? span(j.started_at, j.ended_at || null) : '—') },
        { title: 'Run', cell: (j) => (j.run_id ? link(href(['runs', j.run_id]), `run ${j.run_id}`) : '—') },
        { title: '', cell: (j) => cancelJob(j, () => void render()) },
      ], { emptyText: state ? `No ${state} jobs.` : 'No jobs yet. Submit one with `dlsys jobs submit JOB.yaml`.' }),
      h('div', { class: 'pager' },
        token ? h('a', { href: href(['jobs'], { state }) }, '← First page') : null, ' ',
        ans.next_page_token ? h('a', { href: href(['jobs'], { state, page_token: ans.next_page_token }) }, 'Next →') : null),
    );
  };
  await render();
  ctx.every(3000, render);
  try {
    const u = await api.get<{ usage: { key: string; jobs: number; attempts: number; core_seconds: number; cpu_seconds: number; peak_memory_bytes: number; cost: number }[]; core_hour_price: number }>('/api/v1/jobs/usage?by=owner', signal);
    replace(usageBox, table(u.usage, [
      { title: 'Owner', cell: (x) => x.key },
      { title: 'Jobs', cls: 'num', cell: (x) => x.jobs },
      { title: 'Attempts', cls: 'num', cell: (x) => x.attempts },
      { title: 'Core-seconds', cls: 'num', cell: (x) => fmtNum(x.core_seconds) },
      { title: 'CPU seconds', cls: 'num', cell: (x) => fmtNum(x.cpu_seconds) },
      { title: 'Peak memory', cls: 'num', cell: (x) => fmtBytes(x.peak_memory_bytes) },
      { title: 'Cost', cls: 'num', cell: (x) => (u.core_hour_price ? fmtNum(x.cost) : '—') },
    ], { cls: 'compact', emptyText: 'No use recorded.' }));
  } catch (e) {
    replace(usageBox, errorBox(e, 'usage'));
  }
});

route('jobs/:id', 'Job', async (ctx) => {
  const { root, signal, params } = ctx;
  const id = Number(params.id);
  root.append(pageHeader(`Job ${id}`, link('#/jobs', 'Jobs'), ` / #${id}`));
  const info = h('div', null, loading());
  const res = h('div');
  const cancelBox = h('div');
  const pre = h('pre', { class: 'log', 'data-testid': 'log' });
  const logNote = h('p', { class: 'muted' });
  root.append(h('div', { class: 'cols2' }, section('Job', info, cancelBox), section('Resource use', res)), section('Log', logNote, pre));
  let job: Job | null = null;
  let offset = 0;
  let lastState = '';
  const refresh = async () => {
    job = await api.get<Job>(`/api/v1/jobs/${id}`, signal);
    const j = job;
    replace(info, kv([
      ['Name', j.name],
      ['Kind', j.kind],
      ['State', h('span', { 'data-testid': 'job-state' }, badge(j.state), j.cancel_requested && !FINAL.has(j.state) ? ' (cancel requested)' : '')],
      ['Owner', j.owner],
      ['Priority', String(j.priority)],
      ['Attempts', `${j.attempts} of at most ${j.max_retries + 1}`],
      ['Created', fmtTime(j.created_at)],
      ['Started', fmtTime(j.started_at)],
      ['Ended', fmtTime(j.ended_at)],
      ['End reason', j.end_reason || '—'],
      ['Run', j.run_id ? link(href(['runs', j.run_id]), `run ${j.run_id}`) : '—'],
      ['Process', j.pid ? String(j.pid) : '—'],
      ['Spec', h('details', null, h('summary', null, 'the job as submitted'), jsonBlock(j.spec))],
    ]));
    replace(res, kv([
      ['Threads', String(j.threads)],
      ['Memory declared', j.memory_bytes ? fmtBytes(j.memory_bytes) : 'not declared'],
      ['CPU seconds', fmtNum(j.cpu_seconds)],
      ['Core-seconds', fmtNum(j.core_seconds)],
      ['Peak memory', fmtBytes(j.peak_memory_bytes)],
      ['Ran for', j.started_at ? span(j.started_at, j.ended_at || null) : '—'],
      ['Last heartbeat', fmtTime(j.heartbeat_at)],
    ]));
    const stateKey = `${j.state}|${j.cancel_requested}`;
    if (stateKey !== lastState) {
      lastState = stateKey;
      replace(cancelBox, cancelJob(j, () => void refresh()));
    }
  };
  const readLog = async () => {
    // Read every new piece (1 MiB at a time) and append it.
    for (let i = 0; i < 16; i++) {
      const ans = await api.get<{ offset: number; size: number; state: string; text: string }>(`/api/v1/jobs/${id}/log?offset=${offset}&max_bytes=1048576`, signal);
      if (ans.text) {
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
        pre.append(ans.text);
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }
      const moved = ans.offset !== offset;
      offset = ans.offset;
      logNote.textContent = `${fmtBytes(ans.size)}${FINAL.has(ans.state) ? '' : ' · following the log (every second)'}`;
      if (!moved || offset >= ans.size) break;
    }
    if (!pre.textContent) pre.textContent = '';
  };
  await refresh();
  await readLog();
  ctx.every(1000, async () => {
    const wasFinal = job && FINAL.has(job.state);
    await refresh();
    if (!wasFinal) await readLog();
  });
});

// ---- searches ----

route('searches', 'Searches', async (ctx) => {
  const { root, signal, query } = ctx;
  const state = query.get('state') ?? '';
  root.append(pageHeader('Searches', 'Hyperparameter searches, stopped early by ASHA.'));
  root.append(h('div', { class: 'tabs' }, ['', 'running', 'succeeded', 'failed', 'cancelled'].map((s) => h('a', { href: href(['searches'], { state: s }), class: s === state ? 'active' : '' }, s || 'all'))));
  const box = h('div', null, loading());
  root.append(box);
  const render = async () => {
    const { searches } = await api.get<{ searches: Search[] }>(`/api/v1/searches${qs({ state, page_size: 100 })}`, signal);
    replace(box, table(searches, [
      { title: 'Search', cell: (s) => link(href(['searches', s.id]), `#${s.id}`) },
      { title: 'Name', cell: (s) => link(href(['searches', s.id]), s.name) },
      { title: 'Owner', cell: (s) => s.owner },
      { title: 'State', cell: (s) => badge(s.state) },
      { title: 'Best trial', cls: 'num', cell: (s) => (s.best_trial >= 0 ? s.best_trial : '—') },
      { title: 'Created', cell: (s) => fmtTime(s.created_at) },
      { title: 'Took', cls: 'num', cell: (s) => span(s.created_at, s.ended_at || null) },
      { title: 'Registered', cell: (s) => (s.model_version ? `version ${s.model_version}` : '—') },
    ], { emptyText: 'No searches. Submit one with `dlsys search submit SEARCH.yaml`.' }));
  };
  await render();
  ctx.every(3000, render);
});

route('searches/:id', 'Search', async (ctx) => {
  const { root, signal, params } = ctx;
  const id = Number(params.id);
  root.append(pageHeader(`Search ${id}`, link('#/searches', 'Searches'), ` / #${id}`));
  const info = h('div', null, loading());
  const rungBox = h('div');
  const chartEl = h('div', { class: 'chart-box' });
  const trialsBox = h('div');
  root.append(h('div', { class: 'cols2' }, section('Search', info), section('ASHA rungs', rungBox)), section('Trials: the metric after each rung', chartEl, trialsBox));
  let u: uPlot | null = null;
  signal.addEventListener('abort', () => u?.destroy());
  let lastKey = '';
  const render = async () => {
    const s = await api.get<Search>(`/api/v1/searches/${id}`, signal);
    const trials = s.trials ?? [];
    const rungs = s.rungs ?? [];
    replace(info, kv([
      ['Name', s.name],
      ['State', badge(s.state)],
      ['Owner', s.owner],
      ['Metric', `${s.metric ?? '—'} (${s.mode ?? ''})`],
      ['Trials', `${trials.length} started of ${s.trials_total ?? '?'}`],
      ['Best trial', s.best_trial >= 0 ? String(s.best_trial) : '—'],
      ['Created', fmtTime(s.created_at)],
      ['Ended', fmtTime(s.ended_at)],
      ['End reason', s.end_reason || '—'],
      ['Registered version', s.model_version ? String(s.model_version) : '—'],
      ['Spec', h('details', null, h('summary', null, 'the search as submitted'), jsonBlock(s.spec))],
      ['', !FINAL.has(s.state) && !s.cancel_requested && canWrite() && (me.role === 'admin' || s.owner === me.name)
        ? actionButton('Cancel search', async () => { await api.post(`/api/v1/searches/${id}/cancel`); void render(); return 'cancel requested'; }, { cls: 'danger' })
        : s.cancel_requested && !FINAL.has(s.state) ? 'cancelling…' : ''],
    ]));
    // Rung r: the trials that reached it, best first.
    const better = (a: number, b: number) => (s.mode === 'min' ? a - b : b - a);
    replace(rungBox, rungs.length
      ? h('div', null, rungs.map((epochs, r) => {
          const reached = trials.filter((t) => (t.results?.length ?? 0) > r && t.results![r] !== null);
          const running = trials.filter((t) => t.rung === r && !(t.results && t.results.length > r) && !FINAL.has(t.job_state));
          reached.sort((a, b) => better(a.results![r] as number, b.results![r] as number));
          return h('div', { class: 'rung' }, h('h3', null, `Rung ${r}: ${epochs} epoch${epochs === 1 ? '' : 's'}`),
            h('p', { class: 'muted' }, `${reached.length} finished${running.length ? `, ${running.length} training` : ''}`),
            reached.length ? h('ol', null, reached.slice(0, 10).map((t) => h('li', null, `trial ${t.trial}: ${fmtNum(t.results![r], 5)} `, t.trial === s.best_trial ? h('span', { class: 'chip ok' }, 'best') : null))) : null);
        }))
      : empty('No rungs.'));
    replace(trialsBox, table(trials, [
      { title: 'Trial', cell: (t) => h('span', null, String(t.trial), t.trial === s.best_trial ? h('span', { class: 'chip ok' }, 'best') : null) },
      { title: 'Params', cell: (t) => h('code', null, Object.entries(t.params).map(([k, v]) => `${k}=${typeof v === 'number' ? fmtNum(v) : String(v)}`).join(' ')) },
      { title: 'State', cell: (t) => badge(t.state) },
      { title: 'Rung', cls: 'num', cell: (t) => t.rung },
      { title: 'Epochs', cls: 'num', cell: (t) => t.epochs },
      { title: 'Results', cell: (t) => (t.results ?? []).map((x) => fmtNum(x, 4)).join(' → ') || '—' },
      { title: 'Job', cell: (t: Trial) => (t.job_id ? h('span', null, link(href(['jobs', t.job_id]), `#${t.job_id}`), ' ', badge(t.job_state)) : '—') },
      { title: 'Run', cell: (t) => (t.run_id ? link(href(['runs', t.run_id]), `run ${t.run_id}`) : '—') },
      { title: 'Core-s', cls: 'num', cell: (t) => fmtNum(t.core_seconds) },
      { title: 'Why it stopped', cell: (t) => t.end_reason },
    ], { cls: 'compact', emptyText: 'No trials yet.' }));
    // A line per trial across the rungs it reached (x: epochs).
    const key = JSON.stringify(trials.map((t) => t.results));
    if (key !== lastKey && rungs.length && trials.some((t) => t.results?.length)) {
      lastKey = key;
      const shown = trials.filter((t) => t.results?.length).slice(0, 200);
      const data: uPlot.AlignedData = [rungs, ...shown.map((t) => rungs.map((_, r) => t.results?.[r] ?? null))];
      u?.destroy();
      chartEl.textContent = '';
      u = chart(chartEl, shown.map((t) => ({ label: `trial ${t.trial}`, width: t.trial === s.best_trial ? 3 : 1.2 })), data, { xLabel: 'epochs', points: true, height: 220, legend: shown.length <= 12 });
    }
    return FINAL.has(s.state);
  };
  const done = await render();
  if (!done) ctx.every(2000, async () => void (await render()));
});
