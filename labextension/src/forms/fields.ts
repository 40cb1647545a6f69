/**
 * Form fields more than one form sends the same way. The submit and VPS forms both ask for
 * a name, resources, a placement target and a time limit, and the host reads them alike
 * (`TaskSubmit`, `VpsCreate`); reading them here once keeps the two forms from drifting.
 */
import { optionalInt, optionalText } from './form';

/** The resource fields a task and a VPS share; an empty field is left out. */
export interface IResourceFields {
  name?: string;
  cores?: number;
  memory?: string;
  target?: string;
  gpus?: number;
}

/** The filled-in name, cores, memory, target and GPUs of VALUES. */
export function resourceFields(
  values: Record<string, string>
): IResourceFields {
  const fields: IResourceFields = {};
  const name = optionalText(values, 'name');
  if (name) {
    fields.name = name;
  }
  const cores = optionalInt(values, 'cores');
  if (cores !== undefined) {
    fields.cores = cores;
  }
  const memory = optionalText(values, 'memory');
  if (memory) {
    fields.memory = memory;
  }
  const target = optionalText(values, 'target');
  if (target) {
    fields.target = target;
  }
  const gpus = optionalInt(values, 'gpus');
  if (gpus !== undefined) {
    fields.gpus = gpus;
  }
  return fields;
}

/**
 * The `time_limit` field: seconds as a number, `90m`/`2h` as text (the host parses both),
 * or undefined when empty.
 */
export function timeLimit(
  values: Record<string, string>
): number | string | undefined {
  const limit = optionalText(values, 'time_limit');
  if (!limit) {
    return undefined;
  }
  return /^\d+(\.\d+)?$/.test(limit) ? Number(limit) : limit;
}
