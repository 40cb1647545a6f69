/**
 * Multi-node jobs in the panel: the members of a job (tasks whose `job` names the same id)
 * are shown as one row, as `%river tasks` and the dashboard widget do
 * (river_magics/display.py fold_jobs, job_state): kept here, apart from drawing, so the
 * rule that makes one state out of N is in one place.
 */
import { ITask, isTerminal } from './api';

/** One job as the panel shows it: its members in rank order. */
export interface IJobRow {
  id: string;
  size: number;
  members: ITask[];
  state: string;
}

/** A row of a task list: a task of its own, or a job standing for its members. */
export type Row = { task: ITask } | { job: IJobRow };

const ENDERS = ['failed', 'killed_oom', 'lost', 'killed', 'timeout'];

/**
 * One state for a job: how it ended once every member has (the state of the member that
 * ended it, else completed), running while any member runs, else rank 0's (queued ...).
 */
export function jobState(members: ITask[]): string {
  const states = members.map(m => m.state as string);
  if (states.every(s => isTerminal(s))) {
    return ENDERS.find(s => states.includes(s)) ?? 'completed';
  }
  if (states.includes('running')) {
    return 'running';
  }
  return states[0];
}

/** The tasks with each job's members folded into one row, at its first member's place. */
export function foldJobs(tasks: ITask[]): Row[] {
  const groups = new Map<string, ITask[]>();
  for (const task of tasks) {
    if (task.job) {
      const group = groups.get(task.job.id) ?? [];
      group.push(task);
      groups.set(task.job.id, group);
    }
  }
  const rows: Row[] = [];
  for (const task of tasks) {
    if (!task.job) {
      rows.push({ task });
      continue;
    }
    const members = groups.get(task.job.id);
    if (!members) {
      continue; // already shown
    }
    groups.delete(task.job.id);
    members.sort((a, b) => (a.job?.rank ?? 0) - (b.job?.rank ?? 0));
    rows.push({
      job: {
        id: task.job.id,
        size: task.job.size,
        members,
        state: jobState(members)
      }
    });
  }
  return rows;
}

/** A member to send the kill to: killing any member ends the whole job (jobs.py). */
export function liveMember(job: IJobRow): ITask | undefined {
  return job.members.find(m => !isTerminal(m.state));
}
