// Hash routes (#/runs/12?x=y): every page is linkable and works from a static file server.

export interface PageCtx {
  root: HTMLElement;
  params: Record<string, string>;
  query: URLSearchParams;
  /** Aborted when the user leaves the page: pass it to every fetch. */
  signal: AbortSignal;
  /** Runs fn every ms while the page is shown (not overlapping itself), and once now if `now`. */
  every(ms: number, fn: () => Promise<void> | void, now?: boolean): void;
  onLeave(fn: () => void): void;
  alive(): boolean;
}

export type Page = (ctx: PageCtx) => void | Promise<void>;

interface Route {
  parts: string[];
  page: Page;
  title: string;
}

const routes: Route[] = [];

export function route(pattern: string, title: string, page: Page): void {
  routes.push({ parts: pattern.split('/').filter(Boolean), page, title });
}

export function parseHash(hash: string): { path: string[]; query: URLSearchParams } {
  const raw = hash.replace(/^#/, '');
  const q = raw.indexOf('?');
  const pathPart = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
  const path = pathPart
    .split('/')
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { path, query };
}

export function match(path: string[]): { route: Route; params: Record<string, string> } | null {
  for (const r of routes) {
    if (r.parts.length !== path.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < r.parts.length; i++) {
      const p = r.parts[i];
      if (p.startsWith(':')) params[p.slice(1)] = path[i];
      else if (p !== path[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return { route: r, params };
  }
  return null;
}

/** Builds `#/a/b?x=1` with each path part encoded. */
export function href(parts: (string | number)[], query: Record<string, string | number | undefined | null> = {}): string {
  const p = parts.map((x) => encodeURIComponent(String(x))).join('/');
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const qs = q.toString();
  return `#/${p}${qs ? `?${qs}` : ''}`;
}

export function go(to: string, replace = false): void {
  if (replace) {
    history.replaceState(null, '', to);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else location.hash = to.replace(/^#/, '');
}
