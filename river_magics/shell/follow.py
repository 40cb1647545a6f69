"""`river run` and `river logs -f`: stream a task's lines to this terminal and turn its end
into an exit code, as `srun` does. Ctrl+C kills the task, as interrupting a notebook cell
does, and says how it ended.

Lines go through the notebook's own printer (river_magics/launch.py `write_line`): stdout
lines to stdout, stderr lines to stderr, progress-bar redraws folded as a terminal would.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from river_runner.loglines import LineRenderer
from river_runner.protocol import EVENT_LOG

from ..client import Client, TaskGroup, TaskHandle, is_terminal
from ..display import status_text
from ..errors import RiverError
from ..launch import KILL_WAIT, write_line

INTERRUPTED = 130  # what a shell reports for a command ended by SIGINT
KILLED = 137  # 128 + SIGKILL, as a shell reports for a killed job
TIMED_OUT = 124  # what coreutils' timeout(1) exits with when the limit ended the command


def exit_code(task: Mapping[str, Any] | None) -> int:
    """The shell exit status for a finished task: its own exit code when it has one."""
    if not task:
        return 1
    state, code = task.get("state"), task.get("exit_code")
    if state == "completed":
        return int(code or 0)
    if state in ("killed", "killed_oom"):
        return KILLED
    if state == "timeout":  # whatever its own code after SIGTERM: the limit ended it
        return TIMED_OUT
    if isinstance(code, int) and code > 0:
        return min(code, 255)
    return 1


def note(text: str) -> None:
    """River's own messages go to stderr, so stdout carries only the task's output."""
    print(f"river: {text}", file=sys.stderr, flush=True)


def follow(client: Client, handles: list[TaskHandle], labels: list[str] | None = None) -> int:
    """Print the tasks' lines until all end (prefixed by label when several); the worst
    exit code. Ctrl+C kills them all and waits (at most KILL_WAIT s) to say how they ended."""
    prefixes = dict(zip([h.id for h in handles], [f"[{x}] " for x in labels or []], strict=False))
    renderer = LineRenderer()
    seqs: dict[str, int] = {}
    try:
        _stream(client, handles, prefixes, renderer, seqs, None)
    except KeyboardInterrupt:
        return _cancel(client, handles, prefixes, renderer, seqs)
    for handle in handles:
        if len(handles) > 1 or (handle.last or {}).get("state") != "completed":
            note(f"task {handle.id} {status_text(handle.last or {})}")
    return max(exit_code(h.last) for h in handles)


def _stream(
    client: Client,
    handles: list[TaskHandle],
    prefixes: dict[str, str],
    renderer: LineRenderer,
    seqs: dict[str, int],
    timeout: float | None,
) -> None:
    for kind, data in client.watch(handles, since=seqs, timeout=timeout):
        if kind == EVENT_LOG:
            ident = str(data.get("task_id"))
            seqs[ident] = max(seqs.get(ident, 0), int(data.get("seq", 0)))
            write_line(data, prefix=prefixes.get(ident, ""), renderer=renderer)


def _cancel(
    client: Client,
    handles: list[TaskHandle],
    prefixes: dict[str, str],
    renderer: LineRenderer,
    seqs: dict[str, int],
) -> int:
    try:
        TaskGroup(client, handles).kill()
        _stream(client, handles, prefixes, renderer, seqs, KILL_WAIT)
    except (KeyboardInterrupt, TimeoutError):
        pass
    except RiverError as exc:
        note(f"interrupted: could not kill {_which(handles)}: {exc}")
        return INTERRUPTED
    states = [(h.last or {}).get("state") for h in handles]
    if all(s == "killed" for s in states):
        note(f"interrupted: {_which(handles)} killed")
    elif all(is_terminal(s) for s in states):
        note(f"interrupted: {_which(handles)} ended ({', '.join(map(str, states))})")
    else:
        note(f"interrupted: kill requested for {_which(handles)}; check with `river tasks`")
    return INTERRUPTED


def _which(handles: list[TaskHandle]) -> str:
    return f"task {handles[0].id}" if len(handles) == 1 else f"{len(handles)} tasks"
