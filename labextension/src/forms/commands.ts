/**
 * The forms' commands, palette and launcher entries, registered apart from index.ts so the
 * plugin gains one line. Each command opens its form in the main area (or shows the one
 * already open), reading what the form offers (environments, VM-capable nodes) at that time.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { ITask, IVps } from '../api';
import { RiverModel } from '../model';
import { IEnvironment, createEnvironmentForm } from './environment';
import { createSubmitForm } from './submit';
import { createVpsForm } from './vps';

export namespace FormCommandIDs {
  export const submit = 'river:submit-form';
  export const vps = 'river:vps-form';
  export const environment = 'river:environment-form';
}

export interface IFormHooks {
  icon: LabIcon;
  openLogs: (task: ITask) => void;
  terminal: (vps: IVps) => void;
}

/**
 * The active notebook cell's source, when the current widget is a notebook (duck-typed so
 * the extension needs no notebook dependency). A leading cell magic line (`%%river submit`)
 * is dropped: the form's fields take its place.
 */
export function activeCellSource(current: Widget | null): string | null {
  const source = (
    current as any
  )?.content?.activeCell?.model?.sharedModel?.getSource?.();
  if (typeof source !== 'string') {
    return null;
  }
  return source.startsWith('%%')
    ? source.split('\n').slice(1).join('\n')
    : source;
}

export function registerForms(
  app: JupyterFrontEnd,
  model: RiverModel,
  hooks: IFormHooks,
  palette: ICommandPalette | null,
  launcher: ILauncher | null
): void {
  const { commands, shell } = app;
  const api = model.api;

  const show = (widget: Widget) => {
    const open = Array.from(shell.widgets('main')).find(
      w => w.id === widget.id
    );
    if (open) {
      open.dispose();
    }
    shell.add(widget, 'main');
    shell.activateById(widget.id);
  };

  const environments = async (): Promise<IEnvironment[]> => {
    try {
      return (
        await api.request<{ environments: IEnvironment[] }>('environments')
      ).environments;
    } catch {
      return []; // no docker on the host: the field stays free text
    }
  };

  commands.addCommand(FormCommandIDs.submit, {
    label: args => (args.isLauncher ? 'Submit task' : 'Submit a River task…'),
    caption: 'Submit a command or the current notebook cell to the cluster',
    icon: args => (args.isLauncher ? hooks.icon : undefined),
    execute: async () => {
      // Read before the form takes the focus: then the notebook is still current.
      const cellSource = activeCellSource(shell.currentWidget);
      const form = createSubmitForm({
        api,
        cellSource,
        environments: (await environments()).map(e => e.name),
        onSubmitted: tasks => tasks.forEach(t => model.updateTask(t)),
        openLogs: hooks.openLogs
      });
      form.title.icon = hooks.icon;
      show(form);
    }
  });

  commands.addCommand(FormCommandIDs.vps, {
    label: args => (args.isLauncher ? 'Create VPS' : 'Create a River VPS…'),
    caption: 'A long-lived container or VM with a terminal and SSH',
    icon: args => (args.isLauncher ? hooks.icon : undefined),
    execute: async () => {
      const form = createVpsForm({
        api,
        nodes: await api.nodes().catch(() => [...model.nodes.values()]),
        onCreated: () => void model.refresh(),
        terminal: hooks.terminal
      });
      form.title.icon = hooks.icon;
      show(form);
    }
  });

  commands.addCommand(FormCommandIDs.environment, {
    label: args =>
      args.isLauncher
        ? 'Environments'
        : 'Create or export a River environment…',
    caption: 'Container environments built on the host',
    icon: args => (args.isLauncher ? hooks.icon : undefined),
    execute: async () => {
      const form = createEnvironmentForm({
        api,
        environments: await environments()
      });
      form.title.icon = hooks.icon;
      show(form);
    }
  });

  for (const command of [
    FormCommandIDs.submit,
    FormCommandIDs.vps,
    FormCommandIDs.environment
  ]) {
    palette?.addItem({ command, category: 'River' });
    launcher?.add({
      command,
      args: { isLauncher: true },
      category: 'River',
      rank: 0
    });
  }
}
