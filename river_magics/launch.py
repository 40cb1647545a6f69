"""What `%%river submit` and `%river run` do once their line is parsed: submit one task or a
group (an `--array`, or one task per `-t`), stream the output, keep a status line or a
grid of states current, cancel on kernel interrupt, and bring `--pull`ed variables back.
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from river_runner.loglines import LineRenderer, render
from river_runner.protocol import EVENT_LOG, LOG_STREAM_RIVER
from river_runner.protocol import INTERPRETER_NOTE_PREFIX as INTERPRETER_NOTE

from .client import Client, TaskGroup, TaskHandle, is_terminal
from .display import StatusLine, grid_bundle
from .errors import RiverError
from .payload import PayloadError
from .usage import UsageError

# How long an interrupted cell waits for its killed task(s) to end before giving up.
KILL_WAIT = 10.0


def write_line(
    line: Mapping[str, Any], prefix: str = "", renderer: LineRenderer | None = None
) -> None:
    """Print one remote line to the matching local stream, at once (host notes are skipped),
    as a terminal shows it: a progress bar's `\r` redraws print as its last state, and the
    chunks of a long line (`continued`) print as one line once its last chunk is in, via
    `renderer` (one per cell, so a bar cut into chunks is joined; without one, each chunk
    prints alone)."""
    stream = line.get("stream")
    if stream == LOG_STREAM_RIVER:
        text = str(line.get("text", ""))
        if text.startswith(INTERPRETER_NOTE):  # which python ran the cell: the user's question
            show_note(f"{prefix}river: {text}")
        return
    text = str(line.get("text", ""))
    if renderer is None:
        shown: str | None = render(text)
    else:
        key = f"{line.get('task_id', '')}/{stream}"
        shown = renderer.feed(key, text, bool(line.get("continued")))
    if shown is None:
        return
    out = sys.stderr if stream == "stderr" else sys.stdout
    text = prefix + shown
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_note(text: str) -> None:
    """River's own note beside a task's output (which interpreter ran it), never inside
    the task's stdout, which a cell or `river run > out.txt` must keep as the task wrote it:
    in a notebook a display output of its own (metadata `river.note`, so a reader can tell
    it from the task's output), in a shell a line on stderr as River's other notes."""
    if _in_kernel():
        from IPython.display import display

        bundle = {
            "text/plain": text,
            "text/html": f'<pre class="river-note" style="opacity:0.7;margin:0">'
            f"{html.escape(text)}</pre>",
        }
        display(bundle, raw=True, metadata={"river": {"note": "interpreter"}})
        return
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def task_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client.submit keywords from the options `run` and `submit` share."""
    return {
        "name": args.name,
        "cores": args.cores,
        "memory": args.memory,
        "gpus": args.gpus,
        "env": dict(args.env) or None,
        "workdir": args.workdir,
        "image": getattr(args, "image", None),
        "environment": getattr(args, "environment", None),
        "mounts": getattr(args, "mount", None) or None,
        "privileged": getattr(args, "privileged", False),
        "ip_token": getattr(args, "ip_token", None),
        "time_limit": getattr(args, "time", None),
        "priority": getattr(args, "priority", None),
        "preemptible": getattr(args, "preemptible", False),
        "bind_kernel": getattr(args, "bind_kernel", False),
        **python_option(args),
    }


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """Client.submit keywords of a --nodes job (nothing for a single task)."""
    if getattr(args, "nodes", None) is None:
        return {}
    return {
        "nodes": args.nodes,
        "gpus_per_node": args.gpus_per_node,
        "network": getattr(args, "network", None),
        "launcher": getattr(args, "launcher", None),
        "nproc_per_node": getattr(args, "nproc_per_node", None),
    }


def python_option(args: argparse.Namespace) -> dict[str, Any]:
    """`%%river submit`'s interpreter: --python as given (it must exist on the node), else
    this kernel's own, so a cell sees the packages its notebook sees where the node shares
    the path; where it does not (or in a container) the node's own runs, and says so."""
    if not hasattr(args, "python"):
        return {}  # `%river run`: a command names its own interpreter
    if args.python:
        return {"python": args.python}
    if getattr(args, "image", None) or getattr(args, "environment", None):
        return {}
    if not sys.executable.startswith("/"):
        return {}
    return {"python": sys.executable, "python_fallback": True}


def push_values(namespace: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The notebook's values for `--push`, naming the first that does not exist."""
    missing = [name for name in names if name not in namespace]
    if missing:
        raise UsageError(
            f"cannot push {missing[0]!r}: no variable named {missing[0]} in this notebook"
        )
    return {name: namespace[name] for name in names}


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} ({type(value).__name__})" for name, value in values.items())


class Follower:
    """Prints a task's lines and keeps its status line current; resumable after a stop."""

    def __init__(self, handle: TaskHandle, status: StatusLine | None) -> None:
        self.handle = handle
        self.status = status
        self.last_seq = 0
        self.task: dict[str, Any] | None = handle.last
        self.renderer = LineRenderer()

    def run(self, timeout: float | None = None) -> dict[str, Any] | None:
        for kind, data in self.handle.watch(since=self.last_seq, timeout=timeout):
            if kind == EVENT_LOG:
                self.last_seq = max(self.last_seq, int(data.get("seq", 0)))
                write_line(data, renderer=self.renderer)
            else:
                self.task = data
                if self.status is not None:
                    self.status.show(data)
        return self.task


class GroupFollower:
    """Streams the lines of several tasks (prefixed by their label) under a live grid."""

    def __init__(self, group: TaskGroup, title: str) -> None:
        self.group = group
        self.title = title
        self.grid = StatusLine()
        self.seqs: dict[str, int] = {}
        self.labels = dict(zip(group.ids, group.labels, strict=True))
        self.renderer = LineRenderer()

    def render(self) -> None:
        states = [(h.last or {}).get("state") for h in self.group.handles]
        self.grid.show_bundle(grid_bundle(self.title, self.group.labels, states))

    def run(self, timeout: float | None = None) -> None:
        self.render()
        client = self.group.client
        for kind, data in client.watch(self.group.handles, since=self.seqs, timeout=timeout):
            if kind == EVENT_LOG:
                task_id = str(data.get("task_id"))
                self.seqs[task_id] = max(self.seqs.get(task_id, 0), int(data.get("seq", 0)))
                write_line(
                    data,
                    prefix=f"[{self.labels.get(task_id, task_id)}] ",
                    renderer=self.renderer,
                )
            else:
                self.render()
        self.render()


def launch(
    client: Client,
    args: argparse.Namespace,
    user_ns: dict[str, Any],
    *,
    command: str | list[str] | None = None,
    script: str | None = None,
) -> TaskHandle | TaskGroup | None:
    options = task_options(args)
    pull = list(getattr(args, "pull", None) or [])
    push_names = list(getattr(args, "push", None) or [])
    if push_names or pull:
        options.update(push=push_values(user_ns, push_names), pull=pull)
    what: dict[str, Any] = {"command": command} if script is None else {"script": script}
    targets = list(args.targets or [])
    if getattr(args, "nodes", None) is not None:
        group = client.submit(**what, **options, **job_options(args))
        job = (group.handles[0].last or {}).get("job") or {}
        title = f"job {job.get('id', '?')} on {args.nodes} nodes"
    elif args.array:
        group = client.submit_array(args.array, target=args.target, **what, **options)
        title = f"array {args.array} ({len(group)} tasks)"
    elif len(targets) > 1:
        handles: list[TaskHandle] = []
        try:
            for target in targets:
                handles.append(client.submit(target=target, **what, **options))
        except BaseException:
            TaskGroup(client, handles).kill()
            raise
        group = TaskGroup(client, handles, targets)
        title = f"{len(group)} targets"
    else:
        try:
            handle = client.submit(target=args.target, **what, **options)
        except KeyboardInterrupt:
            if not push_names:
                raise
            # Interrupted while the pushed values were going up (the long part): no task
            # exists yet, and the host drops the partial upload when the connection closes.
            print("Interrupted: the push was cancelled before the task was submitted")
            return None
        if args.detach:
            state = (handle.last or {}).get("state", "submitted")
            hint = "; its pulled values: .result()" if pull else ""
            print(
                f"task {handle.id} {state}; follow it with %river logs {handle.id} --follow{hint}"
            )
            return handle
        _follow_one(handle, pull, user_ns)
        return None
    if args.detach:
        ids = group.ids
        span = ids[0] if len(ids) == 1 else f"{ids[0]} ... {ids[-1]}"
        print(f"{title} submitted (tasks {span}); the group it returns has .wait(), .kill()")
        return group
    _follow_group(group, title, pull, user_ns, array=bool(args.array))
    return None


# ---- one task ---------------------------------------------------------------------------


def _follow_one(handle: TaskHandle, pull: Sequence[str], user_ns: dict[str, Any]) -> None:
    status = StatusLine()
    if handle.last:
        status.show(handle.last)
    follower = Follower(handle, status)
    try:
        task = follower.run()
    except KeyboardInterrupt:
        _cancel_one(follower)
        return
    if pull and task and task.get("state") == "completed":
        try:
            values = handle.result()
        except PayloadError as exc:
            raise UsageError(str(exc)) from None
        user_ns.update(values)
        print(f"pulled {describe(values)}")


def _cancel_one(follower: Follower) -> None:
    """Kernel interrupt while waiting: kill the task and say how it ended."""
    handle, status = follower.handle, follower.status
    try:
        try:
            task = handle.kill()
        except RiverError as exc:  # e.g. it ended just now; say how
            task = handle.info()
            if not is_terminal(task.get("state")):
                raise exc from None
        if status is not None:
            status.show(task)
        if not is_terminal(task.get("state")):
            task = follower.run(timeout=KILL_WAIT) or task
    except (KeyboardInterrupt, TimeoutError):
        task = handle.last or {}
    except RiverError as exc:
        print(f"Interrupted: could not kill task {handle.id}: {exc}", file=sys.stderr)
        return
    state = task.get("state", "unknown")
    if state == "killed":
        print(f"Interrupted: task {handle.id} killed")
    elif is_terminal(state):
        print(f"Interrupted: task {handle.id} ended as {state}")
    else:
        print(
            f"Interrupted: kill requested for task {handle.id}, still {state}; "
            f"check with %river status {handle.id}"
        )


# ---- groups -----------------------------------------------------------------------------


def _follow_group(
    group: TaskGroup, title: str, pull: Sequence[str], user_ns: dict[str, Any], *, array: bool
) -> None:
    follower = GroupFollower(group, title)
    try:
        follower.run()
    except KeyboardInterrupt:
        _cancel_group(follower)
        return
    if not pull:
        return
    collected: dict[str, dict[Any, Any]] = {name: {} for name in pull}
    for label, handle in zip(group.labels, group.handles, strict=True):
        if (handle.last or {}).get("state") != "completed":
            continue
        try:
            values = handle.result()
        except PayloadError as exc:
            raise UsageError(str(exc)) from None
        key: Any = int(label) if array else label
        for name, value in values.items():
            collected[name][key] = value
    done = sum((h.last or {}).get("state") == "completed" for h in group.handles)
    user_ns.update(collected)
    keys = "array index" if array else "target"
    note = "" if done == len(group) else f" ({len(group) - done} did not complete)"
    print(
        f"pulled {', '.join(collected)} from {done} of {len(group)} tasks, "
        f"each a dict by {keys}{note}"
    )


def _cancel_group(follower: GroupFollower) -> None:
    group = follower.group
    try:
        group.kill()
        follower.run(timeout=KILL_WAIT)
    except (KeyboardInterrupt, TimeoutError):
        pass
    except RiverError as exc:
        print(f"Interrupted: could not kill every task: {exc}", file=sys.stderr)
        return
    follower.render()
    counts = group.counts()
    left = [s for s in counts if not is_terminal(s)]
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    if left:
        print(f"Interrupted: kill requested for {len(group)} tasks; now {summary}")
    else:
        print(f"Interrupted: {len(group)} tasks ended ({summary})")
