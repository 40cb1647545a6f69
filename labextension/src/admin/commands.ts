/**
 * The admin page's command, registered only when the signed-in user is an operator or an
 * admin: a user or viewer has no command, palette item or launcher card for it (and the
 * host answers their calls to the admin routes with 403 anyway).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';

import { RiverAPI } from '../api';
import { AdminPage, Role } from './page';

export const ADMIN_COMMAND = 'river:admin';

export async function registerAdmin(
  app: JupyterFrontEnd,
  api: RiverAPI,
  icon: LabIcon,
  palette: ICommandPalette | null,
  launcher: ILauncher | null
): Promise<void> {
  let role: Role;
  try {
    role = (await api.request<{ user: { role: Role } }>('me')).user.role;
  } catch {
    return; // no River API, or not signed in: nothing to administer
  }
  if (role !== 'operator' && role !== 'admin') {
    return;
  }
  const { commands, shell } = app;
  commands.addCommand(ADMIN_COMMAND, {
    label: args => (args.isLauncher ? 'Admin' : 'River admin'),
    caption: 'Approvals, users, tokens, invitations, groups and runners',
    icon: args => (args.isLauncher ? icon : undefined),
    execute: () => {
      const open = Array.from(shell.widgets('main')).find(
        w => w.id === 'river-admin'
      );
      if (open) {
        void (open as AdminPage).refresh();
        shell.activateById(open.id);
        return;
      }
      const page = new AdminPage(api, role);
      page.title.icon = icon;
      shell.add(page, 'main');
      shell.activateById(page.id);
    }
  });
  palette?.addItem({ command: ADMIN_COMMAND, category: 'River' });
  launcher?.add({
    command: ADMIN_COMMAND,
    args: { isLauncher: true },
    category: 'River',
    rank: 10
  });
}
