/**
 * A small form widget the submit, VPS and environment forms share. It exists so that every
 * form behaves the same for the keyboard (labels, tab order, Enter submits, Escape closes)
 * and for errors: the host's 400 names the field it refuses, so the message is shown next
 * to that field and nothing the user typed is cleared.
 */
import { Widget } from '@lumino/widgets';

import { RiverAPIError } from '../api';
import { h } from '../panel';

export type FieldKind = 'text' | 'number' | 'select' | 'textarea' | 'checkbox';

export interface IField {
  /** The request field it fills: also how a 400's message is matched to it. */
  name: string;
  label: string;
  kind?: FieldKind;
  value?: string;
  placeholder?: string;
  help?: string;
  options?: Array<[string, string]>;
  /** Other words a host message may use for this field (`array.size` for `array`). */
  aliases?: string[];
  /** Suggestions for a text field (a datalist). */
  suggestions?: string[];
}

/** What a successful submission shows: a line and optional actions. */
export interface IFormResult {
  message: string;
  actions?: Array<{ label: string; action: string; run: () => void }>;
}

export interface IFormOptions {
  id: string;
  title: string;
  fields: IField[];
  submitLabel: string;
  onSubmit: (values: Record<string, string>) => Promise<IFormResult>;
  /** Shown under the title. */
  intro?: string;
}

let counter = 0;

/** The field a host message is about: the one whose name (or alias) it mentions first. */
export function fieldFor(message: string, fields: IField[]): string | null {
  let best: { name: string; at: number } | null = null;
  for (const field of fields) {
    for (const word of [field.name, ...(field.aliases ?? [])]) {
      const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const match = new RegExp(
        `(^|[^A-Za-z0-9_])${escaped}([^A-Za-z0-9_]|$)`
      ).exec(message);
      if (match && (!best || match.index < best.at)) {
        best = { name: field.name, at: match.index };
      }
    }
  }
  return best?.name ?? null;
}

export class RiverForm extends Widget {
  constructor(readonly options: IFormOptions) {
    super();
    this.id = options.id;
    this.addClass('jp-River-formPage');
    this.title.label = options.title;
    this.title.closable = true;
    this.node.setAttribute('data-river-form', options.id);
    this.build();
  }

  /** The control of a field (input, select or textarea). */
  control(
    name: string
  ): HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement {
    return this.controls.get(name)!;
  }

  /** Current values, as strings ('' for empty; 'true'/'false' for a checkbox). */
  values(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, el] of this.controls) {
      out[name] =
        el instanceof HTMLInputElement && el.type === 'checkbox'
          ? String(el.checked)
          : el.value;
    }
    return out;
  }

  /** Show or hide a field's row (e.g. the script box only for a cell). */
  showField(name: string, shown: boolean): void {
    const row = this.rows.get(name);
    if (row) {
      row.hidden = !shown;
    }
  }

  protected onAfterAttach(): void {
    const first = this.form.querySelector<HTMLElement>(
      'input, select, textarea'
    );
    first?.focus();
  }

  /** Where a subclass or its owner reacts to a field's change. */
  onChange(name: string, handler: (value: string) => void): void {
    this.controls
      .get(name)
      ?.addEventListener('change', () => handler(this.values()[name]));
  }

  private build(): void {
    const o = this.options;
    this.form = h('form', {
      class: 'jp-River-form',
      'aria-label': o.title,
      novalidate: 'true'
    }) as HTMLFormElement;
    this.form.append(h('h2', { class: 'jp-River-formTitle' }, o.title));
    if (o.intro) {
      this.form.append(
        h('p', { class: 'jp-River-dim jp-River-formIntro' }, o.intro)
      );
    }
    for (const field of o.fields) {
      this.form.append(this.row(field));
    }
    this.general = h('div', {
      class: 'jp-River-formError',
      role: 'alert',
      'data-error': '_form'
    });
    this.result = h('div', {
      class: 'jp-River-formResult',
      role: 'status',
      'aria-live': 'polite'
    });
    this.submitButton = h(
      'button',
      {
        type: 'submit',
        class: 'jp-River-button jp-River-primary',
        'data-action': 'submit'
      },
      o.submitLabel
    ) as HTMLButtonElement;
    const cancel = h(
      'button',
      {
        type: 'button',
        class: 'jp-River-button',
        'data-action': 'close',
        onclick: () => this.close()
      },
      'Close'
    );
    this.form.append(
      this.general,
      h('div', { class: 'jp-River-formButtons' }, this.submitButton, cancel),
      this.result
    );
    this.form.addEventListener('submit', event => {
      event.preventDefault();
      void this.submit();
    });
    this.form.addEventListener('keydown', (event: KeyboardEvent) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        this.close();
      } else if (
        event.key === 'Enter' &&
        (event.ctrlKey || event.metaKey) &&
        event.target instanceof HTMLTextAreaElement
      ) {
        event.preventDefault();
        void this.submit();
      }
    });
    this.node.append(this.form);
  }

  private row(field: IField): HTMLElement {
    const id = `jp-River-field-${++counter}`;
    const kind = field.kind ?? 'text';
    let control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
    if (kind === 'select') {
      control = document.createElement('select');
      for (const [value, label] of field.options ?? []) {
        control.append(h('option', { value }, label));
      }
    } else if (kind === 'textarea') {
      control = document.createElement('textarea');
      control.rows = 8;
    } else {
      control = document.createElement('input');
      control.type = kind === 'checkbox' ? 'checkbox' : 'text';
      if (kind === 'number') {
        control.inputMode = 'numeric';
      }
    }
    control.id = id;
    control.name = field.name;
    control.className = 'jp-River-input';
    control.setAttribute('data-field', field.name);
    if (field.placeholder && !(control instanceof HTMLSelectElement)) {
      control.placeholder = field.placeholder;
    }
    if (field.value !== undefined) {
      if (control instanceof HTMLInputElement && control.type === 'checkbox') {
        control.checked = field.value === 'true';
      } else {
        control.value = field.value;
      }
    }
    const error = h('div', {
      class: 'jp-River-fieldError',
      id: `${id}-error`,
      'data-error': field.name,
      'aria-live': 'polite'
    });
    control.setAttribute(
      'aria-describedby',
      `${id}-error${field.help ? ` ${id}-help` : ''}`
    );
    const row = h(
      'div',
      { class: 'jp-River-formRow', 'data-row': field.name },
      h('label', { for: id, class: 'jp-River-label' }, field.label),
      control,
      field.help
        ? h(
            'div',
            { class: 'jp-River-dim jp-River-help', id: `${id}-help` },
            field.help
          )
        : null,
      error
    );
    if (field.suggestions?.length && control instanceof HTMLInputElement) {
      const list = h('datalist', { id: `${id}-list` });
      for (const item of field.suggestions) {
        list.append(h('option', { value: item }));
      }
      control.setAttribute('list', `${id}-list`);
      row.append(list);
    }
    this.controls.set(field.name, control);
    this.errors.set(field.name, error);
    this.rows.set(field.name, row);
    return row;
  }

  private clearErrors(): void {
    for (const [name, error] of this.errors) {
      error.textContent = '';
      this.controls.get(name)?.removeAttribute('aria-invalid');
    }
    this.general.textContent = '';
  }

  /** Send the form; on an error show it by its field and keep every value. */
  async submit(): Promise<void> {
    if (this.busy) {
      return;
    }
    this.busy = true;
    this.submitButton.disabled = true;
    this.clearErrors();
    this.result.textContent = '';
    this.node.setAttribute('data-state', 'sending');
    try {
      const result = await this.options.onSubmit(this.values());
      this.result.append(h('span', { 'data-result': 'ok' }, result.message));
      for (const action of result.actions ?? []) {
        this.result.append(
          h(
            'button',
            {
              type: 'button',
              class: 'jp-River-button',
              'data-action': action.action,
              onclick: () => action.run()
            },
            action.label
          )
        );
      }
      this.node.setAttribute('data-state', 'done');
    } catch (error) {
      this.showError(error);
      this.node.setAttribute('data-state', 'error');
    } finally {
      this.busy = false;
      this.submitButton.disabled = false;
    }
  }

  /** Put an error next to the field it names (or above the buttons). */
  showError(error: unknown): void {
    const message =
      error instanceof RiverAPIError || error instanceof Error
        ? error.message
        : String(error);
    const name =
      error instanceof FieldError
        ? error.field
        : fieldFor(message, this.options.fields);
    const slot = name ? this.errors.get(name) : undefined;
    if (slot && name) {
      slot.textContent = message;
      const control = this.controls.get(name)!;
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    } else {
      this.general.textContent = message;
    }
  }

  private form!: HTMLFormElement;
  private general!: HTMLElement;
  private result!: HTMLElement;
  private submitButton!: HTMLButtonElement;
  private busy = false;
  private readonly controls = new Map<
    string,
    HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement
  >();
  private readonly errors = new Map<string, HTMLElement>();
  private readonly rows = new Map<string, HTMLElement>();
}

/** An error the form itself finds before asking the host (a field that is not a number). */
export class FieldError extends Error {
  constructor(
    readonly field: string,
    message: string
  ) {
    super(message);
  }
}

/** '' → undefined; otherwise an integer, or a FieldError naming the field. */
export function optionalInt(
  values: Record<string, string>,
  name: string
): number | undefined {
  const text = values[name]?.trim() ?? '';
  if (!text) {
    return undefined;
  }
  if (!/^-?\d+$/.test(text)) {
    throw new FieldError(name, `${name} must be a whole number, not '${text}'`);
  }
  return Number(text);
}

/** '' → undefined; otherwise the trimmed text. */
export function optionalText(
  values: Record<string, string>,
  name: string
): string | undefined {
  const text = values[name]?.trim() ?? '';
  return text || undefined;
}
