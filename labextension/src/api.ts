/**
 * The host's REST API and server-sent event stream (docs/api.md), through JupyterLab's
 * server connection: the base URL, the XSRF header and the login cookie come from there.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';

export interface IGpu {
  index: number;
  name?: string;
  memory?: number;
  util?: number;
  memory_used?: number;
  temperature?: number;
}

export interface INode {
  name: string;
  state: 'online' | 'offline';
  backend?: string;
  cores: number;
  memory: number;
  gpus: IGpu[];
  free?: { cores?: number; memory?: number; gpus?: number[] };
  metrics?: {
    cpu_percent?: number;
    memory_used?: number;
    memory_total?: number;
  };
}

export interface ITask {
  id: string;
  name?: string | null;
  owner: string;
  kind: string;
  state: string;
  node?: string | null;
  exit_code?: number | null;
  reason?: string | null;
  queue_position?: number | null;
  wait_reason?: string | null;
  submitted_at?: number;
}

/**
 * A port of a VPS the host proxies; `name` ("jupyter", "tensorboard") labels it and
 * `path` (relative to the server's base URL, with the app's own token) is what to open.
 */
export interface IPort {
  port: number;
  name?: string;
  path?: string;
  ready_path?: string;
}

export interface IVps {
  id: string;
  name?: string | null;
  owner?: string;
  state: string;
  node?: string | null;
  ports?: IPort[];
}

export interface ILogLine {
  task_id: string;
  seq: number;
  stream: 'stdout' | 'stderr';
  text: string;
  ts: number;
  /** A chunk of a line longer than 64 KiB: the next line of this stream continues it. */
  continued?: boolean;
}

/**
 * What a terminal shows for one log line: each \r returns to the line's start and the text
 * after it overwrites what was there, so a progress bar shows its last state
 * (the rule of river_runner/loglines.py `render`).
 */
export function renderLine(text: string): string {
  if (!text.includes('\r')) {
    return text;
  }
  let shown = '';
  for (const segment of text.split('\r')) {
    shown = segment + shown.slice(segment.length);
  }
  return shown;
}

export const TERMINAL_STATES = new Set([
  'completed',
  'failed',
  'killed',
  'killed_oom',
  'lost'
]);

export function isTerminal(state: string): boolean {
  return TERMINAL_STATES.has(state);
}

/** An HTTP error from the River API, with the host's `message`. */
export class RiverAPIError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

export class RiverAPI {
  readonly settings = ServerConnection.makeSettings();

  /** Absolute URL of a River API path, e.g. url('tasks', {all: '1'}). */
  url(path: string, query: Record<string, string | string[]> = {}): string {
    const base = URLExt.join(this.settings.baseUrl, 'river/api', path);
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      for (const item of Array.isArray(value) ? value : [value]) {
        params.append(key, item);
      }
    }
    const text = params.toString();
    return text ? `${base}?${text}` : base;
  }

  /** A path relative to the server's base URL (an app's recorded `path`). */
  pageUrl(path: string): string {
    return URLExt.join(this.settings.baseUrl, path);
  }

  /** Where the host proxies `port` of a task or VPS. */
  proxyUrl(id: string, port: number): string {
    return URLExt.join(
      this.settings.baseUrl,
      'river/proxy',
      encodeURIComponent(id),
      String(port),
      '/'
    );
  }

  async request<T>(
    path: string,
    init: RequestInit = {},
    query: Record<string, string | string[]> = {}
  ): Promise<T> {
    const response = await ServerConnection.makeRequest(
      this.url(path, query),
      init,
      this.settings
    );
    const text = await response.text();
    let data: any = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = { message: text };
    }
    if (!response.ok) {
      throw new RiverAPIError(
        response.status,
        data.message || `${response.status} ${response.statusText}`
      );
    }
    return data as T;
  }

  async me(): Promise<string> {
    const data = await this.request<{ user: { name: string } }>('me');
    return data.user.name;
  }

  async nodes(): Promise<INode[]> {
    return (await this.request<{ nodes: INode[] }>('nodes')).nodes;
  }

  /**
   * Own tasks (newest first), or everyone's with `all`, optionally in `states`.
   * The newest page only (up to 1,000, the API's default page): the panel shows what is
   * recent and active; it does not follow the answer's `next` cursor to older tasks.
   */
  async tasks(all: boolean, states: string[] = []): Promise<ITask[]> {
    const query: Record<string, string> = {};
    if (all) {
      query.all = '1';
    }
    if (states.length) {
      query.state = states.join(',');
    }
    return (await this.request<{ tasks: ITask[] }>('tasks', {}, query)).tasks;
  }

  async kill(id: string): Promise<ITask> {
    const path = `tasks/${encodeURIComponent(id)}/kill`;
    return (await this.request<{ task: ITask }>(path, { method: 'POST' })).task;
  }

  /** My VPSes, or null where the host has no VPS routes (404). */
  async vpsList(): Promise<IVps[] | null> {
    try {
      return (await this.request<{ vps: IVps[] }>('vps')).vps;
    } catch (error) {
      if (error instanceof RiverAPIError && error.status === 404) {
        return null;
      }
      throw error;
    }
  }

  /** Ask the host for a terminal into a VPS; returns the Jupyter terminal's name. */
  async vpsTerminal(id: string): Promise<string> {
    const path = `vps/${encodeURIComponent(id)}/terminal`;
    return (await this.request<{ name: string }>(path, { method: 'POST' }))
      .name;
  }

  /** Start an app ("jupyter", "tensorboard") in a VPS; the VPS with it among its ports. */
  async startApp(id: string, app: string): Promise<IVps> {
    const path = `vps/${encodeURIComponent(id)}/apps`;
    const init = { method: 'POST', body: JSON.stringify({ app }) };
    return (await this.request<{ vps: IVps }>(path, init)).vps;
  }

  /** Poll a page under the base URL until it answers 200 (an app starting up). */
  async waitReady(path: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const response = await ServerConnection.makeRequest(
        this.pageUrl(path),
        {},
        this.settings
      );
      if (response.ok) {
        return;
      }
      if (Date.now() > deadline) {
        throw new RiverAPIError(
          response.status,
          `${path} did not answer in time`
        );
      }
      await new Promise(resolve => setTimeout(resolve, 500));
    }
  }

  /** Subscribe to the event stream; `query` is re-read on every reconnect. */
  events(
    query: () => Record<string, string | string[]>,
    handler: EventStream.IHandler
  ): EventStream {
    // EventSource cannot set headers: the login cookie authenticates it. A page that
    // was given a token (and no cookie) passes it as the `token` parameter instead.
    return new EventStream(() => {
      const full = { ...query() };
      if (this.settings.token) {
        full.token = this.settings.token;
      }
      return this.url('events', full);
    }, handler);
  }
}

/**
 * An EventSource that comes back: the browser retries dropped connections itself, but
 * gives up after an HTTP error; then we reconnect with a growing delay (at most 10 s).
 */
export class EventStream implements IDisposable {
  constructor(
    private readonly makeUrl: () => string,
    private readonly handler: EventStream.IHandler
  ) {
    this.connect();
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  get connected(): boolean {
    return this.open;
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    window.clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  private connect(): void {
    if (this.disposed) {
      return;
    }
    const source = new EventSource(this.makeUrl(), { withCredentials: true });
    this.source = source;
    for (const kind of ['hello', 'task', 'log', 'node']) {
      source.addEventListener(kind, event => {
        let data: any;
        try {
          data = JSON.parse((event as MessageEvent).data);
        } catch {
          return;
        }
        if (kind === 'hello') {
          this.delay = 1000;
          this.setOpen(true);
        }
        this.handler.onEvent(kind, data);
      });
    }
    source.onerror = () => {
      this.setOpen(false);
      if (source.readyState === EventSource.CLOSED && !this.disposed) {
        this.timer = window.setTimeout(() => this.connect(), this.delay);
        this.delay = Math.min(this.delay * 2, 10000);
      }
    };
  }

  private setOpen(open: boolean): void {
    if (open !== this.open) {
      this.open = open;
      this.handler.onStatus?.(open);
    }
  }

  private source: EventSource | null = null;
  private delay = 1000;
  private timer = 0;
  private open = false;
  private disposed = false;
}

export namespace EventStream {
  export interface IHandler {
    /** `hello` (the subscription is live: re-read state), `task`, `log` or `node`. */
    onEvent(kind: string, data: any): void;
    onStatus?(connected: boolean): void;
  }
}
