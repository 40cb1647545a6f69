/**
 * The left side panel: the cluster's nodes with resource bars, the queue, my tasks and my
 * VPSes, with their actions. Everything is drawn with textContent (task names are user
 * input), and re-drawn at most once per animation frame when the model changes.
 */
import { Widget } from '@lumino/widgets';

import { INode, ITask, IVps, isTerminal } from './api';
import { IJobRow, foldJobs, liveMember } from './jobs';
import { timeLeftText } from './limits';
import { RiverModel } from './model';
import { HistoryCharts } from './charts';

export interface IPanelActions {
  kill(task: ITask): void;
  /** Kill a multi-node job: all its members end (river_server/jobs.py). */
  killJob(job: IJobRow): void;
  logs(task: ITask): void;
  openPort(id: string, port?: number, path?: string): void;
  terminal(vps: IVps): void;
  jupyter(vps: IVps): void;
}

type Child = Node | string | null | undefined | false;

/** A tiny element builder: h('div', {class: 'x', 'data-id': '1'}, child, ...). */
export function h(
  tag: string,
  attrs: Record<string, string | ((e: Event) => void)> = {},
  ...children: Child[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (typeof value === 'function') {
      el.addEventListener(key.replace(/^on/, ''), value);
    } else {
      el.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child) {
      el.append(child);
    }
  }
  return el;
}

export function formatBytes(n: number | undefined): string {
  if (!n) {
    return '0';
  }
  const units = ['B', 'K', 'M', 'G', 'T'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)}${units[i]}`;
}

function bar(label: string, percent: number, detail: string): HTMLElement {
  const value = Math.max(0, Math.min(100, percent || 0));
  const level = value >= 90 ? 'high' : value >= 60 ? 'mid' : 'low';
  return h(
    'div',
    { class: 'jp-River-bar', 'data-bar': label, title: `${label}: ${detail}` },
    h('span', { class: 'jp-River-barLabel' }, label),
    h(
      'span',
      { class: 'jp-River-barTrack' },
      h('span', {
        class: `jp-River-barFill jp-River-${level}`,
        style: `width: ${value.toFixed(1)}%`
      })
    ),
    h('span', { class: 'jp-River-barText' }, detail)
  );
}

function button(
  label: string,
  action: string,
  onclick: () => void,
  title = label
): HTMLElement {
  return h(
    'button',
    {
      class: 'jp-River-button',
      'data-action': action,
      title,
      onclick: (event: Event) => {
        event.stopPropagation();
        onclick();
      }
    },
    label
  );
}

export class RiverPanel extends Widget {
  constructor(
    private readonly model: RiverModel,
    private readonly actions: IPanelActions,
    private readonly charts: HistoryCharts | null = null
  ) {
    super();
    this.id = 'river-panel';
    this.addClass('jp-River-panel');
    this.title.caption = 'River cluster';
    model.changed.connect(this.schedule, this);
    this.render();
  }

  dispose(): void {
    cancelAnimationFrame(this.frame);
    this.model.changed.disconnect(this.schedule, this);
    super.dispose();
  }

  private schedule(): void {
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  render(): void {
    const m = this.model;
    const status = m.connected ? 'live' : 'reconnecting';
    const header = h(
      'div',
      { class: 'jp-River-header' },
      h('span', { class: 'jp-River-title' }, 'River'),
      h(
        'span',
        {
          class: `jp-River-conn jp-River-conn-${status}`,
          'data-connection': status,
          title: m.connected
            ? 'Updates arrive live from the host'
            : 'Connecting to the host event stream'
        },
        status
      ),
      button(
        'Refresh',
        'refresh',
        () => void m.refresh(),
        'Re-read the cluster'
      )
    );
    const sections: Child[] = [header, this.identity()];
    if (m.error) {
      sections.push(h('div', { class: 'jp-River-error' }, m.error));
    } else {
      sections.push(
        this.section('cluster', 'Cluster', this.nodes()),
        ...(this.charts
          ? [this.section('history', 'History', this.charts.overview())]
          : []),
        this.section('queue', `Queue (${m.queue().length})`, this.queue()),
        this.section('tasks', 'My tasks', this.myTasks())
      );
      if (m.vps !== null) {
        sections.push(this.section('vps', 'My VPSes', this.vpses(m.vps)));
      }
    }
    this.node.replaceChildren(...(sections.filter(Boolean) as Node[]));
  }

  /**
   * "NAME (ROLE)": who this panel acts as, so a shared lab or a second browser shows at
   * a glance whose tasks these are. Text only: a name is user input (a Hub's, say).
   */
  private identity(): HTMLElement | null {
    const user = this.model.user;
    if (!user) {
      return null;
    }
    const groups = user.groups?.length
      ? `; groups: ${user.groups.join(', ')}`
      : '';
    return h(
      'div',
      {
        class: 'jp-River-me',
        'data-user': user.name,
        'data-role': user.role,
        title: `Signed in as ${user.name}, role ${user.role}${groups}`
      },
      'Signed in as ',
      h('span', { class: 'jp-River-meName' }, user.name),
      ` (${user.role})`
    );
  }

  private section(name: string, title: string, body: HTMLElement): HTMLElement {
    return h(
      'section',
      { class: 'jp-River-section', 'data-section': name },
      h('h3', { class: 'jp-River-sectionTitle' }, title),
      body
    );
  }

  private nodes(): HTMLElement {
    const list = h('div', { class: 'jp-River-list' });
    const nodes = [...this.model.nodes.values()].sort((a, b) =>
      a.name.localeCompare(b.name)
    );
    if (!nodes.length) {
      list.append(
        h('div', { class: 'jp-River-empty' }, 'No runners registered.')
      );
    }
    for (const node of nodes) {
      list.append(this.nodeCard(node));
    }
    return list;
  }

  private nodeCard(node: INode): HTMLElement {
    const metrics = node.metrics ?? {};
    const memTotal = metrics.memory_total || node.memory;
    const freeCores = node.free?.cores ?? node.cores;
    const used = node.cores - freeCores;
    const card = h(
      'div',
      {
        class: 'jp-River-node',
        'data-node': node.name,
        'data-state': node.state
      },
      h(
        'div',
        { class: 'jp-River-row' },
        h('span', { class: 'jp-River-name' }, node.name),
        h(
          'span',
          { class: `jp-River-badge jp-River-state-${node.state}` },
          node.state
        ),
        h(
          'span',
          { class: 'jp-River-dim' },
          [
            node.backend ?? '',
            `${node.cores} ${node.cores === 1 ? 'core' : 'cores'}`,
            formatBytes(node.memory)
          ].join(' · ')
        )
      ),
      bar(
        'CPU',
        metrics.cpu_percent ?? 0,
        `${(metrics.cpu_percent ?? 0).toFixed(0)}%`
      ),
      bar(
        'Mem',
        memTotal ? (100 * (metrics.memory_used ?? 0)) / memTotal : 0,
        `${formatBytes(metrics.memory_used)} / ${formatBytes(memTotal)}`
      ),
      bar(
        'Cores',
        node.cores ? (100 * used) / node.cores : 0,
        `${used}/${node.cores} held`
      )
    );
    if (this.charts) {
      card.append(this.charts.sparkline(node.name));
    }
    for (const gpu of node.gpus ?? []) {
      const memPct = gpu.memory
        ? (100 * (gpu.memory_used ?? 0)) / gpu.memory
        : 0;
      card.append(
        bar(`GPU${gpu.index}`, gpu.util ?? 0, `${(gpu.util ?? 0).toFixed(0)}%`),
        bar(
          `VRAM${gpu.index}`,
          memPct,
          `${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory)}`
        )
      );
    }
    return card;
  }

  private queue(): HTMLElement {
    const list = h('div', { class: 'jp-River-list' });
    const queue = this.model.queue();
    if (!queue.length) {
      list.append(h('div', { class: 'jp-River-empty' }, 'Nothing waits.'));
    }
    for (const row of foldJobs(queue)) {
      if ('job' in row) {
        list.append(this.jobRow(row.job));
        continue;
      }
      const task = row.task;
      list.append(
        this.taskRow(
          task,
          task.state === 'queued'
            ? `#${task.queue_position ?? '?'} ${task.owner}: ${task.wait_reason ?? ''}`
            : `${task.owner}: waiting for approval`
        )
      );
    }
    return list;
  }

  private myTasks(): HTMLElement {
    const list = h('div', { class: 'jp-River-list' });
    const tasks = this.model.myTasks();
    if (!tasks.length) {
      list.append(h('div', { class: 'jp-River-empty' }, 'No tasks yet.'));
    }
    for (const row of foldJobs(tasks)) {
      if ('job' in row) {
        list.append(this.jobRow(row.job));
        continue;
      }
      const task = row.task;
      const detail = task.node
        ? `on ${task.node}${task.exit_code != null ? ` · exit ${task.exit_code}` : ''}` +
          timeLeftText(task)
        : (task.reason ?? task.wait_reason ?? '');
      list.append(this.taskRow(task, detail));
    }
    return list;
  }

  /**
   * A multi-node job as one row: "job J (k of N)", the job's state, and its members
   * (rank, id, state, node) behind a toggle that survives redraws. Kill ends the job.
   */
  private jobRow(job: IJobRow): HTMLElement {
    const first = job.members[0];
    const mine = first.owner === this.model.me;
    const open = this._openJobs.has(job.id);
    const actions = h('span', { class: 'jp-River-actions' });
    actions.append(
      button(
        open ? 'Hide' : 'Members',
        'toggle-members',
        () => {
          if (!this._openJobs.delete(job.id)) {
            this._openJobs.add(job.id);
          }
          this.schedule();
        },
        open ? 'Hide the members' : 'Show the members'
      )
    );
    if (mine) {
      actions.append(button('Logs', 'logs', () => this.actions.logs(first)));
      if (liveMember(job)) {
        actions.append(
          button(
            'Kill',
            'kill',
            () => this.actions.killJob(job),
            'Kill the whole job'
          )
        );
      }
    }
    const ended = job.members.find(m => m.reason)?.reason;
    const row = h(
      'div',
      {
        class: 'jp-River-task jp-River-job',
        'data-job-id': job.id,
        tabindex: '0',
        'data-state': job.state,
        'data-members': String(job.members.length),
        title: ended ?? first.wait_reason ?? ''
      },
      h(
        'div',
        { class: 'jp-River-row' },
        h(
          'span',
          { class: 'jp-River-name' },
          `job ${job.id} (${job.members.length} of ${job.size})`
        ),
        h(
          'span',
          { class: `jp-River-badge jp-River-state-${job.state}` },
          job.state
        )
      ),
      h(
        'div',
        { class: 'jp-River-row' },
        h(
          'span',
          { class: 'jp-River-dim' },
          `${first.name || first.kind} · ${first.job?.network ?? 'overlay'}`
        ),
        actions
      )
    );
    if (open) {
      const list = h('div', { class: 'jp-River-members' });
      for (const member of job.members) {
        list.append(
          h(
            'div',
            {
              class: 'jp-River-member',
              'data-task-id': member.id,
              tabindex: '0',
              'data-rank': String(member.job?.rank ?? ''),
              'data-state': member.state
            },
            h(
              'span',
              { class: 'jp-River-dim' },
              `rank ${member.job?.rank ?? '?'}`
            ),
            h('span', {}, member.id),
            h(
              'span',
              { class: `jp-River-badge jp-River-state-${member.state}` },
              member.state
            ),
            h('span', { class: 'jp-River-dim' }, member.node ?? '-')
          )
        );
      }
      row.append(list);
    }
    return row;
  }

  /** Jobs whose member rows are shown (kept across redraws). */
  private _openJobs = new Set<string>();

  private taskRow(task: ITask, detail: string): HTMLElement {
    const mine = task.owner === this.model.me;
    const actions = h('span', { class: 'jp-River-actions' });
    if (mine) {
      actions.append(button('Logs', 'logs', () => this.actions.logs(task)));
      if (task.state === 'running') {
        actions.append(
          button(
            'Port',
            'open-port',
            () => this.actions.openPort(task.id),
            'Open a port'
          )
        );
      }
      if (!isTerminal(task.state)) {
        actions.append(button('Kill', 'kill', () => this.actions.kill(task)));
      }
    }
    return h(
      'div',
      {
        class: 'jp-River-task',
        'data-task-id': task.id,
        tabindex: '0',
        'aria-label': `Open task ${task.name || task.kind} ${task.id}`,
        'data-state': task.state,
        title: task.reason ?? task.wait_reason ?? ''
      },
      h(
        'div',
        { class: 'jp-River-row' },
        h('span', { class: 'jp-River-name' }, task.name || task.kind),
        h(
          'span',
          { class: `jp-River-badge jp-River-state-${task.state}` },
          task.state
        )
      ),
      h(
        'div',
        { class: 'jp-River-row' },
        h('span', { class: 'jp-River-dim' }, `${task.id} ${detail}`.trim()),
        actions
      )
    );
  }

  private vpses(vpses: IVps[]): HTMLElement {
    const list = h('div', { class: 'jp-River-list' });
    if (!vpses.length) {
      list.append(h('div', { class: 'jp-River-empty' }, 'No VPSes.'));
    }
    for (const vps of vpses) {
      const actions = h('span', { class: 'jp-River-actions' });
      if (vps.state === 'running') {
        if (this.model.terminalsSupported) {
          actions.append(
            button('Terminal', 'terminal', () => this.actions.terminal(vps))
          );
        }
        if (!(vps.ports ?? []).some(port => port.name === 'jupyter')) {
          actions.append(
            button(
              'Jupyter',
              'start-jupyter',
              () => this.actions.jupyter(vps),
              'Start Jupyter in this VPS and open it'
            )
          );
        }
        for (const port of vps.ports ?? []) {
          actions.append(
            button(
              port.name || String(port.port),
              'open-port',
              () => this.actions.openPort(vps.id, port.port, port.path),
              `Open port ${port.port}`
            )
          );
        }
        actions.append(
          button(
            'Port',
            'open-port',
            () => this.actions.openPort(vps.id),
            'Open a port'
          )
        );
      }
      list.append(
        h(
          'div',
          {
            class: 'jp-River-vps',
            'data-vps-id': vps.id,
            'data-state': vps.state
          },
          h(
            'div',
            { class: 'jp-River-row' },
            h('span', { class: 'jp-River-name' }, vps.name || vps.id),
            h(
              'span',
              { class: `jp-River-badge jp-River-state-${vps.state}` },
              vps.state
            )
          ),
          h(
            'div',
            { class: 'jp-River-row' },
            h(
              'span',
              { class: 'jp-River-dim' },
              `${vps.id} ${vps.node ? `on ${vps.node}` : ''}`
            ),
            actions
          ),
          // Why a VPS stopped when its owner did not stop it (idle culling, a time
          // limit): the owner's notice in the panel.
          vps.state === 'stopped' && vps.reason
            ? h(
                'div',
                { class: 'jp-River-row jp-River-dim jp-River-vps-reason' },
                vps.reason
              )
            : null
        )
      );
    }
    return list;
  }

  private frame = 0;
}
