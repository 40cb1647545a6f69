"""What the magics show: HTML tables with text fallbacks, and a live status line.

Everything here builds MIME bundles ({"text/html": ..., "text/plain": ...}) from the
host's JSON, so the same output reads well in JupyterLab, in nbconvert/nbclient output
and in a terminal IPython.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from river_runner.spec import format_memory

Bundle = dict[str, str]

_STATE_COLORS = {
    "pending_approval": "#8a6d00",
    "queued": "#b26b00",
    "assigning": "#1565c0",
    "running": "#1565c0",
    "paused": "#616161",
    "completed": "#2e7d32",
    "failed": "#c62828",
    "killed": "#c62828",
    "killed_oom": "#c62828",
    "lost": "#c62828",
    "timeout": "#c62828",
    "online": "#2e7d32",
    "offline": "#c62828",
}


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def compress_ids(ids: Sequence[int]) -> str:
    """[0, 1, 2, 3, 6] -> '0-3,6': CPU lists stay readable on big nodes."""
    items = sorted(set(ids))
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)


def format_duration(seconds: float) -> str:
    """1.23s, 2m03s, 1h02m: precise for short tasks, compact for long ones."""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _state_html(state: str) -> str:
    color = _STATE_COLORS.get(state, "inherit")
    return f'<span style="color:{color};font-weight:600">{html.escape(state)}</span>'


def table_bundle(headers: Sequence[str], rows: Sequence[Sequence[str]], state_col: int) -> Bundle:
    """One table as HTML and as aligned plain text."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in headers)
    body = ""
    for row in rows:
        cells = [
            _state_html(cell) if i == state_col else html.escape(cell) for i, cell in enumerate(row)
        ]
        body += "<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in cells) + "</tr>"
    table = (
        f"<table class='river-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
    return {"text/html": table, "text/plain": "\n".join(lines)}


def _message(text: str) -> Bundle:
    return {"text/html": f"<i>{html.escape(text)}</i>", "text/plain": text}


def _fraction(free: Any, total: Any, fmt: Any = str) -> str:
    if total is None:
        return "-"
    return f"{'-' if free is None else fmt(free)}/{fmt(total)}"


def nodes_bundle(nodes: Sequence[Mapping[str, Any]]) -> Bundle:
    """Nodes with free/total cores, memory and GPUs, and CPU load."""
    if not nodes:
        return _message("No nodes registered yet: start one with `river runner --host URL`.")
    headers = ["node", "state", "cores free", "memory free", "GPUs free", "cpu%"]
    rows = []
    for node in nodes:
        free = node.get("free") or {}
        gpus = node.get("gpus") or []
        free_gpus = free.get("gpus")
        cpu = (node.get("metrics") or {}).get("cpu_percent")
        rows.append(
            [
                _dash(node.get("name")),
                _dash(node.get("state")),
                _fraction(free.get("cores"), node.get("cores")),
                _fraction(free.get("memory"), node.get("memory"), format_memory),
                _fraction(None if free_gpus is None else len(free_gpus), len(gpus)),
                "-" if cpu is None else f"{cpu:.0f}",
            ]
        )
    return table_bundle(headers, rows, state_col=1)


def _waiting(task: Mapping[str, Any]) -> str:
    if task.get("state") not in ("queued", "pending_approval"):
        return "-"
    position, reason = task.get("queue_position"), task.get("wait_reason")
    parts = [f"#{position}"] if position else []
    if reason:
        parts.append(str(reason))
    return ": ".join(parts) if parts else "-"


_JOB_ENDERS = ("failed", "killed_oom", "lost", "killed", "timeout")


def job_state(members: Sequence[Mapping[str, Any]]) -> str:
    """One state for a job: how its members ended once all have (the first member that
    ended it, else completed), running while any runs, else rank 0's."""
    states = [str(m.get("state")) for m in members]
    terminal = ("completed", *_JOB_ENDERS)
    if all(s in terminal for s in states):
        return next((s for s in _JOB_ENDERS if s in states), "completed")
    if "running" in states:
        return "running"
    return states[0]


def fold_jobs(tasks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The members of a multi-node job as one row (at its newest member's place): id
    `job J`, state from job_state, nodes in rank order, rank 0's wait reason."""
    members: dict[str, list[Mapping[str, Any]]] = {}
    for task in tasks:
        job = task.get("job")
        if job:
            members.setdefault(str(job["id"]), []).append(task)
    out: list[Mapping[str, Any]] = []
    for task in tasks:
        job = task.get("job")
        if not job:
            out.append(task)
            continue
        group = members.pop(str(job["id"]), None)
        if group is None:
            continue
        group = sorted(group, key=lambda m: int((m.get("job") or {}).get("rank", 0)))
        codes = [m.get("exit_code") for m in group if m.get("exit_code") not in (None, 0)]
        out.append(
            {
                **group[0],
                "id": f"job {job['id']} ({len(group)} of {job.get('size', len(group))})",
                "state": job_state(group),
                "node": ", ".join(str(m.get("node") or "-") for m in group),
                "exit_code": codes[0] if codes else group[-1].get("exit_code"),
            }
        )
    return out


def tasks_bundle(tasks: Sequence[Mapping[str, Any]]) -> Bundle:
    """Tasks with where they run, or why and where in the queue they wait; the members of
    a multi-node job share one row (fold_jobs)."""
    if not tasks:
        return _message("No tasks.")
    tasks = fold_jobs(tasks)
    headers = ["id", "name", "owner", "state", "node", "queue / waiting for", "exit"]
    rows = [
        [
            _dash(task.get("id")),
            _dash(task.get("name")),
            _dash(task.get("owner")),
            _dash(task.get("state")),
            _dash(task.get("node")),
            _waiting(task),
            _dash(task.get("exit_code")),
        ]
        for task in tasks
    ]
    if any(_priority_text(t) for t in tasks):  # a column only where it says something
        headers.append("priority / requeues")
        for row, task in zip(rows, tasks, strict=True):
            row.append(_priority_text(task) or "-")
    return table_bundle(headers, rows, state_col=3)


def _priority_text(task: Mapping[str, Any]) -> str:
    """`5`, `5, requeued 2x`, `requeued 1x`: a task's non-default priority and how often it
    was displaced and put back in the queue; empty for a plain task."""
    parts = []
    if task.get("priority"):
        parts.append(str(task["priority"]))
    if task.get("requeues"):
        parts.append(f"requeued {task['requeues']}x")
    return ", ".join(parts)


def task_bundle(task: Mapping[str, Any]) -> Bundle:
    """One task's record as a two-column table (for `%river status ID`)."""
    request = task.get("request") or {}
    fields = [
        ("id", task.get("id")),
        ("name", task.get("name")),
        ("owner", task.get("owner")),
        ("kind", task.get("kind")),
        ("state", status_text(task)),
        ("node", task.get("node")),
        ("cpus", compress_ids(task.get("cpus") or []) or None),
        ("gpus", compress_ids(task.get("gpus") or []) or None),
        ("requested", _request_text(request)),
        ("exit code", task.get("exit_code")),
        ("reason", task.get("reason")),
    ]
    rows = [[key, _dash(value)] for key, value in fields]
    return table_bundle(["field", "value"], rows, state_col=-1)


def _request_text(request: Mapping[str, Any]) -> str:
    parts = [f"{request.get('cores', 1)} cores"]
    if request.get("memory"):
        parts.append(format_memory(int(request["memory"])))
    if request.get("gpus"):
        parts.append(f"{request['gpus']} GPUs")
    if request.get("target"):
        parts.append(f"on {request['target']}")
    return ", ".join(parts)


def _elapsed(task: Mapping[str, Any]) -> str:
    end = task.get("finished_at")
    start = task.get("started_at") or task.get("submitted_at")
    if end is None or start is None:
        return ""
    return f" in {format_duration(max(float(end) - float(start), 0.0))}"


def time_left(task: Mapping[str, Any], now: float | None = None) -> float | None:
    """Seconds a started task with a time limit has left (None: no limit, not started)."""
    limit, started = task.get("time_limit"), task.get("started_at")
    if limit is None or started is None:
        return None
    return max(0.0, float(started) + float(limit) - (time.time() if now is None else now))


def status_text(task: Mapping[str, Any]) -> str:
    """One line saying where a task stands, e.g. 'queued (position 2): waiting for 4 cores'."""
    state = str(task.get("state"))
    node = task.get("node")
    exit_code = task.get("exit_code")
    reason = task.get("reason")
    if state == "queued":
        text = "queued"
        if task.get("queue_position"):
            text += f" (position {task['queue_position']})"
        if task.get("wait_reason"):
            text += f": {task['wait_reason']}"
        return text
    if state == "pending_approval":
        return "waiting for an operator to approve it"
    if state in ("assigning", "running", "paused"):
        text = {"assigning": "starting", "running": "running", "paused": "paused"}[state]
        if node:
            text += f" on {node}"
        resources = []
        if task.get("cpus"):
            resources.append(f"cpus {compress_ids(task['cpus'])}")
        if task.get("gpus"):
            resources.append(f"gpus {compress_ids(task['gpus'])}")
        left = time_left(task)
        if left is not None:
            resources.append(f"{format_duration(left)} left")
        return text + (f" ({', '.join(resources)})" if resources else "")
    if state == "completed":
        return f"completed (exit {0 if exit_code is None else exit_code}){_elapsed(task)}"
    if state == "failed":
        code = f" (exit {exit_code})" if exit_code is not None else ""
        return f"failed{code}{_elapsed(task)}" + (f": {reason}" if reason else "")
    if state == "killed_oom":
        return "killed: out of memory" + (f" ({reason})" if reason else "")
    if state in ("killed", "lost", "timeout"):
        return state + _elapsed(task) + (f": {reason}" if reason else "")
    return state


def status_bundle(task: Mapping[str, Any]) -> Bundle:
    """The status line of a running cell, as HTML and text."""
    text = status_text(task)
    state = str(task.get("state"))
    label = f"task {task.get('id')}"
    color = _STATE_COLORS.get(state, "inherit")
    body = html.escape(text)
    return {
        "text/plain": f"{label}: {text}",
        "text/html": (
            f"<div class='river-status'><b>River {html.escape(label)}</b>: "
            f"<span style='color:{color}'>{body}</span></div>"
        ),
    }


class StatusLine:
    """A display that is updated in place (display_id) as a task changes state."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._shown: Bundle | None = None

    def show(self, task: Mapping[str, Any]) -> None:
        self._publish(status_bundle(task))

    def note(self, text: str) -> None:
        self._publish(_message(text))

    def show_bundle(self, bundle: Bundle) -> None:
        self._publish(bundle)

    def _publish(self, bundle: Bundle) -> None:
        from IPython.display import display

        if bundle == self._shown:
            return
        self._shown = bundle
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def show(bundle: Bundle) -> None:
    """Display a MIME bundle built here."""
    from IPython.display import display

    display(bundle, raw=True)


def _grid_counts(states: Sequence[str | None]) -> str:
    counts: dict[str, int] = {}
    for state in states:
        counts[state or "submitting"] = counts.get(state or "submitting", 0) + 1
    order = [*_STATE_COLORS, "submitting"]
    return ", ".join(
        f"{counts[s]} {s}"
        for s in sorted(counts, key=lambda s: order.index(s) if s in order else 99)
    )


def grid_bundle(title: str, labels: Sequence[str], states: Sequence[str | None]) -> Bundle:
    """A group of tasks (an array, or one per target) as a grid of colored state cells."""
    summary = f"{title}: {_grid_counts(states)}"
    cells = []
    for label, state in zip(labels, states, strict=True):
        color = _STATE_COLORS.get(state or "", "#9e9e9e")
        tip = html.escape(f"{label}: {state or 'submitting'}")
        cells.append(
            f"<span title='{tip}' style='display:inline-block;min-width:2.2em;margin:1px;"
            f"padding:1px 3px;text-align:center;font:11px monospace;color:white;"
            f"background:{color};border-radius:3px'>{html.escape(label)}</span>"
        )
    legend = html.escape(_grid_counts(states))
    text_cells = " ".join(
        f"{label}:{(state or 'submitting')[:4]}"
        for label, state in zip(labels, states, strict=True)
    )
    return {
        "text/plain": f"{summary}\n{text_cells}",
        "text/html": (
            f"<div class='river-grid'><b>River {html.escape(title)}</b>: {legend}"
            f"<div style='max-width:60em'>{''.join(cells)}</div></div>"
        ),
    }
