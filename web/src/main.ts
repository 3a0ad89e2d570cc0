// The dlsys web UI: who is signed in, the navigation, and the page for the current hash.
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { ApiError, getToken, me, request, setToken, setUnauthenticatedHandler, type Me } from './api';
import { clear, errorBox, errorText, h, isAbort } from './dom';
import { match, parseHash, type PageCtx } from './router';
import './pages/index';

const app = document.getElementById('app') as HTMLElement;

const NAV: [string, string][] = [
  ['#/', 'Overview'],
  ['#/datasets', 'Datasets'],
  ['#/runs', 'Runs'],
  ['#/models', 'Models'],
  ['#/deployments', 'Deployments'],
  ['#/jobs', 'Jobs'],
  ['#/searches', 'Searches'],
  ['#/pipelines', 'Pipelines'],
  ['#/monitoring', 'Monitoring'],
  ['#/alerts', 'Alerts'],
];

let content: HTMLElement | null = null;
let nav: HTMLElement | null = null;
let leave: (() => void) | null = null;
let showingLogin = false;

function layout(): void {
  clear(app);
  nav = h('nav', { class: 'nav' });
  const who = h(
    'div',
    { class: 'who' },
    h('span', { 'data-testid': 'whoami' }, me.name || '—', ' · ', h('strong', null, me.role ?? '')),
    me.auth && getToken()
      ? h('button', { type: 'button', class: 'link', onclick: () => { setToken(''); location.reload(); } }, 'Sign out')
      : null,
  );
  content = h('main', { id: 'content' });
  app.append(h('div', { class: 'shell' }, h('aside', { class: 'side' }, h('a', { class: 'brand', href: '#/' }, 'dlsys'), nav, who), content));
  renderNav();
}

function renderNav(): void {
  if (!nav) return;
  const cur = parseHash(location.hash).path[0] ?? '';
  clear(nav);
  for (const [href, label] of NAV) {
    const first = href.replace(/^#\//, '').split('/')[0];
    const active = first === cur || (first === 'runs' && cur === 'compare') || (first === 'models' && cur === 'lineage');
    nav.append(h('a', { href, class: active ? 'active' : '' }, label));
  }
}

async function dispatch(): Promise<void> {
  if (showingLogin || !content) return;
  if (leave) leave();
  renderNav();
  const { path, query } = parseHash(location.hash);
  const m = match(path);
  const root = h('div', { class: 'page' });
  clear(content);
  content.append(root);
  const ctl = new AbortController();
  const cleanups: (() => void)[] = [];
  let isAlive = true;
  leave = () => {
    isAlive = false;
    ctl.abort();
    for (const c of cleanups) c();
    leave = null;
  };
  if (!m) {
    document.title = 'dlsys · not found';
    root.append(h('h1', null, 'Not found'), h('p', null, `No page at ${location.hash || '#/'}. `, h('a', { href: '#/' }, 'Go to the overview')));
    return;
  }
  document.title = `dlsys · ${m.route.title}`;
  const ctx: PageCtx = {
    root,
    params: m.params,
    query,
    signal: ctl.signal,
    alive: () => isAlive,
    onLeave: (fn) => cleanups.push(fn),
    every: (ms, fn, now = false) => {
      let timer = 0;
      const tick = async () => {
        if (!isAlive) return;
        try {
          await fn();
        } catch (e) {
          if (!isAbort(e)) console.warn('refresh failed:', errorText(e));
        }
        if (isAlive) timer = window.setTimeout(tick, ms);
      };
      timer = window.setTimeout(tick, now ? 0 : ms);
      cleanups.push(() => clearTimeout(timer));
    },
  };
  try {
    await m.route.page(ctx);
  } catch (e) {
    if (isAbort(e) || !isAlive) return;
    root.append(errorBox(e, 'This page could not be shown'));
  }
}

function showLogin(message = ''): void {
  showingLogin = true;
  if (leave) leave();
  clear(app);
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', placeholder: 'dlsys API token', 'data-testid': 'token', required: true });
  const err = h('div', { class: 'login-error' }, message ? errorBox(message) : null);
  const form = h(
    'form',
    { class: 'login', 'data-testid': 'login' },
    h('h1', null, 'dlsys'),
    h('p', null, 'This server requires a token. Make one with ', h('code', null, 'dlsys tokens create --role viewer'), '.'),
    input,
    h('button', { type: 'submit' }, 'Sign in'),
    err,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    const ok = await whoami();
    if (ok) {
      showingLogin = false;
      layout();
      void dispatch();
    } else {
      setToken('');
      clear(err);
      err.append(errorBox('that token was not accepted (it may be revoked or mistyped)'));
    }
  });
  app.append(form);
  input.focus();
}

/** Asks who we are; false when a token is needed. */
async function whoami(): Promise<boolean> {
  try {
    const w = await request<Me>('GET', '/api/v1/whoami', undefined, { quiet401: true });
    me.name = w.name ?? '';
    me.role = w.role ?? null;
    me.auth = Boolean(w.auth);
    return me.role !== null;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return false;
    throw e;
  }
}

async function start(): Promise<void> {
  setUnauthenticatedHandler(() => {
    if (!showingLogin) {
      setToken('');
      showLogin('the server asked for a token again (it may have been revoked)');
    }
  });
  let ok: boolean;
  try {
    ok = await whoami();
  } catch (e) {
    clear(app);
    app.append(h('div', { class: 'page' }, h('h1', null, 'dlsys'), errorBox(e, 'The server could not be asked who you are'), h('p', null, h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'))));
    return;
  }
  if (!ok) {
    showLogin();
    return;
  }
  if (me.role === 'inference') {
    clear(app);
    app.append(h('div', { class: 'page' }, h('h1', null, 'dlsys'), h('p', null, 'This token has the inference role: it may call deployments, not read the UI. Sign in with a viewer, editor or admin token.'), h('button', { type: 'button', onclick: () => { setToken(''); showLogin(); } }, 'Use another token')));
    return;
  }
  layout();
  window.addEventListener('hashchange', () => void dispatch());
  void dispatch();
}

window.addEventListener('unhandledrejection', (ev) => {
  if (isAbort(ev.reason)) ev.preventDefault();
});

void start();
