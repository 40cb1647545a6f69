/**
 * The VPS form: a container, or a QEMU VM when some online node reports `vm.ok` (the choice
 * is only offered then), with resources, SSH key mode and a time limit. The body is the
 * host's `VpsCreate`; a generated private key is shown once, as the host returns it once.
 */
import { INode, IVps, RiverAPI, Schemas } from '../api';
import { h } from '../panel';
import { IFormResult, RiverForm, optionalText } from './form';
import { resourceFields, timeLimit } from './fields';

export type VpsCreate = Schemas['VpsCreate'];

export function vpsBody(values: Record<string, string>): VpsCreate {
  const body: VpsCreate = {};
  if (values.kind === 'vm') {
    body.vm = true;
    const disk = optionalText(values, 'disk');
    if (disk) {
      body.disk = disk;
    }
  } else {
    const image = optionalText(values, 'image');
    if (image) {
      body.image = image;
    }
  }
  Object.assign(body, resourceFields(values));
  const ssh = values.ssh as VpsCreate['ssh'];
  if (ssh && ssh !== 'disabled') {
    body.ssh = ssh;
  }
  const key = optionalText(values, 'public_key');
  if (ssh === 'upload' && key) {
    body.public_key = key;
  }
  const limit = timeLimit(values);
  if (limit !== undefined) {
    body.time_limit = limit;
  }
  return body;
}

export interface IVpsFormOptions {
  api: RiverAPI;
  nodes: INode[];
  onCreated: (vps: IVps) => void;
  terminal: (vps: IVps) => void;
}

export function createVpsForm(o: IVpsFormOptions): RiverForm {
  const vmNodes = o.nodes.filter(n => n.state === 'online' && n.vm?.ok);
  const kinds: Array<[string, string]> = [['container', 'Container']];
  if (vmNodes.length) {
    kinds.push([
      'vm',
      `Virtual machine (${vmNodes.map(n => n.name).join(', ')})`
    ]);
  }
  const form = new RiverForm({
    id: 'river-vps-form',
    title: 'Create a River VPS',
    intro: vmNodes.length
      ? 'A long-lived container or virtual machine with a terminal and optional SSH.'
      : 'A long-lived container with a terminal and optional SSH (no node offers VMs now).',
    submitLabel: 'Create VPS',
    fields: [
      {
        name: 'kind',
        label: 'Kind',
        kind: 'select',
        options: kinds,
        aliases: ['vm', 'backend']
      },
      { name: 'name', label: 'Name', placeholder: 'optional' },
      { name: 'image', label: 'Image', placeholder: "the runner's default" },
      { name: 'disk', label: 'Disk (VM)', placeholder: '8G' },
      { name: 'cores', label: 'Cores', kind: 'number', value: '1' },
      { name: 'memory', label: 'Memory', placeholder: 'e.g. 2G' },
      { name: 'gpus', label: 'GPUs', kind: 'number', placeholder: '0' },
      {
        name: 'ssh',
        label: 'SSH',
        kind: 'select',
        options: [
          ['disabled', 'No SSH'],
          ['none', 'SSH without a key'],
          ['upload', 'SSH with my public key'],
          ['generate', 'SSH with a new key pair']
        ]
      },
      {
        name: 'public_key',
        label: 'Public key',
        kind: 'textarea',
        placeholder: 'ssh-ed25519 AAAA...'
      },
      { name: 'time_limit', label: 'Time limit', placeholder: 'e.g. 8h' },
      {
        name: 'target',
        label: 'Node',
        placeholder: 'any (or node[:numa][::gpu,gpu])'
      }
    ],
    onSubmit: async values => {
      const init = { method: 'POST', body: JSON.stringify(vpsBody(values)) };
      const answer = await o.api.request<{ vps: IVps; private_key?: string }>(
        'vps',
        init
      );
      const vps = answer.vps;
      o.onCreated(vps);
      const result: IFormResult = {
        message: `Created VPS ${vps.name || vps.id} (${vps.id}, ${vps.state}).`,
        actions: [
          {
            label: 'Open terminal',
            action: 'terminal',
            run: () => o.terminal(vps)
          }
        ]
      };
      if (answer.private_key) {
        showPrivateKey(form, answer.private_key);
      }
      return result;
    }
  });
  const sync = () => {
    const v = form.values();
    form.showField('image', v.kind !== 'vm');
    form.showField('disk', v.kind === 'vm');
    form.showField('public_key', v.ssh === 'upload');
  };
  sync();
  form.onChange('kind', sync);
  form.onChange('ssh', sync);
  return form;
}

/** The one showing of a generated private key, selectable to copy. */
function showPrivateKey(form: RiverForm, key: string): void {
  const box = h('textarea', {
    class: 'jp-River-input jp-River-secret',
    readonly: 'true',
    'aria-label': 'Private key (shown once)',
    'data-secret': 'private_key'
  }) as HTMLTextAreaElement;
  box.value = key;
  form.node.append(
    h(
      'div',
      { class: 'jp-River-formRow' },
      h(
        'div',
        { class: 'jp-River-label' },
        'Private key: save it now, it is not shown again'
      ),
      box
    )
  );
}
