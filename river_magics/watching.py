"""The I/O-free rules of watching tasks, shared by `Client.watch` and `AsyncClient.watch`.

Both clients run the same loop: follow the event stream; reopen it when it drops; poll
with bounded backoff while it is unavailable; stop at the deadline, or once the host has
stayed unreachable too long. Everything here decides; the clients only do the I/O, so the
two cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from river_runner.protocol import EVENT_HELLO, EVENT_LOG, EVENT_TASK

from .common import EVENTS_READ_TIMEOUT, WAITING, is_terminal
from .errors import RiverConnectionError, RiverError

# While every watched task waits in the queue, the event stream is reopened this often:
# the reopened stream starts with each task's current record, so the queue position shown
# stays current (positions move when tasks ahead leave, which sends no event to us).
QUEUE_REFRESH = 2.0

# Polling fallback when the event stream is unavailable: bounded exponential backoff, and
# a limit on how long the host may stay unreachable before a waiter gives up.
POLL_MIN = 0.25
POLL_MAX = 5.0
UNREACHABLE_LIMIT = 120.0

# A stream that worked and then ended after this long is reopened at once (it dropped or
# idled out); one that ended sooner is followed by a poll, so a failing stream cannot spin.
STREAM_RETRY_AFTER = 1.0

# `since` for a subscription that only wants state changes: larger than any real line
# number, so the host replays no old log lines.
NO_REPLAY = 2**53


class Watched(Protocol):
    """A task handle: the watch keeps its `last` record current."""

    id: str
    last: dict[str, Any] | None


def summary(task: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a watcher reports a change of (not every field, e.g. not timestamps)."""
    return (
        task.get("state"),
        task.get("node"),
        task.get("queue_position"),
        task.get("wait_reason"),
        task.get("exit_code"),
    )


class TaskWatch:
    """Where a watch of one task is: last line seen, last summary reported, done or not."""

    def __init__(self, last_seq: int, handle: Watched | None = None) -> None:
        self.last_seq = last_seq
        self.summary: tuple[Any, ...] | None = None
        self.handle = handle
        self.record: dict[str, Any] | None = handle.last if handle is not None else None
        self.done = False


class WatchSet:
    """Which events of the watched tasks are new, and when the watch ends.

    Log events are passed on only with a sequence number above the last seen for their
    task (so a reconnect that replays lines never repeats one); a task's terminal record
    is passed on after its last lines (the caller fetches those it may have missed).
    A handle's `last` is kept current with every record that arrives.
    """

    def __init__(
        self,
        handles: Iterable[Watched] | Iterable[str],
        logs: bool,
        since: Mapping[str, int] | int = 0,
    ) -> None:
        self.logs = logs
        self.tasks: dict[str, TaskWatch] = {}
        for item in handles:
            handle = None if isinstance(item, str) else item
            id = item if isinstance(item, str) else item.id
            start = since if isinstance(since, int) else since.get(id, 0)
            self.tasks[id] = TaskWatch(start if logs else NO_REPLAY, handle)
        self.connected = False  # the current stream delivered at least one event
        self.reopen = False  # the current stream should be replaced by a fresh one now

    @property
    def pending(self) -> list[str]:
        return [id for id, watch in self.tasks.items() if not watch.done]

    @property
    def done(self) -> bool:
        return all(watch.done for watch in self.tasks.values())

    def stream_since(self) -> int:
        pending = self.pending
        if not self.logs or not pending:
            return NO_REPLAY
        return min(self.tasks[id].last_seq for id in pending)

    def all_waiting(self) -> bool:
        """Every pending task is known to wait in the queue (no output can come yet)."""
        pending = self.pending
        return bool(pending) and all(
            (self.tasks[id].record or {}).get("state") in WAITING for id in pending
        )

    def log(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """A log event from the stream: the line to pass on, or None (old or not ours)."""
        watch = self.tasks.get(str(data.get("task_id")))
        if not self.logs or watch is None or watch.done:
            return None
        seq = int(data.get("seq", 0))
        if seq <= watch.last_seq:
            return None
        watch.last_seq = seq
        return dict(data)

    def lines(self, id: str, lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Lines fetched with GET .../logs: the new ones, tagged with their task ID."""
        return [line for line in (self.log({"task_id": id, **line}) for line in lines) if line]

    def tail_needed(self, kind: str, data: Any) -> str | None:
        """A stream event arrived: the ID of a task whose last lines the caller must fetch
        before passing the event to `events_for` (its terminal record), or None."""
        if kind != EVENT_TASK:
            return None
        task = data["task"]
        watch = self.tasks.get(str(task.get("id")))
        if self.logs and watch is not None and not watch.done and is_terminal(task.get("state")):
            return str(task["id"])
        return None

    def task(self, task: dict[str, Any]) -> dict[str, Any] | None:
        """A task record arrived (after any tail): the record to pass on, or None."""
        watch = self.tasks.get(str(task.get("id")))
        if watch is None or watch.done:
            return None
        watch.record = task
        if watch.handle is not None:
            watch.handle.last = task
        if is_terminal(task.get("state")):
            watch.done = True
        if summary(task) != watch.summary:
            watch.summary = summary(task)
            return task
        return None

    def events_for(self, kind: str, data: Any) -> tuple[str, dict[str, Any]] | None:
        """Classify one stream event without I/O (terminal tails are the caller's)."""
        if kind == EVENT_HELLO:
            self.connected = True
        elif kind == EVENT_LOG:
            line = self.log(data)
            return (EVENT_LOG, line) if line else None
        elif kind == EVENT_TASK:
            record = self.task(data["task"])
            return (EVENT_TASK, record) if record else None
        return None

    def should_reopen(self, kind: str, refreshing: bool) -> bool:
        """After a task event: are only queued tasks left, so that the stream should be
        reopened with the short refresh timeout (to keep queue positions current)?"""
        if not refreshing and kind == EVENT_TASK and self.all_waiting():
            self.reopen = True
        return self.reopen


class WatchPacer:
    """When a watch opens streams, polls, pauses and gives up."""

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.use_stream = True
        self.backoff = POLL_MIN
        self.unreachable_since: float | None = None
        self._opened = 0.0

    def open_stream(self, watch: WatchSet) -> tuple[float, bool]:
        """A stream is about to open: its read timeout, and whether it only refreshes
        queue positions (every watched task waits)."""
        watch.connected = watch.reopen = False
        self._opened = time.monotonic()
        refreshing = watch.all_waiting()
        read_timeout = QUEUE_REFRESH if refreshing else EVENTS_READ_TIMEOUT
        if self.deadline is not None:
            read_timeout = max(min(read_timeout, self.deadline - time.monotonic()), 0.1)
        return read_timeout, refreshing

    def stream_failed(self, exc: RiverError) -> bool:
        """The stream raised: True if polling may go on (the caller re-raises otherwise).

        A 404 means the events route is missing (an unknown task shows up again when
        polling), so the watch polls from then on; a 5xx or a dropped connection may pass.
        """
        if isinstance(exc, RiverConnectionError):
            return True
        if exc.status is None or exc.status < 404 or exc.status in (401, 403):
            return False
        self.use_stream = exc.status != 404
        return True

    def reopen_now(self, watch: WatchSet) -> bool:
        """The stream ended: reopen it at once (True), or poll first (False)."""
        if not watch.connected:
            return False
        self.unreachable_since, self.backoff = None, POLL_MIN
        return watch.reopen or time.monotonic() - self._opened > STREAM_RETRY_AFTER

    def check_deadline(self, pending: list[str]) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            if len(pending) == 1:
                raise TimeoutError(f"task {pending[0]} is not finished yet")
            raise TimeoutError(f"{len(pending)} tasks are not finished yet")

    def polled(self) -> None:
        self.unreachable_since = None

    def unreachable_too_long(self) -> bool:
        """A poll could not reach the host: True once that has lasted UNREACHABLE_LIMIT."""
        now = time.monotonic()
        self.unreachable_since = self.unreachable_since or now
        return now - self.unreachable_since > UNREACHABLE_LIMIT

    def next_pause(self) -> float:
        """Seconds to wait before the next try (bounded by the deadline); backs off."""
        pause = self.backoff
        if self.deadline is not None:
            pause = min(pause, self.deadline - time.monotonic())
        self.backoff = min(self.backoff * 2, POLL_MAX)
        return max(pause, 0.0)
