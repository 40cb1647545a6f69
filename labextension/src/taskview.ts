/**
 * The task view (issue #21): a main-area tab per task with its state timeline, resources,
 * node, end, time limit, priority, blobs, its live log (logs.ts) and Kill/Requeue, and a
 * job's members side by side, each opening its own view.
 *
 * The view follows the panel's model (one event stream for the whole lab) rather than
 * opening a stream of its own for state: when the model's copy of the task changes, the
 * view re-reads the task's recorded transitions and blobs. The log has its own stream, as
 * the logs tab does, since only this view wants those lines.
 *
 * Requeue: the host has no requeue route (a displaced task is requeued by the host itself,
 * river_server/preemption.py). The button resubmits the task's stored spec and request as
 * a new task through POST /tasks and opens the new task's view (docs/labextension.md).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import {
  MainAreaWidget,
  WidgetTracker,
  showErrorMessage
} from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Panel, Widget } from '@lumino/widgets';

import { ITask, RiverAPI, Schemas, isTerminal } from './api';
import { timeLeftText } from './limits';
import { LogView } from './logs';
import { RiverModel } from './model';
import { formatBytes, h } from './panel';

type ITransition = Schemas['TaskTransition'];
type IBlob = Schemas['Blob'];

/** What the view asks of the lab: dialogs and opening other views live in index.ts. */
export interface ITaskViewActions {
  kill(task: ITask): Promise<void>;
  open(id: string): void;
  error(title: string, error: unknown): void;
}

/** The fields of a finished task's spec that POST /tasks takes back as they are. */
const RESUBMIT_SPEC = [
  'command',
  'script',
  'env',
  'workdir',
  'image',
  'environment',
  'mounts',
  'privileged',
  'python',
  'python_fallback',
  'data'
];

/** A POST /tasks body that runs `task` again: its spec and the resources it asked for. */
export function resubmitBody(task: ITask): Record<string, unknown> {
  const spec = (task.spec ?? {}) as Record<string, unknown>;
  const body: Record<string, unknown> = {};
  for (const key of RESUBMIT_SPEC) {
    if (spec[key] !== undefined && spec[key] !== null) {
      body[key] = spec[key];
    }
  }
  const request = task.request;
  body.cores = request.cores;
  if (request.memory) {
    body.memory = request.memory;
  }
  if (request.target) {
    body.target = request.target; // names explicit GPU indices too (node::0,1)
  } else if (request.gpus) {
    body.gpus = request.gpus;
  }
  if (task.name) {
    body.name = task.name;
  }
  if (task.time_limit) {
    body.time_limit = task.time_limit;
  }
  body.priority = task.priority;
  body.preemptible = task.preemptible;
  return body;
}

function clock(at: number | null | undefined): string {
  return at ? new Date(at * 1000).toLocaleTimeString() : '-';
}

function seconds(s: number): string {
  return s < 90 ? `${s.toFixed(1)} s` : `${Math.round(s / 60)} min`;
}

/** One "label: value" row of the facts list. */
function fact(key: string, label: string, value: string): HTMLElement[] {
  return [
    h('dt', {}, label),
    h('dd', { 'data-fact': key }, value)
  ];
}

class TaskInfo extends Widget {
  constructor() {
    super();
    this.addClass('jp-River-taskInfo');
  }
}

export class TaskView extends Panel {
  constructor(
    private readonly api: RiverAPI,
    private readonly model: RiverModel,
    readonly taskId: string,
    private readonly actions: ITaskViewActions
  ) {
    super();
    this.addClass('jp-River-taskView');
    this.node.dataset.taskId = taskId;
    this.addWidget(this.info);
    const known = model.tasks.get(taskId);
    this.log = new LogView(api, known ?? { id: taskId, owner: model.me });
    this.addWidget(this.log);
    model.changed.connect(this.onModel, this);
    // Time limit left counts down between model changes.
    this.timer = window.setInterval(() => this.render(), 5000);
    void this.reload();
  }

  dispose(): void {
    window.clearInterval(this.timer);
    this.model.changed.disconnect(this.onModel, this);
    super.dispose();
  }

  /** The model's copy changed (an event): re-read what only the API gives. */
  private onModel(): void {
    const fresh = this.model.tasks.get(this.taskId);
    if (!fresh || !this.task) {
      return;
    }
    const key = `${fresh.state}/${fresh.node}/${fresh.exit_code}/${fresh.requeues}`;
    if (key !== this.seen) {
      this.task = { ...fresh, spec: this.task.spec };
      void this.reload();
    } else {
      this.render();
    }
  }

  private async reload(): Promise<void> {
    const id = encodeURIComponent(this.taskId);
    try {
      const [task, transitions, blobs] = await Promise.all([
        this.api.request<{ task: ITask }>(`tasks/${id}`),
        this.api
          .request<{ transitions: ITransition[] }>(`tasks/${id}/transitions`)
          .catch(() => ({ transitions: [] as ITransition[] })),
        this.api
          .request<{ blobs: IBlob[] }>(`tasks/${id}/blobs`)
          .catch(() => ({ blobs: [] as IBlob[] }))
      ]);
      this.task = task.task;
      this.transitions = transitions.transitions;
      this.blobs = blobs.blobs;
      this.failure = '';
    } catch (error) {
      this.failure = (error as Error).message;
    }
    this.render();
  }

  private render(): void {
    const task = this.task;
    const root = this.info.node;
    root.replaceChildren();
    if (!task) {
      root.append(
        h('div', { class: 'jp-River-dim' }, this.failure || 'Loading…')
      );
      return;
    }
    this.seen = `${task.state}/${task.node}/${task.exit_code}/${task.requeues}`;
    this.title.label = `Task: ${task.name || task.id}`;
    this.node.dataset.state = task.state;
    root.append(
      h(
        'div',
        { class: 'jp-River-taskHead' },
        h('span', { class: 'jp-River-name' }, task.name || task.kind),
        h('span', { class: 'jp-River-dim' }, task.id),
        h(
          'span',
          { class: `jp-River-badge jp-River-state-${task.state}` },
          task.state
        ),
        this.buttons(task)
      ),
      this.timeline(task),
      this.facts(task)
    );
    const members = this.members(task);
    if (members) {
      root.append(members);
    }
    root.append(this.blobList());
  }

  private buttons(task: ITask): HTMLElement {
    const box = h('span', { class: 'jp-River-actions' });
    if (!isTerminal(task.state)) {
      box.append(
        h(
          'button',
          {
            class: 'jp-River-button',
            'data-action': 'kill',
            onclick: () => void this.actions.kill(task)
          },
          'Kill'
        )
      );
    } else if (task.spec && !task.job) {
      box.append(
        h(
          'button',
          {
            class: 'jp-River-button',
            'data-action': 'requeue',
            title: 'Submit the same spec again as a new task',
            onclick: () => void this.requeue(task)
          },
          'Requeue'
        )
      );
    }
    return box;
  }

  private async requeue(task: ITask): Promise<void> {
    try {
      const answer = await this.api.request<{ task: ITask }>('tasks', {
        method: 'POST',
        body: JSON.stringify(resubmitBody(task))
      });
      this.model.updateTask(answer.task);
      this.actions.open(answer.task.id);
    } catch (error) {
      this.actions.error('Could not requeue the task', error);
    }
  }

  /** queued → assigning → running → end, each with its time and recorded reason. */
  private timeline(task: ITask): HTMLElement {
    const list = h('ol', {
      class: 'jp-River-timeline',
      'aria-label': 'State timeline'
    });
    const steps = this.transitions.length
      ? this.transitions
      : [{ state: task.state, at: task.submitted_at, detail: null }];
    steps.forEach((step, i) => {
      const next = steps[i + 1]?.at ?? (isTerminal(step.state) ? step.at : Date.now() / 1000);
      const lasted = next - step.at;
      list.append(
        h(
          'li',
          { 'data-state': step.state, class: `jp-River-step jp-River-state-${step.state}` },
          h('span', { class: 'jp-River-badge' }, step.state),
          h('span', { class: 'jp-River-dim' }, clock(step.at)),
          isTerminal(step.state)
            ? null
            : h('span', { class: 'jp-River-dim' }, seconds(Math.max(0, lasted))),
          step.detail ? h('span', { class: 'jp-River-detail' }, step.detail) : null
        )
      );
    });
    if (task.state === 'queued' && task.wait_reason) {
      list.append(
        h(
          'li',
          { class: 'jp-River-step jp-River-waiting', 'data-state': 'waiting' },
          h('span', { class: 'jp-River-badge' }, 'now'),
          h(
            'span',
            { class: 'jp-River-detail' },
            `${task.wait_reason}${
              task.queue_position != null ? ` (position ${task.queue_position})` : ''
            }`
          )
        )
      );
    }
    return list;
  }

  private facts(task: ITask): HTMLElement {
    const r = task.request;
    const gpus = task.gpus.length
      ? task.gpus.join(',')
      : r.gpu_indices.length
        ? r.gpu_indices.join(',')
        : String(r.gpus);
    const end =
      task.exit_code != null || task.reason
        ? `${task.exit_code ?? '-'}${task.reason ? ` · ${task.reason}` : ''}`
        : '-';
    const left = timeLeftText(task).replace(/^ · /, '');
    return h(
      'dl',
      { class: 'jp-River-facts' },
      ...fact(
        'resources',
        'Resources',
        `${r.cores} cores · ${r.memory ? formatBytes(r.memory) : 'any'} memory · ${gpus} GPU`
      ),
      ...fact(
        'node',
        'Node',
        task.node
          ? `${task.node}${task.cpus.length ? ` (cpus ${task.cpus.join(',')})` : ''}`
          : (r.target ?? '-')
      ),
      ...fact('exit', 'Exit code', end),
      ...fact(
        'limit',
        'Time limit',
        task.time_limit ? left || `${seconds(task.time_limit)}` : 'none'
      ),
      ...fact(
        'priority',
        'Priority',
        `${task.priority}${task.preemptible ? ' · preemptible' : ''} · requeued ${task.requeues}×`
      ),
      ...fact(
        'times',
        'Times',
        `submitted ${clock(task.submitted_at)} · started ${clock(task.started_at)} · ended ${clock(task.finished_at)}`
      )
    );
  }

  /** A job's members, one row each (rank, id, state, node); each opens its own view. */
  private members(task: ITask): HTMLElement | null {
    const job = task.job;
    if (!job) {
      return null;
    }
    const members = [...this.model.tasks.values()]
      .filter(t => t.job?.id === job.id)
      .sort((a, b) => (a.job?.rank ?? 0) - (b.job?.rank ?? 0));
    const list = h(
      'div',
      { class: 'jp-River-members', 'data-job-id': job.id },
      h('div', { class: 'jp-River-dim' }, `job ${job.id}: ${job.size} members`)
    );
    for (const member of members) {
      list.append(
        h(
          'button',
          {
            class: 'jp-River-member',
            'data-task-id': member.id,
            'data-rank': String(member.job?.rank ?? ''),
            'data-state': member.state,
            'aria-current': member.id === task.id ? 'true' : 'false',
            onclick: () => this.actions.open(member.id)
          },
          h('span', { class: 'jp-River-dim' }, `rank ${member.job?.rank ?? '?'}`),
          h('span', {}, member.id),
          h('span', { class: `jp-River-badge jp-River-state-${member.state}` }, member.state),
          h('span', { class: 'jp-River-dim' }, member.node ?? '-')
        )
      );
    }
    return list;
  }

  private blobList(): HTMLElement {
    const box = h(
      'div',
      { class: 'jp-River-blobs' },
      h('div', { class: 'jp-River-dim' }, 'Blobs and pulled results')
    );
    if (!this.blobs.length) {
      box.append(h('div', { class: 'jp-River-empty' }, 'None.'));
    }
    for (const blob of this.blobs) {
      box.append(
        h(
          'div',
          { class: 'jp-River-blob', 'data-blob': blob.name },
          h('span', {}, blob.name),
          h('span', { class: 'jp-River-dim' }, formatBytes(blob.size))
        )
      );
    }
    return box;
  }

  private task: ITask | null = null;
  private transitions: ITransition[] = [];
  private blobs: IBlob[] = [];
  private failure = '';
  private seen = '';
  private readonly timer: number;
  private readonly info = new TaskInfo();
  private readonly log: LogView;
}

/**
 * Open task views from the panel: a click or Enter/Space on a task row, a job member row,
 * or a job row (its first member). Rows are found by their data attributes, so panel.ts
 * only has to make them focusable.
 */
export function openFromPanel(
  panel: Widget,
  model: RiverModel,
  open: (id: string) => void
): void {
  const target = (event: Event): string | null => {
    const el = event.target as HTMLElement;
    if (el.closest('button, a, input, select, textarea')) {
      return null;
    }
    const row = el.closest<HTMLElement>('[data-task-id]');
    if (row?.dataset.taskId) {
      return row.dataset.taskId;
    }
    const job = el.closest<HTMLElement>('[data-job-id]')?.dataset.jobId;
    if (!job) {
      return null;
    }
    const first = [...model.tasks.values()]
      .filter(t => t.job?.id === job)
      .sort((a, b) => (a.job?.rank ?? 0) - (b.job?.rank ?? 0))[0];
    return first?.id ?? null;
  };
  panel.node.addEventListener('click', event => {
    const id = target(event);
    if (id) {
      open(id);
    }
  });
  // The panel redraws its rows on every model change, which drops the keyboard focus:
  // put it back on the redrawn row of the same task, so Tab/Enter keep working.
  let focused: string | null = null;
  panel.node.addEventListener('focusin', event => {
    focused = (event.target as HTMLElement).dataset?.taskId ?? null;
  });
  new MutationObserver(() => {
    if (focused && !panel.node.contains(document.activeElement)) {
      panel.node
        .querySelector<HTMLElement>(`[data-task-id="${CSS.escape(focused)}"][tabindex]`)
        ?.focus();
    }
  }).observe(panel.node, { childList: true, subtree: true });
  panel.node.addEventListener('focusout', event => {
    const next = event.relatedTarget as Node | null;
    if (next && !panel.node.contains(next)) {
      focused = null; // the user moved on
    }
  });
  panel.node.addEventListener('keydown', event => {
    if (event.key !== 'Enter' && event.key !== ' ') {
      return;
    }
    const id = target(event);
    if (id) {
      event.preventDefault();
      open(id);
    }
  });
}

/** The `river:open-task` command, its tab tracker (one tab per task), and the panel's
 * clicks; index.ts calls this once. */
export function registerTaskViews(
  app: JupyterFrontEnd,
  api: RiverAPI,
  model: RiverModel,
  panel: Widget,
  killCommand: string,
  icon: LabIcon
): string {
  const { commands, shell } = app;
  const tracker = new WidgetTracker<MainAreaWidget<TaskView>>({
    namespace: 'river-task'
  });
  const actions: ITaskViewActions = {
    kill: async task => {
      await commands.execute(killCommand, { id: task.id });
    },
    open: id => void commands.execute(OPEN_TASK, { id }),
    error: (title, error) => void showErrorMessage(title, error as Error)
  };
  commands.addCommand(OPEN_TASK, {
    label: 'Open River task',
    execute: async args => {
      const id = String(args.id);
      const open = tracker.find(w => w.content.taskId === id);
      if (open) {
        shell.activateById(open.id);
        return;
      }
      const content = new TaskView(api, model, id, actions);
      const widget = new MainAreaWidget({ content });
      widget.id = `river-task-${id}`;
      widget.title.label = `Task: ${model.tasks.get(id)?.name || id}`;
      widget.title.icon = icon;
      widget.title.closable = true;
      content.title.changed.connect(() => {
        widget.title.label = content.title.label;
      });
      await tracker.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
    }
  });
  openFromPanel(panel, model, id => void commands.execute(OPEN_TASK, { id }));
  return OPEN_TASK;
}

export const OPEN_TASK = 'river:open-task';
