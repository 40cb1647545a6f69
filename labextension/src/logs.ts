/**
 * A main-area tab that streams one task's log: the lines already written are replayed
 * by the event stream, then new ones arrive live; a reconnect resumes after the last
 * line seen, so no line shows twice.
 */
import { Widget } from '@lumino/widgets';

import {
  EventStream,
  ILogLine,
  ITaskRef,
  RiverAPI,
  isTerminal,
  renderLine
} from './api';
import { h } from './panel';

const MAX_LINES = 5000;

export class LogView extends Widget {
  constructor(
    private readonly api: RiverAPI,
    readonly task: ITaskRef
  ) {
    super();
    this.addClass('jp-River-logs');
    this.node.append(this.status, this.pre);
    this.setState(task);
    this.connect();
  }

  dispose(): void {
    this.stream?.dispose();
    super.dispose();
  }

  private connect(): void {
    // A reconnect asks for the lines after the last one shown.
    this.stream = this.api.events(
      () => ({ task: this.task.id, since: String(this.lastSeq) }),
      {
        onEvent: (kind, data) => {
          if (kind === 'log' && data.task_id === this.task.id) {
            this.append(data as ILogLine);
          } else if (kind === 'task' && data.task?.id === this.task.id) {
            this.setState(data.task);
          }
        }
      }
    );
  }

  private append(line: ILogLine): void {
    if (line.seq <= this.lastSeq) {
      return;
    }
    this.lastSeq = line.seq;
    // Chunks of a long line are shown once the line is whole, as a terminal would.
    const text = (this.open.get(line.stream) ?? '') + line.text;
    if (line.continued) {
      this.open.set(line.stream, text);
      return;
    }
    this.open.delete(line.stream);
    const shown = renderLine(text);
    const atBottom =
      this.node.scrollTop + this.node.clientHeight >=
      this.node.scrollHeight - 4;
    this.pre.append(
      h(
        'span',
        { class: `jp-River-log-${line.stream}`, 'data-seq': String(line.seq) },
        shown.endsWith('\n') ? shown : `${shown}\n`
      )
    );
    while (this.pre.childNodes.length > MAX_LINES) {
      this.pre.firstChild?.remove();
    }
    if (atBottom) {
      this.node.scrollTop = this.node.scrollHeight;
    }
  }

  private setState(task: ITaskRef): void {
    const state = task.state ?? 'unknown';
    this.status.textContent = `${task.name || task.kind || 'task'} · ${task.id} · ${state}${
      task.exit_code != null ? ` (exit ${task.exit_code})` : ''
    }${task.reason ? ` · ${task.reason}` : ''}`;
    this.status.dataset.state = state;
    if (isTerminal(state)) {
      this.status.classList.add('jp-River-ended');
    }
  }

  private stream: EventStream | null = null;
  private lastSeq = 0;
  private readonly open = new Map<string, string>(); // unfinished lines, by stream
  private readonly status = h('div', { class: 'jp-River-logStatus' });
  private readonly pre = h('pre', { class: 'jp-River-logText' });
}
