/**
 * River for JupyterLab: a side panel (nodes, queue, my tasks and VPSes), task logs in the
 * main area, terminals into VPSes, launcher entries for VPS services and a status-bar
 * item with my running and queued task counts.
 */
import {
  ILayoutRestorer,
  IRouter,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  WidgetTracker,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';

import { ITaskRef, IVps, RiverAPI, RiverAPIError } from './api';
import { liveMember } from './jobs';
import { LogView } from './logs';
import { RiverModel } from './model';
import { HistoryCharts } from './charts';
import { registerTaskViews } from './taskview';
import { RiverPanel } from './panel';
import { RiverStatus } from './statusbar';
import { registerForms } from './forms/commands';
import { registerAdmin } from './admin/commands';

const riverIcon = new LabIcon({
  name: 'jupyter-river:river',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="none" stroke="#616161" stroke-width="2" stroke-linecap="round">' +
    '<path d="M2 7c3-2 5-2 8 0s5 2 8 0 3-1 4-1"/><path d="M2 12c3-2 5-2 8 0s5 2 8 0 3-1 4-1"/>' +
    '<path d="M2 17c3-2 5-2 8 0s5 2 8 0 3-1 4-1"/></g></svg>'
});

namespace CommandIDs {
  export const openPanel = 'river:open-panel';
  export const kill = 'river:kill-task';
  export const logs = 'river:open-logs';
  export const openPort = 'river:open-port';
  export const terminal = 'river:vps-terminal';
  export const terminalFromUrl = 'river:vps-terminal-from-url';
  export const jupyter = 'river:vps-jupyter';
}

/** The URL parameter that opens a terminal into a VPS (see river_magics/vps_apps.py). */
const TERMINAL_PARAMETER = 'river-terminal';

/** Launcher entries are kept for VPS ports with these names. */
const LAUNCHER_SERVICES: Record<string, string> = {
  jupyter: 'Jupyter',
  jupyterlab: 'JupyterLab',
  tensorboard: 'TensorBoard'
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-river-labextension:plugin',
  description: 'River cluster panel, task logs, VPS terminals and status.',
  autoStart: true,
  optional: [ILayoutRestorer, ILauncher, IStatusBar, ICommandPalette, IRouter],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    launcher: ILauncher | null,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    router: IRouter | null
  ) => {
    const api = new RiverAPI();
    const model = new RiverModel(api);
    const { commands, shell } = app;

    const charts = new HistoryCharts(api, () => [...model.nodes.keys()]);
    const panel = new RiverPanel(
      model,
      {
        kill: task => void commands.execute(CommandIDs.kill, { id: task.id }),
        killJob: job => {
          const member = liveMember(job);
          if (member) {
            void commands.execute(CommandIDs.kill, {
              id: member.id,
              job: job.id,
              members: job.members.length
            });
          }
        },
        logs: task => void commands.execute(CommandIDs.logs, { id: task.id }),
        openPort: (id, port, path) =>
          void commands.execute(
            CommandIDs.openPort,
            port ? { id, port, ...(path ? { path } : {}) } : { id }
          ),
        terminal: vps =>
          void commands.execute(CommandIDs.terminal, { id: vps.id }),
        jupyter: vps =>
          void commands.execute(CommandIDs.jupyter, { id: vps.id })
      },
      charts
    );
    panel.title.icon = riverIcon;
    shell.add(panel, 'left', { rank: 250 });
    restorer?.add(panel, 'river-panel');
    model.start();
    charts.start();
    registerTaskViews(app, api, model, panel, CommandIDs.kill, riverIcon);

    const logs = new WidgetTracker<MainAreaWidget<LogView>>({
      namespace: 'river-logs'
    });

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show the River panel',
      caption: 'Nodes, queue, my tasks and VPSes',
      execute: () => shell.activateById(panel.id)
    });

    commands.addCommand(CommandIDs.kill, {
      label: 'Kill River task',
      execute: async args => {
        const id = String(args.id);
        const task = model.tasks.get(id);
        // A job's Kill sends the kill to one live member: the host ends all of them.
        const job = args.job ? String(args.job) : '';
        const answer = await showDialog({
          title: job ? 'Kill job?' : 'Kill task?',
          body: job
            ? `Kill job ${job}? All its ${String(args.members ?? '')} members end now.`
            : `Kill ${task?.name || 'task'} ${id}? Its process ends now.`,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Kill' })]
        });
        if (!answer.button.accept) {
          return;
        }
        try {
          model.updateTask(await api.kill(id));
        } catch (error) {
          await showErrorMessage('Could not kill the task', error as Error);
        }
      }
    });

    commands.addCommand(CommandIDs.logs, {
      label: 'Open River task logs',
      execute: async args => {
        const id = String(args.id);
        const open = logs.find(w => w.content.task.id === id);
        if (open) {
          shell.activateById(open.id);
          return;
        }
        const task: ITaskRef = model.tasks.get(id) ?? { id, owner: model.me };
        const widget = new MainAreaWidget({ content: new LogView(api, task) });
        widget.id = `river-logs-${id}`;
        widget.title.label = `Logs: ${task.name || id}`;
        widget.title.icon = riverIcon;
        widget.title.closable = true;
        await logs.add(widget);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
      }
    });

    commands.addCommand(CommandIDs.openPort, {
      label: args =>
        args.label ? String(args.label) : 'Open a proxied port of a River task',
      icon: args => (args.label ? riverIcon : undefined),
      execute: async args => {
        const id = String(args.id);
        if (args.path) {
          // An app River started (Jupyter, TensorBoard): its own page, with its token.
          window.open(api.pageUrl(String(args.path)), '_blank', 'noopener');
          return;
        }
        let port = Number(args.port);
        if (!port) {
          const answer = await InputDialog.getNumber({
            title: 'Open a port',
            label: `Port (of ${id}) to open through the host's proxy:`,
            value: 8888
          });
          if (!answer.button.accept || !answer.value) {
            return;
          }
          port = answer.value;
        }
        window.open(api.proxyUrl(id, port), '_blank', 'noopener');
      }
    });

    commands.addCommand(CommandIDs.terminal, {
      label: 'Open a terminal into a River VPS',
      isVisible: () => model.terminalsSupported,
      execute: async args => {
        const id = String(args.id);
        let name: string;
        try {
          name = await api.vpsTerminal(id);
        } catch (error) {
          if (error instanceof RiverAPIError && error.status === 404) {
            model.terminalsSupported = false;
            await model.refresh();
          }
          await showErrorMessage('Could not open a terminal', error as Error);
          return;
        }
        await commands.execute('terminal:open', { name });
      }
    });

    // `/lab?river-terminal=ID`: the link the dashboard widget and `%river vps terminal`
    // show (a kernel cannot open a tab; a link opens JupyterLab, which opens the terminal).
    commands.addCommand(CommandIDs.terminalFromUrl, {
      execute: async args => {
        const search = (args as IRouter.ILocation).search ?? '';
        const id = new URLSearchParams(search).get(TERMINAL_PARAMETER);
        if (id) {
          await app.restored;
          await commands.execute(CommandIDs.terminal, { id });
        }
      }
    });
    router?.register({
      command: CommandIDs.terminalFromUrl,
      pattern: new RegExp(`[?&]${TERMINAL_PARAMETER}=`),
      rank: 100
    });

    commands.addCommand(CommandIDs.jupyter, {
      label: 'Start Jupyter in a River VPS',
      execute: async args => {
        const id = String(args.id);
        // Opened now, while the click still counts as the user's: a window opened after
        // the app is up would be a popup to block.
        const win = window.open('', '_blank');
        try {
          const vps = await api.startApp(id, 'jupyter');
          model.updateVps(vps);
          const port = (vps.ports ?? []).find(p => p.name === 'jupyter');
          if (!port?.path || !port.ready_path) {
            throw new Error('the host did not record the Jupyter it started');
          }
          await api.waitReady(port.ready_path);
          if (win) {
            win.location.href = api.pageUrl(port.path);
          }
        } catch (error) {
          win?.close();
          await showErrorMessage('Could not start Jupyter', error as Error);
        }
      }
    });

    palette?.addItem({ command: CommandIDs.openPanel, category: 'River' });
    registerForms(
      app,
      model,
      {
        icon: riverIcon,
        openLogs: task =>
          void commands.execute(CommandIDs.logs, { id: task.id }),
        terminal: vps =>
          void commands.execute(CommandIDs.terminal, { id: vps.id })
      },
      palette,
      launcher
    );
    void registerAdmin(app, api, riverIcon, palette, launcher);

    if (statusBar) {
      statusBar.registerStatusItem('jupyter-river-labextension:status', {
        item: new RiverStatus(model, () => shell.activateById(panel.id)),
        align: 'left',
        rank: 50,
        isActive: () => true
      });
    }

    if (launcher) {
      const entries = new Map<string, IDisposable>();
      const sync = () => {
        const wanted = new Map<
          string,
          { vps: IVps; port: number; path?: string; label: string }
        >();
        for (const vps of model.vps ?? []) {
          if (vps.state !== 'running') {
            continue;
          }
          for (const port of vps.ports ?? []) {
            const service = LAUNCHER_SERVICES[(port.name ?? '').toLowerCase()];
            if (service) {
              wanted.set(`${vps.id}:${port.port}`, {
                vps,
                port: port.port,
                path: port.path,
                label: `${service} on ${vps.name || vps.id}`
              });
            }
          }
        }
        for (const [key, entry] of entries) {
          if (!wanted.has(key)) {
            entry.dispose();
            entries.delete(key);
          }
        }
        for (const [key, item] of wanted) {
          if (!entries.has(key)) {
            entries.set(
              key,
              launcher.add({
                command: CommandIDs.openPort,
                args: {
                  id: item.vps.id,
                  port: item.port,
                  label: item.label,
                  ...(item.path ? { path: item.path } : {})
                },
                category: 'River',
                rank: 1
              })
            );
          }
        }
      };
      model.changed.connect(sync);
    }
  }
};

export default plugin;
