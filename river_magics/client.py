"""Synchronous Python client for the River host (REST + server-sent events).

Plain blocking httpx on purpose: inside a Jupyter kernel an asyncio loop already runs, so
`asyncio.run` is unavailable, while a blocking socket read is interrupted cleanly by the
kernel's interrupt (KeyboardInterrupt), which is what lets a waiting cell cancel its task.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from river_runner.ids import parse_id
from river_runner.protocol import EVENT_LOG, EVENT_TASK, TERMINAL_STATES
from river_runner.spec import parse_memory, parse_target

from .errors import RiverConnectionError, RiverError
from .events import parse_sse

NO_HOST_MESSAGE = "no River host: run %river connect URL --token T or set RIVER_URL"
API_PREFIX = "/river/api"

# The host sends a keepalive comment every 15 s; a read that waits much longer than
# that means the connection is dead, not that the task is quiet.
EVENTS_READ_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0

# Polling fallback when the event stream is unavailable: bounded exponential backoff, and
# a limit on how long the host may stay unreachable before a waiter gives up.
POLL_MIN = 0.25
POLL_MAX = 5.0
UNREACHABLE_LIMIT = 120.0

# `since` for a subscription that only wants state changes: larger than any real line
# number, so the host replays no old log lines.
_NO_REPLAY = 2**53

_TERMINAL = frozenset(state.value for state in TERMINAL_STATES)


def is_terminal(state: str | None) -> bool:
    """True for states a task never leaves (completed, failed, killed, killed_oom, lost)."""
    return state in _TERMINAL


def _task_id(value: str | int) -> str:
    """Validate an ID before it goes into a URL (no path tricks, clear message)."""
    return str(parse_id(value))


def _normalize_url(url: str) -> tuple[str, str | None]:
    """Accept what users paste: no scheme, a trailing slash, `/river/api`, `?token=...`."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    token = next((value for key, value in query if key == "token"), None)
    rest = [(key, value) for key, value in query if key != "token"]
    path = parts.path.rstrip("/")
    for suffix in (API_PREFIX, "/river", "/lab", "/tree"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    clean = urlunsplit((parts.scheme, parts.netloc, path, urlencode(rest), ""))
    return clean.rstrip("/"), token


def _error_from_response(response: httpx.Response, method: str, path: str) -> RiverError:
    """Build a RiverError from the host's JSON `message` (Jupyter APIHandler format)."""
    status = response.status_code
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("reason") or "")
    except ValueError:
        pass
    reason = response.reason_phrase or "error"
    if not message or message.lower() == reason.lower():
        message = f"{reason} (HTTP {status} for {method} {path})"
        if status == 404:
            message += ": is the River extension enabled on this server?"
    if status in (401, 403):
        message += " (check the token: %river connect URL --token T, or RIVER_TOKEN)"
    return RiverError(message, status=status)


class Client:
    """Talks to one River host. `Client()` reads RIVER_URL and RIVER_TOKEN."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get("RIVER_URL")
        if not url:
            raise RiverError(NO_HOST_MESSAGE)
        self.url, url_token = _normalize_url(url)
        token = token or url_token or os.environ.get("RIVER_TOKEN") or None
        headers = {"Accept": "application/json", "User-Agent": "river-magics"}
        if token:
            headers["Authorization"] = f"token {token}"
        self._api = self.url + API_PREFIX
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ---------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> RiverConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return RiverConnectionError(f"River host at {self.url} did not answer in time")
        detail = str(exc) or type(exc).__name__
        return RiverConnectionError(f"cannot reach River host at {self.url}: {detail}")

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, self._api + path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise _error_from_response(response, method, API_PREFIX + path)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise RiverError(
                f"unexpected answer from {self.url}{API_PREFIX}{path} (HTTP "
                f"{response.status_code}, not JSON): is this a River host?",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise RiverError(f"unexpected answer from {self.url}{API_PREFIX}{path}: {body!r}")
        return body

    # -- REST -------------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        """Registered nodes with totals, free resources and metrics."""
        return list(self._request("GET", "/nodes").get("nodes", []))

    def tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Tasks, newest first: your own, or everyone's with `all=True`."""
        params: dict[str, str] = {}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        return list(self._request("GET", "/tasks", params=params).get("tasks", []))

    def task(self, id: str | int) -> dict[str, Any]:
        """One task's current record."""
        return self._request("GET", f"/tasks/{_task_id(id)}")["task"]

    def submit(
        self,
        command: str | Sequence[str] | None = None,
        *,
        script: str | None = None,
        name: str | None = None,
        cores: int = 1,
        memory: str | int | None = None,
        gpus: int = 0,
        target: str | None = None,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> TaskHandle:
        """Queue a task: a command (argv list or shell string) or a Python `script`.

        Target and memory are checked here first so a typo fails before any request.
        """
        if (command is None) == (script is None):
            raise ValueError("give exactly one of command= or script=")
        body: dict[str, Any] = {"cores": cores, "gpus": gpus}
        if script is not None:
            body.update(kind="python", script=script)
        else:
            body.update(
                kind="command", command=command if isinstance(command, str) else list(command)
            )
        if memory not in (None, "", 0):
            body["memory"] = parse_memory(memory)
        if target:
            body["target"] = str(parse_target(target))
        if name:
            body["name"] = name
        if env:
            body["env"] = {str(key): str(value) for key, value in env.items()}
        if workdir:
            body["workdir"] = workdir
        task = self._request("POST", "/tasks", json=body)["task"]
        return TaskHandle(self, task["id"], task)

    def kill(self, id: str | int) -> dict[str, Any]:
        """Ask for a task to end: queued ones end at once, placed ones when the runner confirms."""
        return self._request("POST", f"/tasks/{_task_id(id)}/kill")["task"]

    def pause(self, id: str | int) -> dict[str, Any]:
        return self._request("POST", f"/tasks/{_task_id(id)}/pause")["task"]

    def resume(self, id: str | int) -> dict[str, Any]:
        return self._request("POST", f"/tasks/{_task_id(id)}/resume")["task"]

    def logs(self, id: str | int, since: int = 0) -> list[dict[str, Any]]:
        """Log lines with `seq > since` (one page), each {seq, stream, text, ts}."""
        body = self._request("GET", f"/tasks/{_task_id(id)}/logs", params={"since": since})
        return list(body.get("lines", []))

    def handle(self, id: str | int) -> TaskHandle:
        """A handle for an existing task, e.g. one submitted with --detach."""
        return TaskHandle(self, _task_id(id))

    # -- events -----------------------------------------------------------------------

    def events(
        self,
        task_ids: Iterable[str | int] | None = None,
        since: int = 0,
        all_tasks: bool = False,
        *,
        keepalive: bool = False,
        read_timeout: float = EVENTS_READ_TIMEOUT,
    ) -> Iterator[tuple[str, Any]]:
        """Yield `(kind, data)` from the host's event stream until it closes.

        Kinds: hello, task, log, node (see docs/api.md); with `keepalive=True` also
        ("keepalive", None) for each keepalive comment. Closing the iterator closes the
        connection.
        """
        params: list[tuple[str, str | int]] = [("task", _task_id(t)) for t in task_ids or ()]
        if since:
            params.append(("since", since))
        if all_tasks:
            params.append(("tasks", "all"))
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=read_timeout)
        path = "/events"
        try:
            with self._http.stream(
                "GET",
                self._api + path,
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from_response(response, "GET", API_PREFIX + path)
                yield from parse_sse(response.iter_lines(), keepalive=keepalive)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None


def _summary(task: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a watcher reports a change of (not every field, e.g. not timestamps)."""
    return (
        task.get("state"),
        task.get("node"),
        task.get("queue_position"),
        task.get("wait_reason"),
        task.get("exit_code"),
    )


class TaskHandle:
    """A submitted task: its state, its output, and a way to wait for or stop it."""

    def __init__(self, client: Client, id: str | int, task: dict[str, Any] | None = None) -> None:
        self.client = client
        self.id = str(id)
        self.last: dict[str, Any] | None = task  # the most recent record seen, if any

    def __repr__(self) -> str:
        state = self.last.get("state") if self.last else None
        return f"<TaskHandle {self.id}{' ' + state if state else ''}>"

    @property
    def status(self) -> str:
        """The task's state now (one request)."""
        return self.info()["state"]

    def info(self) -> dict[str, Any]:
        """The task's full current record (one request)."""
        self.last = self.client.task(self.id)
        return self.last

    def kill(self) -> dict[str, Any]:
        self.last = self.client.kill(self.id)
        return self.last

    def pause(self) -> dict[str, Any]:
        self.last = self.client.pause(self.id)
        return self.last

    def resume(self) -> dict[str, Any]:
        self.last = self.client.resume(self.id)
        return self.last

    def logs(self, since: int = 0) -> list[dict[str, Any]]:
        """All log lines written so far (pages through the host's answers)."""
        lines: list[dict[str, Any]] = []
        while True:
            page = [line for line in self.client.logs(self.id, since=since) if line["seq"] > since]
            if not page:
                return lines
            lines.extend(page)
            since = page[-1]["seq"]

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the task is terminal; return its final record.

        Raises TimeoutError after `timeout` seconds. Uses the event stream and polls
        (with bounded backoff) while the stream is unavailable.
        """
        final = self.last or {}
        for kind, data in self.watch(logs=False, timeout=timeout):
            if kind == EVENT_TASK:
                final = data
        return final

    def stream(self, since: int = 0) -> Iterator[dict[str, Any]]:
        """Yield log lines in order, each once, live, until the task is terminal."""
        for kind, data in self.watch(since=since):
            if kind == EVENT_LOG:
                yield data

    def watch(
        self, *, logs: bool = True, since: int = 0, timeout: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ("task", record) on each change and ("log", line) per new line, in order.

        Ends after the terminal record, which comes after the task's last line. Survives
        dropped streams: reconnects with `since` = last line seen, polling in between, so
        no line is lost or repeated. Raises TimeoutError past `timeout`, and RiverError if
        the host stays unreachable for UNREACHABLE_LIMIT seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        state = _WatchState(since if logs else _NO_REPLAY)
        use_stream = True
        backoff = POLL_MIN
        unreachable_since: float | None = None
        while True:
            if use_stream:
                state.connected = False
                opened = time.monotonic()
                try:
                    yield from self._watch_stream(state, logs, deadline)
                except RiverConnectionError:
                    pass
                except RiverError as exc:
                    # A 404 here means the events route is missing (an unknown task
                    # shows up again when polling); a 5xx may pass. Poll instead.
                    if exc.status is None or exc.status < 404 or exc.status in (401, 403):
                        raise
                    use_stream = exc.status != 404
                if state.done:
                    return
                if state.connected:
                    unreachable_since, backoff = None, POLL_MIN
                    if time.monotonic() - opened > 1.0:
                        continue  # a working stream ended or dropped: reconnect at once
            _check_deadline(deadline, self.id)
            try:
                yield from self._watch_poll(state, logs)
                unreachable_since = None
            except RiverConnectionError:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_LIMIT:
                    raise
            if state.done:
                return
            pause = backoff if deadline is None else min(backoff, deadline - time.monotonic())
            time.sleep(max(pause, 0))
            backoff = min(backoff * 2, POLL_MAX)

    def _watch_stream(
        self, state: _WatchState, logs: bool, deadline: float | None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        read_timeout = EVENTS_READ_TIMEOUT
        if deadline is not None:
            read_timeout = max(min(read_timeout, deadline - time.monotonic()), 0.1)
        events = self.client.events(
            [self.id], since=state.last_seq, keepalive=True, read_timeout=read_timeout
        )
        try:
            with contextlib.closing(events):
                for kind, data in events:
                    state.connected = True
                    if kind == EVENT_LOG and logs and str(data.get("task_id")) == self.id:
                        if data.get("seq", 0) > state.last_seq:
                            state.last_seq = data["seq"]
                            yield EVENT_LOG, data
                    elif kind == EVENT_TASK and str(data.get("task", {}).get("id")) == self.id:
                        yield from self._on_task(state, data["task"], logs)
                        if state.done:
                            return
                    _check_deadline(deadline, self.id)
        except RiverConnectionError:
            _check_deadline(deadline, self.id)
            raise

    def _watch_poll(self, state: _WatchState, logs: bool) -> Iterator[tuple[str, dict[str, Any]]]:
        task = self.client.task(self.id)
        if logs and not is_terminal(task.get("state")):
            yield from self._new_lines(state)
        yield from self._on_task(state, task, logs)

    def _on_task(
        self, state: _WatchState, task: dict[str, Any], logs: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        self.last = task
        if is_terminal(task.get("state")):
            if logs:  # lines written just before the end may still be in flight
                yield from self._new_lines(state)
            state.done = True
        if _summary(task) != state.summary:
            state.summary = _summary(task)
            yield EVENT_TASK, task

    def _new_lines(self, state: _WatchState) -> Iterator[tuple[str, dict[str, Any]]]:
        for line in self.logs(since=state.last_seq):
            if line["seq"] > state.last_seq:
                state.last_seq = line["seq"]
                yield EVENT_LOG, {"task_id": self.id, **line}


class _WatchState:
    """Where a watch is: last line seen, last summary reported, whether it has ended."""

    def __init__(self, last_seq: int) -> None:
        self.last_seq = last_seq
        self.summary: tuple[Any, ...] | None = None
        self.done = False
        self.connected = False  # the current stream delivered at least one event


def _check_deadline(deadline: float | None, task_id: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"task {task_id} is not finished yet")
