// The overview: what is served, running and firing now, with links into each page.
import { api, me } from '../api';
import { badge, chip, empty, fmtAgo, h, link, loading, pageHeader, replace, section } from '../dom';
import { href, route } from '../router';
import type { Alert, Deployment, Job, Model, Run } from '../types';

route('', 'Overview', async (ctx) => {
  const { root, signal } = ctx;
  root.append(pageHeader('dlsys', `Signed in as ${me.name} (${me.role}).`));
  const grid = h('div', { class: 'cards' });
  root.append(grid);
  const card = (title: string, to: string, load: () => Promise<HTMLElement>) => {
    const body = h('div', null, loading());
    grid.append(section(title, body, h('p', null, link(to, `All ${title.toLowerCase()} →`))));
    void load().then((el) => replace(body, el)).catch((e) => replace(body, h('p', { class: 'muted' }, String((e as Error).message ?? e))));
  };
  card('Runs', '#/runs', async () => {
    const { runs } = await api.get<{ runs: Run[] }>('/api/v1/runs?page_size=6', signal);
    return runs.length ? h('ul', { class: 'plain' }, runs.map((r) => h('li', null, link(href(['runs', r.id]), `#${r.id} ${r.name}`), ' ', badge(r.status), h('span', { class: 'muted' }, ` ${fmtAgo(r.start_time)}`)))) : empty('No runs yet.');
  });
  card('Models', '#/models', async () => {
    const { models } = await api.get<{ models: Model[] }>('/api/v1/models?page_size=6', signal);
    return models.length ? h('ul', { class: 'plain' }, models.map((m) => h('li', null, link(href(['models', m.name]), m.name), ` ${m.version_count} versions `, Object.entries(m.aliases ?? {}).map(([a, v]) => chip(`${a} → ${v}`))))) : empty('No models.');
  });
  card('Deployments', '#/deployments', async () => {
    const { deployments } = await api.get<{ deployments: Deployment[] }>('/api/v1/deployments', signal);
    return deployments.length ? h('ul', { class: 'plain' }, deployments.map((d) => h('li', null, link(href(['deployments', d.name]), d.name), ` ${d.model} v${d.status?.version ?? '?'} `, badge(d.status?.state ?? 'unknown'), d.status?.canary ? chip(`canary v${d.status.canary.version} ${d.status.canary.weight}%`) : null))) : empty('Nothing served.');
  });
  card('Jobs', '#/jobs', async () => {
    const { jobs } = await api.get<{ jobs: Job[] }>('/api/v1/jobs?page_size=6', signal);
    return jobs.length ? h('ul', { class: 'plain' }, jobs.map((j) => h('li', null, link(href(['jobs', j.id]), `#${j.id} ${j.name}`), ' ', badge(j.state)))) : empty('No jobs.');
  });
  card('Alerts', '#/alerts', async () => {
    const { alerts } = await api.get<{ alerts: Alert[] }>('/api/v1/alerts?state=FIRING&limit=6', signal);
    return alerts.length ? h('ul', { class: 'plain' }, alerts.map((a) => h('li', null, link(href(['monitoring', a.deployment]), `${a.rule} on ${a.deployment}`), ' ', badge(a.state)))) : empty('Nothing firing.');
  });
});
