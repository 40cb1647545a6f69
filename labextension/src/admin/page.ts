/**
 * The admin page: pending approvals, users and roles, tokens, invitations, groups and
 * quotas, and the runners. It is only opened for operators and admins (admin/commands.ts),
 * but the host is what enforces roles: every action here is an ordinary API call that a
 * lower role gets 403 for, and a section the caller's role cannot read says so in place.
 * Each section loads and fails on its own, so one refused read does not blank the page.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { INode, ITask, RiverAPI, Schemas } from '../api';
import { formatDuration } from '../limits';
import { formatBytes, h } from '../panel';

export type IUser = Schemas['User'];
export type IToken = Schemas['Token'];
export type IInvitation = Schemas['Invitation'];
export type IGroup = Schemas['Group'];
export type Role = IUser['role'];

export const ROLES: Role[] = ['viewer', 'user', 'operator', 'admin'];

/** Seconds since `at` (epoch seconds), written as `3m`, `2d4h`. */
function age(at: number | null | undefined): string {
  return at ? formatDuration(Date.now() / 1000 - at) : '—';
}

function button(
  label: string,
  action: string,
  run: () => void,
  title = label
): HTMLElement {
  return h(
    'button',
    {
      type: 'button',
      class: 'jp-River-button',
      'data-action': action,
      title,
      onclick: () => run()
    },
    label
  );
}

function table(headers: string[], rows: HTMLElement[]): HTMLElement {
  const head = h(
    'tr',
    {},
    ...headers.map(name => h('th', { scope: 'col' }, name))
  );
  return h(
    'table',
    { class: 'jp-River-table' },
    h('thead', {}, head),
    h('tbody', {}, ...rows)
  );
}

function cell(...children: Array<Node | string | null>): HTMLElement {
  return h('td', {}, ...children);
}

function labelled(label: string, control: HTMLElement): HTMLElement {
  const id = `jp-River-admin-${++counter}`;
  control.id = id;
  return h('span', {}, h('label', { for: id }, label), ' ', control);
}

function input(name: string, value = '', placeholder = ''): HTMLInputElement {
  const el = h('input', {
    class: 'jp-River-input',
    'data-field': name,
    placeholder
  }) as HTMLInputElement;
  el.value = value;
  return el;
}

function select(
  name: string,
  options: string[],
  value: string
): HTMLSelectElement {
  const el = h('select', {
    class: 'jp-River-input',
    'data-field': name
  }) as HTMLSelectElement;
  for (const option of options) {
    el.append(h('option', { value: option }, option));
  }
  el.value = value;
  return el;
}

let counter = 0;

type Section =
  'approvals' | 'users' | 'tokens' | 'invitations' | 'groups' | 'nodes';

export class AdminPage extends Widget {
  constructor(
    private readonly api: RiverAPI,
    private readonly role: Role
  ) {
    super();
    this.id = 'river-admin';
    this.addClass('jp-River-adminPage');
    this.title.label = 'River admin';
    this.title.closable = true;
    this.node.tabIndex = -1;
    this.node.append(
      h(
        'div',
        { class: 'jp-River-inline' },
        h('h2', { class: 'jp-River-adminTitle' }, 'River admin'),
        h('span', { class: 'jp-River-dim' }, `signed in as ${role}`),
        button('Refresh', 'refresh', () => void this.refresh())
      )
    );
    for (const [key, title] of [
      ['approvals', 'Pending approvals'],
      ['users', 'Users and roles'],
      ['tokens', 'API tokens'],
      ['invitations', 'Invitations'],
      ['groups', 'Groups and quotas'],
      ['nodes', 'Runners']
    ] as Array<[Section, string]>) {
      const body = h('div', { class: 'jp-River-sectionBody' });
      const error = h('div', {
        class: 'jp-River-formError',
        role: 'alert',
        'data-error': key
      });
      this.node.append(
        h(
          'section',
          {
            class: 'jp-River-adminSection',
            'data-admin': key,
            'aria-label': title
          },
          h('h3', {}, title),
          error,
          body
        )
      );
      this.bodies.set(key, body);
      this.errors.set(key, error);
    }
    this.node.addEventListener('keydown', (event: KeyboardEvent) => {
      if (event.key === 'Escape' && event.target === this.node) {
        this.close();
      }
    });
    void this.refresh();
  }

  get isAdmin(): boolean {
    return this.role === 'admin';
  }

  /** Re-read every section (each on its own). */
  async refresh(): Promise<void> {
    await Promise.all([
      this.load('approvals', () => this.approvals()),
      this.load('users', () => this.users()),
      this.load('tokens', () => this.tokens()),
      this.load('invitations', () => this.invitations()),
      this.load('groups', () => this.groups()),
      this.load('nodes', () => this.nodes())
    ]);
    this.node.setAttribute('data-loaded', 'true');
  }

  private async load(
    key: Section,
    draw: () => Promise<HTMLElement[]>
  ): Promise<void> {
    try {
      const children = await draw();
      this.bodies.get(key)!.replaceChildren(...children);
      this.errors.get(key)!.textContent = '';
    } catch (error) {
      this.errors.get(key)!.textContent = (error as Error).message;
    }
  }

  /** Run an action; its refusal goes into the section's error line; then re-read. */
  private async act(key: Section, run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
      this.errors.get(key)!.textContent = '';
    } catch (error) {
      this.errors.get(key)!.textContent = (error as Error).message;
      return;
    }
    await this.refresh();
  }

  private post(
    path: string,
    body?: unknown,
    method = 'POST'
  ): Promise<unknown> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    return this.api.request(path, init);
  }

  private async approvals(): Promise<HTMLElement[]> {
    const tasks = (
      await this.api.request<{ tasks: ITask[] }>(
        'tasks',
        {},
        {
          all: '1',
          state: 'pending_approval'
        }
      )
    ).tasks;
    if (!tasks.length) {
      return [h('p', { class: 'jp-River-dim' }, 'No task waits for approval.')];
    }
    const rows = tasks.map(task => {
      const reason = input('reason', '', 'reason (optional)');
      reason.setAttribute('aria-label', `Reason for ${task.id}`);
      const path = `tasks/${encodeURIComponent(task.id)}`;
      const decide = (verb: 'approve' | 'reject') => {
        const body: Schemas['TaskDecision'] = {
          reason: reason.value.trim() || null
        };
        void this.act('approvals', () => this.post(`${path}/${verb}`, body));
      };
      reason.addEventListener('keydown', (event: KeyboardEvent) => {
        if (event.key === 'Enter') {
          decide('approve');
        }
      });
      return h(
        'tr',
        { 'data-task-id': task.id },
        cell(task.id),
        cell(task.name || ''),
        cell(task.owner),
        cell(
          `${task.request.cores} cores${task.request.gpus ? `, ${task.request.gpus} GPUs` : ''}`
        ),
        cell(reason),
        cell(
          button('Approve', 'approve', () => decide('approve')),
          ' ',
          button('Reject', 'reject', () => decide('reject'))
        )
      );
    });
    return [table(['task', 'name', 'owner', 'asks for', 'reason', ''], rows)];
  }

  private async users(): Promise<HTMLElement[]> {
    const users = (await this.api.request<{ users: IUser[] }>('users')).users;
    const rows = users.map(user => {
      const role = select('role', ROLES, user.role);
      role.setAttribute('aria-label', `Role of ${user.name}`);
      role.disabled = !this.isAdmin;
      const path = `users/${encodeURIComponent(user.name)}`;
      role.addEventListener('change', () => {
        const body: Schemas['UserUpdate'] = { role: role.value as Role };
        void this.act('users', () => this.post(path, body, 'PATCH'));
      });
      const quota = user.quota as {
        max_cores?: number | null;
        max_gpus?: number | null;
      };
      return h(
        'tr',
        { 'data-user': user.name },
        cell(user.name),
        cell(role),
        cell(user.groups.join(', ')),
        cell(`${quota.max_cores ?? '∞'} cores, ${quota.max_gpus ?? '∞'} GPUs`),
        cell(age(user.created_at)),
        cell(
          this.isAdmin
            ? button('Delete', 'delete-user', () => {
                if (
                  window.confirm(
                    `Delete ${user.name}? Their tasks end and tokens stop.`
                  )
                ) {
                  void this.act('users', () =>
                    this.post(path, undefined, 'DELETE')
                  );
                }
              })
            : null
        )
      );
    });
    return [table(['name', 'role', 'groups', 'quota', 'age', ''], rows)];
  }

  private async tokens(): Promise<HTMLElement[]> {
    const query: Record<string, string> = this.isAdmin ? { all: '1' } : {};
    const tokens = (
      await this.api.request<{ tokens: IToken[] }>('tokens', {}, query)
    ).tokens;
    const rows = tokens.map(token =>
      h(
        'tr',
        { 'data-token-id': token.id, 'data-active': String(token.active) },
        cell(token.id),
        cell(token.user),
        cell(token.label),
        cell(age(token.created_at)),
        cell(
          token.active
            ? token.expires_at
              ? `expires in ${formatDuration(token.expires_at - Date.now() / 1000)}`
              : 'active'
            : token.revoked
              ? 'revoked'
              : 'expired'
        ),
        cell(
          token.active
            ? button(
                'Revoke',
                'revoke-token',
                () =>
                  void this.act('tokens', () =>
                    this.post(
                      `tokens/${encodeURIComponent(token.id)}`,
                      undefined,
                      'DELETE'
                    )
                  )
              )
            : null
        )
      )
    );
    return [table(['id', 'user', 'label', 'age', 'state', ''], rows)];
  }

  private async invitations(): Promise<HTMLElement[]> {
    const list = (
      await this.api.request<{ invitations: IInvitation[] }>('invitations')
    ).invitations;
    const roles = this.isAdmin ? ROLES : (['viewer', 'user'] as Role[]);
    const role = select('invite-role', roles, 'user');
    const uses = input('invite-uses', '1');
    const expires = input('invite-expires', '7', 'days');
    const create = () =>
      void this.act('invitations', async () => {
        const days = Number(expires.value || '7');
        const body: Schemas['InvitationCreate'] = {
          role: role.value as Role,
          uses: Number(uses.value || '1'),
          expires_in: Number.isFinite(days) ? days * 86400 : undefined
        };
        const answer = (await this.post('invitations', body)) as {
          code: string;
        };
        this.lastCode = answer.code;
      });
    const form = h(
      'div',
      { class: 'jp-River-inline', 'data-form': 'invitation' },
      labelled('Role', role),
      labelled('Uses', uses),
      labelled('Expires in (days)', expires),
      button('Create invitation', 'create-invitation', create)
    );
    const out: HTMLElement[] = [form];
    if (this.lastCode) {
      out.push(this.codeBox(this.lastCode));
    }
    const rows = list.map(item =>
      h(
        'tr',
        { 'data-invitation-id': item.id, 'data-active': String(item.active) },
        cell(item.id),
        cell(item.role),
        cell(`${item.uses}/${item.max_uses}`),
        cell(item.created_by),
        cell(
          item.active ? 'active' : item.revoked ? 'revoked' : 'used or expired'
        ),
        cell(
          item.active
            ? button(
                'Revoke',
                'revoke-invitation',
                () =>
                  void this.act('invitations', () =>
                    this.post(
                      `invitations/${encodeURIComponent(item.id)}`,
                      undefined,
                      'DELETE'
                    )
                  )
              )
            : null
        )
      )
    );
    out.push(table(['id', 'role', 'used', 'by', 'state', ''], rows));
    return out;
  }

  /**
   * The new code, shown once, with a link to copy: River's sign-up page with the code,
   * where whoever has it picks a name and password and lands in the lab (docs/security.md).
   */
  private codeBox(code: string): HTMLElement {
    const link = new URL(
      `${this.api.pageUrl('river/join')}?code=${encodeURIComponent(code)}`,
      window.location.href
    ).href;
    return h(
      'div',
      { class: 'jp-River-inline', 'data-invitation-code': code },
      h('span', {}, 'New invitation (shown once):'),
      h('code', { class: 'jp-River-link', 'data-link': link }, link),
      button('Copy link', 'copy-link', () => Clipboard.copyToSystem(link))
    );
  }

  private async groups(): Promise<HTMLElement[]> {
    const groups = (await this.api.request<{ groups: IGroup[] }>('groups'))
      .groups;
    const out: HTMLElement[] = [];
    if (this.isAdmin) {
      const name = input('group-name', '', 'name');
      const cores = input('group-cores', '', 'no limit');
      const gpus = input('group-gpus', '', 'no limit');
      const create = () => {
        const body: Schemas['GroupCreate'] = {
          name: name.value.trim(),
          max_cores: cores.value ? Number(cores.value) : null,
          max_gpus: gpus.value ? Number(gpus.value) : null
        };
        void this.act('groups', () => this.post('groups', body));
      };
      out.push(
        h(
          'div',
          { class: 'jp-River-inline', 'data-form': 'group' },
          labelled('Group', name),
          labelled('Max cores', cores),
          labelled('Max GPUs', gpus),
          button('Create group', 'create-group', create)
        )
      );
    }
    const rows = groups.map(group => {
      const path = `groups/${encodeURIComponent(group.name)}`;
      const cores = input(
        'max_cores',
        group.max_cores?.toString() ?? '',
        'no limit'
      );
      const gpus = input(
        'max_gpus',
        group.max_gpus?.toString() ?? '',
        'no limit'
      );
      cores.setAttribute('aria-label', `Max cores of ${group.name}`);
      gpus.setAttribute('aria-label', `Max GPUs of ${group.name}`);
      cores.disabled = gpus.disabled = !this.isAdmin;
      const member = input('member', '', 'user name');
      member.setAttribute('aria-label', `Add a member to ${group.name}`);
      return h(
        'tr',
        { 'data-group': group.name },
        cell(group.name),
        cell(cores),
        cell(gpus),
        cell(group.members.join(', ')),
        cell(
          this.isAdmin
            ? h(
                'span',
                { class: 'jp-River-inline' },
                button('Save quota', 'save-quota', () => {
                  const body: Schemas['GroupUpdate'] = {
                    max_cores: cores.value ? Number(cores.value) : null,
                    max_gpus: gpus.value ? Number(gpus.value) : null
                  };
                  void this.act('groups', () => this.post(path, body, 'PATCH'));
                }),
                member,
                button(
                  'Add member',
                  'add-member',
                  () =>
                    void this.act('groups', () =>
                      this.post(
                        `${path}/members/${encodeURIComponent(member.value.trim())}`,
                        undefined,
                        'PUT'
                      )
                    )
                )
              )
            : null
        )
      );
    });
    out.push(table(['group', 'max cores', 'max GPUs', 'members', ''], rows));
    return out;
  }

  private async nodes(): Promise<HTMLElement[]> {
    const nodes = (await this.api.request<{ nodes: INode[] }>('nodes')).nodes;
    const rows = nodes.map(node =>
      h(
        'tr',
        { 'data-node': node.name, 'data-state': node.state },
        cell(node.name),
        cell(node.state),
        cell(node.backend),
        cell(node.url),
        cell(
          `${node.cores} cores, ${formatBytes(node.memory)}, ${node.gpus.length} GPUs`
        ),
        cell(node.vm?.ok ? `yes (${node.vm.accel})` : 'no'),
        cell(node.version ?? '-'),
        cell(`${age(node.last_seen)} ago`),
        cell(age(node.registered_at))
      )
    );
    return [
      table(
        [
          'runner',
          'state',
          'backend',
          'url',
          'size',
          'VMs',
          'version',
          'last seen',
          'credential age'
        ],
        rows
      )
    ];
  }

  private lastCode = '';
  private readonly bodies = new Map<Section, HTMLElement>();
  private readonly errors = new Map<Section, HTMLElement>();
}
