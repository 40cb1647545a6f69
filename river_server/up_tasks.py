"""End the tasks of `river up`'s embedded runner when `river up` stops.

A standalone runner leaves its task supervisors running when it stops (they are in their
own sessions, and a restarted runner adopts them). `river up` is the whole cluster on one
machine: stopping it (Ctrl+C, SIGTERM, SIGHUP) must leave no process of it behind, so its
tasks are ended too, through their supervisors (which kill the task's process group and
record the result, so a later `river up` reports them killed).

The file names are those of river_runner/supervise.py, written here rather than imported
so the host does not import runner agent code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil

SUPERVISOR_PID = "supervisor.pid"
CHILD_PID = "child.pid"
RESULT = "result.json"


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie (tests of `river up` use it too)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_local_tasks(runner_dir: Path, grace: float = 10.0) -> list[int]:
    """SIGTERM every unfinished task supervisor under `runner_dir` (a runner's data dir),
    SIGKILL what is left after `grace` seconds; return the supervisor pids signalled."""
    signalled: list[tuple[int, int | None]] = []
    for task_dir in sorted((runner_dir / "tasks").glob("*")):
        supervisor = _pid(task_dir / SUPERVISOR_PID)
        if supervisor is None or (task_dir / RESULT).exists() or not alive(supervisor):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor, signal.SIGTERM)
        signalled.append((supervisor, _pid(task_dir / CHILD_PID)))
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid, _ in signalled):
        time.sleep(0.05)
    for supervisor, child in signalled:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if alive(supervisor):
                os.kill(supervisor, signal.SIGKILL)
            if child is not None:
                os.killpg(child, signal.SIGKILL)  # leftovers of the task's own group
    return [pid for pid, _ in signalled]
