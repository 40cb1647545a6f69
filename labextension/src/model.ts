/**
 * What the panel and the status bar show: nodes, active tasks, my tasks and my VPSes.
 *
 * Task and node changes arrive on the event stream (`tasks=all`). Each time the stream
 * (re)connects, the state is read afresh over REST, and events that arrive meanwhile are
 * applied after it, so nothing is lost across reconnects. Node metrics change with
 * heartbeats, which send no events, so nodes (and VPSes) are also re-read every few
 * seconds while the page is visible.
 *
 * Who the panel acts as (`user`, GET /me) is read on the first refresh and again after
 * the host refuses a read with 401 or 403 (a request without a login gets jupyter_server's
 * 403): the login ended, and whoever logs in next may be someone else.
 */
import { ISignal, Signal } from '@lumino/signaling';
import { IDisposable } from '@lumino/disposable';

import {
  EventStream,
  INode,
  ITask,
  IUser,
  IVps,
  RiverAPI,
  RiverAPIError,
  isTerminal
} from './api';

const METRICS_INTERVAL_MS = 5000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;
const MY_TASKS_KEPT = 50;
const ACTIVE_STATES = [
  'pending_approval',
  'queued',
  'assigning',
  'running',
  'paused'
];

export class RiverModel implements IDisposable {
  constructor(readonly api: RiverAPI) {}

  readonly nodes = new Map<string, INode>();
  readonly tasks = new Map<string, ITask>();
  me = '';
  /** Who the panel acts as, from GET /me; null until read and after a 401. */
  user: IUser | null = null;
  vps: IVps[] | null = null;
  /** null: fine; otherwise why the panel cannot show the cluster. */
  error: string | null = null;
  connected = false;
  /** False once the host answered 404 to a VPS terminal request. */
  terminalsSupported = true;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Start listening (idempotent). */
  start(): void {
    if (this._stream || this._disposed) {
      return;
    }
    this._stream = this.api.events(() => ({ tasks: 'all' }), {
      onEvent: (kind, data) => this._onEvent(kind, data),
      onStatus: connected => {
        this.connected = connected;
        this._emit();
      }
    });
    this._timer = window.setInterval(() => {
      if (!document.hidden) {
        void this._poll();
      }
    }, METRICS_INTERVAL_MS);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._stream?.dispose();
    window.clearInterval(this._timer);
    window.clearTimeout(this._retry);
    window.clearTimeout(this._nodesSoon);
    Signal.clearData(this);
  }

  /** My tasks, newest first. */
  myTasks(limit = 20): ITask[] {
    return [...this.tasks.values()]
      .filter(t => t.owner === this.me)
      .sort(byNewest)
      .slice(0, limit);
  }

  /** Everyone's tasks waiting for a place (or for approval), in queue order. */
  queue(): ITask[] {
    const rank = (t: ITask) =>
      t.state === 'queued' ? (t.queue_position ?? 1e9) : 2e9;
    return [...this.tasks.values()]
      .filter(t => t.state === 'queued' || t.state === 'pending_approval')
      .sort((a, b) => rank(a) - rank(b) || byNewest(b, a));
  }

  counts(): { running: number; queued: number } {
    let running = 0;
    let queued = 0;
    for (const task of this.tasks.values()) {
      if (task.owner !== this.me) {
        continue;
      }
      if (task.state === 'running' || task.state === 'assigning') {
        running++;
      } else if (task.state === 'queued' || task.state === 'pending_approval') {
        queued++;
      }
    }
    return { running, queued };
  }

  /** Re-read everything over REST (on every (re)connect of the event stream). */
  async refresh(): Promise<void> {
    if (this._refreshing) {
      this._again = true;
      return this._refreshing;
    }
    this._refreshing = this._refresh();
    try {
      await this._refreshing;
    } finally {
      this._refreshing = null;
    }
    if (this._again) {
      this._again = false;
      await this.refresh();
    }
  }

  private async _refresh(): Promise<void> {
    this._buffer = [];
    try {
      const [user, nodes, active, mine, vps] = await Promise.all([
        this.user ?? this.api.me(),
        this.api.nodes(),
        this.api.tasks(true, ACTIVE_STATES),
        this.api.tasks(false),
        this.api.vpsList().catch(() => null)
      ]);
      if (this.me && this.me !== user.name) {
        this._stream?.reconnect(); // it still carries the previous login
      }
      this.user = user;
      this.me = user.name;
      this._setNodes(nodes);
      this.tasks.clear();
      for (const task of [...active, ...mine.slice(0, MY_TASKS_KEPT)]) {
        this.tasks.set(task.id, task);
      }
      this.vps = vps;
      this.error = null;
      this._retryDelay = RETRY_MIN_MS;
    } catch (error) {
      const missing = error instanceof RiverAPIError && error.status === 404;
      const signedOut = this._signedOut(error);
      this.error = missing
        ? 'This server has no River API.'
        : signedOut
          ? `Signed out (${(error as Error).message}): log in again; the panel ` +
            'reconnects by itself.'
          : `Cannot read the cluster state: ${(error as Error).message}`;
      // A network blip or a restarting host: try again, less and less often.
      window.clearTimeout(this._retry);
      this._retry = window.setTimeout(
        () => void this.refresh(),
        missing ? RETRY_MAX_MS : this._retryDelay
      );
      this._retryDelay = Math.min(this._retryDelay * 2, RETRY_MAX_MS);
    } finally {
      const buffered = this._buffer ?? [];
      this._buffer = null;
      for (const [kind, data] of buffered) {
        this._apply(kind, data);
      }
      this._emit();
    }
  }

  /** A VPS as the host just returned it (its ports, say), until the next re-read. */
  updateVps(vps: IVps): void {
    if (this.vps) {
      this.vps = this.vps.map(known => (known.id === vps.id ? vps : known));
      this._emit();
    }
  }

  /** Apply a task record we just got from an action (e.g. kill). */
  updateTask(task: ITask): void {
    this._apply('task', { task });
    this._emit();
  }

  private _onEvent(kind: string, data: any): void {
    if (kind === 'hello') {
      void this.refresh();
      return;
    }
    if (kind === 'task') {
      // Placements and endings move nodes' held cores and the queue's positions, which
      // send no events of their own: re-read them soon, once per burst.
      window.clearTimeout(this._nodesSoon);
      this._nodesSoon = window.setTimeout(() => void this._poll(), 300);
    }
    if (this._buffer) {
      this._buffer.push([kind, data]);
      return;
    }
    this._apply(kind, data);
    this._emit();
  }

  private _apply(kind: string, data: any): void {
    if (kind === 'node' && data.node) {
      this.nodes.set(data.node.name, data.node);
    } else if (kind === 'task' && data.task) {
      const task: ITask = data.task;
      const known = this.tasks.get(task.id);
      if (known && isTerminal(known.state) && !isTerminal(task.state)) {
        return; // a terminal state is final
      }
      if (isTerminal(task.state)) {
        this._ended.add(task.id);
        if (this._ended.size > 5000) {
          this._ended.delete(this._ended.values().next().value as string);
        }
      }
      if (task.owner === this.me || !isTerminal(task.state)) {
        this.tasks.set(task.id, task);
        this._trimMine();
      } else {
        this.tasks.delete(task.id);
      }
    }
  }

  private _trimMine(): void {
    const mine = [...this.tasks.values()]
      .filter(t => t.owner === this.me && isTerminal(t.state))
      .sort(byNewest);
    for (const task of mine.slice(MY_TASKS_KEPT)) {
      this.tasks.delete(task.id);
    }
  }

  private _setNodes(nodes: INode[]): void {
    this.nodes.clear();
    for (const node of nodes) {
      this.nodes.set(node.name, node);
    }
  }

  /** Re-read what changes without events: node metrics and held cores, queue positions
   * and wait reasons, VPSes. Task states are left to the event stream. */
  private async _poll(): Promise<void> {
    if (this.error) {
      return;
    }
    try {
      // A host without VPS routes (null) is asked again only on a full refresh.
      const [nodes, queued, vps] = await Promise.all([
        this.api.nodes(),
        this.api.tasks(true, ['queued']),
        this.vps === null ? null : this.api.vpsList().catch(() => this.vps)
      ]);
      this._setNodes(nodes);
      for (const task of queued) {
        const known = this.tasks.get(task.id);
        if (known?.state === 'queued') {
          known.queue_position = task.queue_position;
          known.wait_reason = task.wait_reason;
        } else if (!known && !this._ended.has(task.id)) {
          this.tasks.set(task.id, task);
        }
      }
      this.vps = vps;
      this._emit();
    } catch (error) {
      // The event stream's reconnect re-reads everything once the host answers again;
      // a refusal is not a blip: show it, and re-read (identity included) until it passes.
      if (this._signedOut(error)) {
        void this.refresh();
      }
    }
  }

  /**
   * Whether `error` says the login is gone (401, or the 403 a request without one gets:
   * every read of a refresh is open to any signed-in user); then who we are is read again.
   */
  private _signedOut(error: unknown): boolean {
    if (
      error instanceof RiverAPIError &&
      (error.status === 401 || error.status === 403)
    ) {
      this.user = null;
      return true;
    }
    return false;
  }

  private _emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private _changed = new Signal<this, void>(this);
  private _stream: EventStream | null = null;
  private _buffer: Array<[string, any]> | null = null;
  private _refreshing: Promise<void> | null = null;
  private _again = false;
  private _timer = 0;
  private _retry = 0;
  private _nodesSoon = 0;
  /** Tasks seen ending: a poll answered before the end must not bring them back. */
  private _ended = new Set<string>();
  private _retryDelay = RETRY_MIN_MS;
  private _disposed = false;
}

function byNewest(a: ITask, b: ITask): number {
  // IDs are time-ordered snowflakes: a longer decimal string is a larger number.
  return b.id.length - a.id.length || (b.id > a.id ? 1 : b.id < a.id ? -1 : 0);
}
