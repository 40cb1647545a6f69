/**
 * The submit form: a command, or the active notebook cell's source run as a Python script,
 * with resources, image or environment, an array count, a time limit and a priority. The
 * body is the host's `TaskSubmit`; the host validates it and the form shows what it says.
 */
import { Schemas, ITask, RiverAPI } from '../api';
import { IFormResult, RiverForm, optionalInt, optionalText } from './form';
import { resourceFields, timeLimit } from './fields';

export type TaskSubmit = Schemas['TaskSubmit'];

/** Build the `TaskSubmit` body from the form's values (one member's, for an array). */
export function submitBody(values: Record<string, string>): TaskSubmit {
  const body: TaskSubmit = {};
  if (values.mode === 'cell') {
    body.kind = 'python';
    body.script = values.script;
  } else {
    body.kind = 'command';
    body.command = values.command;
  }
  Object.assign(body, resourceFields(values));
  const image = optionalText(values, 'image');
  if (image) {
    body.image = image;
  }
  const environment = optionalText(values, 'environment');
  if (environment) {
    body.environment = environment;
  }
  const limit = timeLimit(values);
  if (limit !== undefined) {
    body.time_limit = limit;
  }
  const priority = optionalInt(values, 'priority');
  if (priority !== undefined) {
    body.priority = priority;
  }
  return body;
}

/** A client-chosen array id (1-64 of A-Za-z0-9_-, docs/api.md "Task arrays"). */
function arrayId(): string {
  return `lab-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

export interface ISubmitFormOptions {
  api: RiverAPI;
  /** The active cell's source, if a notebook was current when the form opened. */
  cellSource: string | null;
  environments: string[];
  onSubmitted: (tasks: ITask[]) => void;
  openLogs: (task: ITask) => void;
}

export function createSubmitForm(o: ISubmitFormOptions): RiverForm {
  const hasCell = o.cellSource !== null;
  const form = new RiverForm({
    id: 'river-submit-form',
    title: 'Submit a River task',
    intro:
      'Run a shell command, or the active notebook cell as a Python script, on the cluster.',
    submitLabel: 'Submit',
    fields: [
      {
        name: 'mode',
        label: 'What to run',
        kind: 'select',
        options: [
          ['command', 'A command'],
          ['cell', 'The current notebook cell']
        ],
        value: hasCell ? 'cell' : 'command',
        aliases: ['kind']
      },
      {
        name: 'command',
        label: 'Command',
        placeholder: 'python train.py --epochs 3',
        aliases: []
      },
      {
        name: 'script',
        label: 'Python script (the cell)',
        kind: 'textarea',
        value: o.cellSource ?? '',
        help: 'Ctrl+Enter submits from here.'
      },
      { name: 'name', label: 'Name', placeholder: 'optional' },
      { name: 'cores', label: 'Cores', kind: 'number', value: '1' },
      { name: 'memory', label: 'Memory', placeholder: 'e.g. 512M or 8G' },
      { name: 'gpus', label: 'GPUs', kind: 'number', placeholder: '0' },
      { name: 'image', label: 'Image', placeholder: 'docker runners only' },
      {
        name: 'target',
        label: 'Node',
        placeholder: 'any (or node[:numa][::gpu,gpu])'
      },
      {
        name: 'environment',
        label: 'Environment',
        placeholder: 'an exported environment',
        suggestions: o.environments
      },
      {
        name: 'array',
        label: 'Array count',
        kind: 'number',
        placeholder: '1',
        help: 'N tasks with RIVER_ARRAY_INDEX 0..N-1.',
        aliases: ['array.size', 'array.index', 'array.id']
      },
      {
        name: 'array_limit',
        label: 'At most running at once',
        kind: 'number',
        placeholder: 'no limit',
        aliases: ['array.limit']
      },
      {
        name: 'time_limit',
        label: 'Time limit',
        placeholder: 'e.g. 90m, 2h or seconds'
      },
      {
        name: 'priority',
        label: 'Priority',
        kind: 'number',
        placeholder: '0'
      }
    ],
    onSubmit: async values => {
      const body = submitBody(values);
      const count = optionalInt(values, 'array') ?? 1;
      const limit = optionalInt(values, 'array_limit');
      const tasks: ITask[] = [];
      if (count !== 1 || limit !== undefined) {
        const id = arrayId();
        // The first member is validated by the host before the rest are sent.
        for (let index = 0; index < Math.max(count, 1); index++) {
          body.array = { id, index, size: count, limit: limit ?? null };
          tasks.push(await submitTask(o.api, body));
        }
      } else {
        tasks.push(await submitTask(o.api, body));
      }
      o.onSubmitted(tasks);
      const first = tasks[0];
      const result: IFormResult = {
        message:
          tasks.length === 1
            ? `Submitted task ${first.id} (${first.state}).`
            : `Submitted ${tasks.length} tasks, ${first.id} first.`,
        actions: [
          { label: 'Open logs', action: 'logs', run: () => o.openLogs(first) }
        ]
      };
      return result;
    }
  });
  const sync = (mode: string) => {
    form.showField('command', mode !== 'cell');
    form.showField('script', mode === 'cell');
  };
  sync(form.values().mode);
  form.onChange('mode', sync);
  return form;
}

export async function submitTask(
  api: RiverAPI,
  body: TaskSubmit
): Promise<ITask> {
  const init = { method: 'POST', body: JSON.stringify(body) };
  return (await api.request<{ task: ITask }>('tasks', init)).task;
}
