"""Wire contract between host, runner and clients: states, headers, message kinds.

Kept in the runner package (the lowest layer) so the host and the client import the
same names instead of repeating string literals.
"""

from __future__ import annotations

import enum
import hmac
from typing import Any


class TaskState(str, enum.Enum):
    """Task lifecycle. Terminal states are final: a late report never changes them."""

    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"
    ASSIGNING = "assigning"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    KILLED_OOM = "killed_oom"
    LOST = "lost"
    # Ended at its time limit (SIGTERM, then SIGKILL after the grace): river_runner/agent.py
    TIMEOUT = "timeout"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def holds_resources(self) -> bool:
        """Placed tasks keep their cores/GPUs until terminal, paused included."""
        return self in (TaskState.ASSIGNING, TaskState.RUNNING, TaskState.PAUSED)


TERMINAL_STATES = frozenset(
    {
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.KILLED,
        TaskState.KILLED_OOM,
        TaskState.LOST,
        TaskState.TIMEOUT,
    }
)

# States a runner may report for a task it runs.
RUNNER_REPORTABLE = frozenset(
    {
        TaskState.RUNNING,
        TaskState.PAUSED,
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.KILLED,
        TaskState.KILLED_OOM,
        TaskState.TIMEOUT,
    }
)


class NodeState(str, enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"


# The scheme runners use for their credential, in both directions.
RUNNER_AUTH_SCHEME = "river-runner"


def runner_auth_header(secret: str) -> dict[str, str]:
    return {"Authorization": f"{RUNNER_AUTH_SCHEME} {secret}"}


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison that is False (not a TypeError, i.e. not a 500) for a
    presented value with non-ASCII characters. Host and runner both use it."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def parse_runner_auth(header: str | None) -> str | None:
    """Return the secret from an `Authorization: river-runner SECRET` header, if any."""
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.strip().lower() != RUNNER_AUTH_SCHEME or not secret.strip():
        return None
    return secret.strip()


# A standby host answers 503 with the leader's URL in this header (river_server/standby.py);
# every River answer says in ROLE_HEADER whether its host leads or stands by.
LEADER_HEADER = "X-River-Leader"
ROLE_HEADER = "X-River-Role"


def split_host_urls(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Host URLs from `a,b` (RIVER_URL, RIVER_HOST_URL) or a list: trimmed, no empties,
    no trailing slash, first occurrence kept."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    urls: list[str] = []
    for item in items:
        url = str(item).strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    return urls


class HostList:
    """The hosts a runner or client was given, and the one it talks to now (`current`).

    It starts with the first; `follow(leader)` moves to the URL a standby named when it is
    one of ours (a standby may know the leader by an address we cannot reach), otherwise to
    the next in turn, as does `next()` after a connection error.
    """

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("no host URL given")
        self.urls = urls
        self.index = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    @property
    def several(self) -> bool:
        return len(self.urls) > 1

    def next(self) -> str:
        self.index = (self.index + 1) % len(self.urls)
        return self.current

    def follow(self, leader: str | None) -> str:
        wanted = (leader or "").strip().rstrip("/")
        if wanted and wanted in self.urls and wanted != self.current:
            self.index = self.urls.index(wanted)
            return self.current
        return self.next()


# Kinds of runner -> host messages carried by /river/api/runner/events, in order.
MSG_STATUS = "status"  # {"task_id", "state", "exit_code"?, "detail"?, "pid"?}
MSG_LOG = "log"  # {"task_id", "lines": [{"seq", "stream", "text", "ts"[, "continued"]}]}

# Kinds of host -> client events on /river/api/events.
EVENT_TASK = "task"  # {"task": <task json>}
EVENT_LOG = "log"  # {"task_id", "seq", "stream", "text", "ts"[, "continued"]} (loglines)
EVENT_NODE = "node"  # {"node": <node json>}
EVENT_HELLO = "hello"  # first event of a stream


def status_message(task_id: int, state: TaskState, **extra: Any) -> dict[str, Any]:
    return {"kind": MSG_STATUS, "task_id": str(task_id), "state": state.value, **extra}


# Lines a `--pull` task prints on stdout to hand its pickled results to the host (which
# keeps them as the task's `river-pull` blob instead of as log text):
#   "\x00river-pull:<part>/<parts>:<base64>"   one part of the zlib-compressed pickle
#   "\x00river-pull-error:<message>"           why the values could not be sent
# The host replaces each such line in the log by a note on the "river" stream.
PULL_MARKER = "\x00river-pull:"
PULL_ERROR_MARKER = "\x00river-pull-error:"
PULL_BLOB = "river-pull"
LOG_STREAM_RIVER = "river"  # host notes in a task's log; clients do not print them
# ... except the runner's note of which Python ran a task (river_runner.interpreters), which
# starts with this and which the magics print in the cell (river_magics.launch).
INTERPRETER_NOTE_PREFIX = "ran with "
