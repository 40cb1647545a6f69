/**
 * Time limits in the panel (issue #20): what a running task has left, written the way
 * users write limits (`1h20m`, `45s`), as river_runner/durations.py format_duration and
 * `%river tasks` show it. Apart from drawing so the arithmetic is one small function.
 */
import { ITask } from './api';

/** `2h`, `1h30m`, `45s`, `1d2h`: at most the two largest units. */
export function formatDuration(seconds: number): string {
  let left = Math.max(0, Math.round(seconds));
  if (left === 0) {
    return '0s';
  }
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1]
  ] as const) {
    const count = Math.floor(left / size);
    left -= count * size;
    if (count) {
      parts.push(`${count}${unit}`);
    }
  }
  return parts.slice(0, 2).join('');
}

/** Seconds a started task with a limit has left; null without a limit or a start. */
export function timeLeft(task: ITask, nowMs: number = Date.now()): number | null {
  const limit = task.time_limit;
  const started = task.started_at;
  if (limit == null || started == null) {
    return null;
  }
  return Math.max(0, started + limit - nowMs / 1000);
}

/** ` · 1h20m left` for a running or paused task with a limit, else ''. */
export function timeLeftText(task: ITask, nowMs: number = Date.now()): string {
  if (task.state !== 'running' && task.state !== 'paused') {
    return '';
  }
  const left = timeLeft(task, nowMs);
  return left == null ? '' : ` · ${formatDuration(left)} left`;
}
