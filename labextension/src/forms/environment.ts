/**
 * The environment form: create a host container from an image (`EnvironmentCreate`), or
 * export an existing one to shared storage so tasks can name it. Export can take minutes;
 * the form says so and keeps its place while the host works.
 */
import { RiverAPI, Schemas } from '../api';
import { IFormResult, RiverForm, optionalText } from './form';

export type IEnvironment = Schemas['Environment'];

export interface IEnvironmentFormOptions {
  api: RiverAPI;
  environments: IEnvironment[];
}

export function createEnvironmentForm(o: IEnvironmentFormOptions): RiverForm {
  const form = new RiverForm({
    id: 'river-environment-form',
    title: 'River environments',
    intro:
      'Create a container environment on the host from an image, or export one so tasks ' +
      'can run in it (Environment field of the submit form).',
    submitLabel: 'Go',
    fields: [
      {
        name: 'action',
        label: 'Action',
        kind: 'select',
        options: [
          ['create', 'Create from an image'],
          ['export', 'Export to shared storage']
        ]
      },
      {
        name: 'name',
        label: 'Name',
        placeholder: 'lower-case letters, digits, _ . -',
        suggestions: o.environments.map(e => e.name)
      },
      { name: 'image', label: 'Image', placeholder: 'python:3.12-slim' }
    ],
    onSubmit: async values => {
      const name = optionalText(values, 'name') ?? '';
      if (values.action === 'export') {
        const path = `environments/${encodeURIComponent(name)}/export`;
        const answer = await o.api.request<{ environment: IEnvironment }>(
          path,
          {
            method: 'POST'
          }
        );
        const exported = answer.environment.exported;
        const result: IFormResult = {
          message: `Exported ${name}${exported ? ` to ${exported.path}` : ''}.`
        };
        return result;
      }
      const body: Schemas['EnvironmentCreate'] = {
        name,
        image: optionalText(values, 'image') ?? ''
      };
      const answer = await o.api.request<{ environment: IEnvironment }>(
        'environments',
        {
          method: 'POST',
          body: JSON.stringify(body)
        }
      );
      return { message: `Created environment ${answer.environment.name}.` };
    }
  });
  const sync = (action: string) => form.showField('image', action !== 'export');
  sync(form.values().action);
  form.onChange('action', sync);
  return form;
}
