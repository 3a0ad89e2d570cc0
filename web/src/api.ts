// The REST client: every request carries the session's token (never in a URL), and every
// failure becomes an ApiError whose message is the server's own words.

const TOKEN_KEY = 'dlsys.token';

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function getToken(): string {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function setToken(token: string): void {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives for this page only */
  }
}

/** Called when the server answers 401: the app shows the login form. */
let onUnauthenticated: (() => void) | null = null;
export function setUnauthenticatedHandler(fn: () => void): void {
  onUnauthenticated = fn;
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  const t = getToken();
  if (t) h['Authorization'] = `Bearer ${t}`;
  return h;
}

async function errorOf(r: Response): Promise<ApiError> {
  let text = '';
  try {
    text = await r.text();
  } catch {
    /* the body could not be read */
  }
  let message = '';
  let code = '';
  try {
    const j = JSON.parse(text) as { error?: unknown };
    if (typeof j.error === 'string') message = j.error;
    else if (j.error && typeof j.error === 'object') {
      const e = j.error as { message?: unknown; code?: unknown };
      if (typeof e.message === 'string') message = e.message;
      if (typeof e.code === 'string') code = e.code;
    }
  } catch {
    message = text.slice(0, 300);
  }
  if (!message) message = `the server answered HTTP ${r.status} ${r.statusText}`;
  return new ApiError(message, r.status, code || String(r.status));
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Do not call the 401 handler (the login check itself). */
  quiet401?: boolean;
}

export async function rawRequest(
  method: string,
  path: string,
  body?: unknown,
  opts: RequestOptions = {},
): Promise<Response> {
  const init: RequestInit = { method, headers: headers(), signal: opts.signal, cache: 'no-store' };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers = headers({ 'Content-Type': 'application/json' });
  }
  let r: Response;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e instanceof DOMException && e.name === 'AbortError') throw e;
    throw new ApiError(`could not reach the dlsys server (${String((e as Error).message ?? e)})`, 0, 'NETWORK');
  }
  if (!r.ok) {
    const err = await errorOf(r);
    if (r.status === 401 && !opts.quiet401 && onUnauthenticated) onUnauthenticated();
    throw err;
  }
  return r;
}

export async function request<T>(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
  const r = await rawRequest(method, path, body, opts);
  const text = await r.text();
  if (!text) return {} as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(`the server's answer to ${method} ${path} is not JSON`, r.status, 'BAD_ANSWER');
  }
}

export const api = {
  get: <T>(path: string, signal?: AbortSignal) => request<T>('GET', path, undefined, { signal }),
  post: <T>(path: string, body: unknown = {}, signal?: AbortSignal) => request<T>('POST', path, body, { signal }),
  put: <T>(path: string, body: unknown, signal?: AbortSignal) => request<T>('PUT', path, body, { signal }),
  patch: <T>(path: string, body: unknown, signal?: AbortSignal) => request<T>('PATCH', path, body, { signal }),
  del: <T>(path: string, signal?: AbortSignal) => request<T>('DELETE', path, undefined, { signal }),
  text: async (path: string, signal?: AbortSignal) => (await rawRequest('GET', path, undefined, { signal })).text(),
};

/** The first `maxLines` lines of a (possibly huge, streamed) text answer; stops reading there. */
export async function headLines(path: string, maxLines: number, signal?: AbortSignal): Promise<{ lines: string[]; more: boolean }> {
  const r = await rawRequest('GET', path, undefined, { signal });
  if (!r.body) {
    const all = (await r.text()).split('\n');
    return { lines: all.slice(0, maxLines), more: all.length > maxLines + 1 };
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  const lines: string[] = [];
  let more = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += dec.decode(value, { stream: !done });
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0 && lines.length < maxLines) {
      lines.push(buf.slice(0, nl).replace(/\r$/, ''));
      buf = buf.slice(nl + 1);
    }
    if (lines.length >= maxLines) {
      more = buf.length > 0 || !done;
      if (!done) await reader.cancel().catch(() => undefined);
      break;
    }
    if (done) {
      if (buf) lines.push(buf);
      break;
    }
  }
  return { lines, more };
}

/** Fetches a file with the token and hands it to the browser as a download (a blob URL). */
export async function download(path: string, filename: string): Promise<void> {
  const r = await rawRequest('GET', path);
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export const enc = encodeURIComponent;

export function qs(params: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

// ---- who is signed in ----

export type Role = 'viewer' | 'editor' | 'admin' | 'inference';
export interface Me {
  name: string;
  role: Role | null;
  auth: boolean;
}

export const me: Me = { name: '', role: null, auth: false };

export function canWrite(): boolean {
  return me.role === 'editor' || me.role === 'admin';
}
export function isAdmin(): boolean {
  return me.role === 'admin';
}
export function canRead(): boolean {
  return me.role === 'viewer' || canWrite();
}
