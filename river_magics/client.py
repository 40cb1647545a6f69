"""Synchronous Python client for the River host (REST + server-sent events).

Plain blocking httpx on purpose: inside a Jupyter kernel an asyncio loop already runs, so
`asyncio.run` is unavailable, while a blocking socket read is interrupted cleanly by the
kernel's interrupt (KeyboardInterrupt), which is what lets a waiting cell cancel its task.
For asyncio code use `river_magics.AsyncClient`, which has the same surface.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from river_runner.protocol import EVENT_LOG, EVENT_TASK, LOG_STREAM_RIVER, PULL_BLOB

from .common import (
    API_PREFIX,
    CONNECT_TIMEOUT,
    EVENTS_READ_TIMEOUT,
    NO_HOST_MESSAGE,
    REQUEST_TIMEOUT,
    array_field,
    client_headers,
    error_from_response,
    is_terminal,
    new_array_id,
    normalize_url,
    parse_array,
    submit_body,
    task_id,
    transport_message,
)
from .errors import RiverConnectionError, RiverError
from .events import parse_sse
from .handles import GroupBase, HandleBase, missing_pull_blob, pulled_values
from .payload import PUSH_LIMIT
from .watching import WatchPacer, WatchSet

__all__ = ["Client", "TaskGroup", "TaskHandle", "is_terminal"]

# Environment builds (image pulls, docker commit of a whole container) take minutes.
ENV_TIMEOUT = 1800.0
ENV_EXEC_TIMEOUT = 300.0


def _env_name(name: str) -> str:
    from river_runner.containers import parse_env_name

    try:
        return parse_env_name(name)
    except ValueError as exc:
        raise RiverError(str(exc)) from None


# Kept under their old names for code that imported them from here.
_normalize_url = normalize_url
_task_id = task_id


class Client:
    """Talks to one River host. `Client()` reads RIVER_URL and RIVER_TOKEN.

    Safe to share between threads (httpx.Client is); `clone()` gives an independent one,
    e.g. for a background thread that holds an event stream open.
    """

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get("RIVER_URL")
        if not url:
            raise RiverError(NO_HOST_MESSAGE)
        self.url, url_token = normalize_url(url)
        self._token = token or url_token or os.environ.get("RIVER_TOKEN") or None
        self._api = self.url + API_PREFIX
        self.push_limit = PUSH_LIMIT
        self._http = httpx.Client(
            headers=client_headers(self._token),
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def clone(self) -> Client:
        """A new client for the same host and token, with its own connections."""
        twin = Client(self.url, self._token)
        twin.push_limit = self.push_limit
        return twin

    # -- plumbing ---------------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError) -> RiverConnectionError:
        return RiverConnectionError(transport_message(self.url, exc))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, self._api + path, **kwargs)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise error_from_response(response, method, API_PREFIX + path)
        return response

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
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

    def login(self, username: str, password: str, label: str = "notebook") -> str:
        """Trade a user name and password for a new API token (shown once: keep it)."""
        body = {"username": username, "password": password, "label": label}
        return str(self._request("POST", "/login", json=body)["token"])

    def me(self) -> dict[str, Any]:
        """The calling user: name, role, groups, quota."""
        return dict(self._request("GET", "/me")["user"])

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

    def iter_tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None, page_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every task, newest first, page by page: `tasks()` answers the newest page only;
        this follows the list's `next` cursor to the oldest."""
        params: dict[str, str] = {"limit": str(page_size)}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        while True:
            page = self._request("GET", "/tasks", params=params)
            yield from page.get("tasks", [])
            if not page.get("next"):
                return
            params["before"] = str(page["next"])

    def task(self, id: str | int) -> dict[str, Any]:
        """One task's current record."""
        return self._request("GET", f"/tasks/{task_id(id)}")["task"]

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
        image: str | None = None,
        environment: str | None = None,
        mounts: Sequence[str] | None = None,
        privileged: bool = False,
        push: Mapping[str, Any] | None = None,
        pull: Iterable[str] | None = None,
        ip_token: str | None = None,
        _array: dict[str, Any] | None = None,
    ) -> TaskHandle:
        """Queue a task: a command (argv list or shell string) or a Python `script`.

        `push={"x": x}` makes `x` a variable of the remote script; `pull=["y"]` sends the
        script's `y` back, read with `handle.result()`. Target, memory and pushed values
        are checked here first, so a typo or an unpicklable value fails before any request.
        """
        body, pull_names = submit_body(
            command,
            script=script,
            name=name,
            cores=cores,
            memory=memory,
            gpus=gpus,
            target=target,
            env=env,
            workdir=workdir,
            image=image,
            environment=environment,
            mounts=mounts,
            privileged=privileged,
            push=push,
            pull=pull,
            push_limit=self.push_limit,
            ip_token=ip_token,
        )
        if _array is not None:
            body["array"] = _array
        task = self._request("POST", "/tasks", json=body)["task"]
        return TaskHandle(self, task["id"], task, pull=pull_names)

    def submit_array(
        self, array: str | Iterable[int], *, limit: int | None = None, **options: Any
    ) -> TaskGroup:
        """Queue one task per index, at most `limit` placed at once (enforced by the host).

        `array` is `"0-31%4"` (32 tasks, 4 at a time), `"1,3,8-11"`, `"0-30:2"` or a list
        of ints. Each task sees RIVER_ARRAY_INDEX (and RIVER_ARRAY_SIZE, RIVER_ARRAY_ID).
        Options are those of `submit`. If a submission fails, those already made are
        killed and the error is raised.
        """
        indices, spec_limit = parse_array(array)
        limit = limit or spec_limit
        array_id = new_array_id()
        handles: list[TaskHandle] = []
        try:
            for index in indices:
                field = array_field(array_id, index, len(indices), limit)
                handles.append(self.submit(**options, _array=field))
        except BaseException:
            TaskGroup(self, handles).kill()
            raise
        return TaskGroup(self, handles, [str(i) for i in indices], array_id=array_id, limit=limit)

    def kill(self, id: str | int) -> dict[str, Any]:
        """Ask for a task to end: queued ones end at once, placed ones when the runner confirms."""
        return self._request("POST", f"/tasks/{task_id(id)}/kill")["task"]

    def pause(self, id: str | int) -> dict[str, Any]:
        return self._request("POST", f"/tasks/{task_id(id)}/pause")["task"]

    def resume(self, id: str | int) -> dict[str, Any]:
        return self._request("POST", f"/tasks/{task_id(id)}/resume")["task"]

    def logs(self, id: str | int, since: int = 0) -> list[dict[str, Any]]:
        """Log lines with `seq > since` (one page), each {seq, stream, text, ts}."""
        body = self._request("GET", f"/tasks/{task_id(id)}/logs", params={"since": since})
        return list(body.get("lines", []))

    def blobs(self, id: str | int) -> list[dict[str, Any]]:
        """The blobs kept with a task: [{name, size}]."""
        return list(self._request("GET", f"/tasks/{task_id(id)}/blobs").get("blobs", []))

    def get_blob(self, id: str | int, name: str) -> bytes:
        return self._send("GET", f"/tasks/{task_id(id)}/blobs/{name}").content

    def put_blob(self, id: str | int, name: str, data: bytes) -> dict[str, Any]:
        """Keep `data` with a task (at most the host's blob_max_bytes; 413 beyond)."""
        return self._request("PUT", f"/tasks/{task_id(id)}/blobs/{name}", content=data)["blob"]

    def handle(self, id: str | int) -> TaskHandle:
        """A handle for an existing task, e.g. one submitted with --detach."""
        return TaskHandle(self, task_id(id))

    # -- container environments (river_server/environments.py) -------------------------

    def environments(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/environments").get("environments", []))

    def environment(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/environments/{_env_name(name)}")["environment"]

    def create_environment(self, name: str, image: str) -> dict[str, Any]:
        body = {"name": _env_name(name), "image": image}
        return self._request("POST", "/environments", json=body, timeout=ENV_TIMEOUT)["environment"]

    def exec_environment(
        self, name: str, command: str, timeout: float = ENV_EXEC_TIMEOUT
    ) -> dict[str, Any]:
        """Run a shell command in an environment's container: {output, exit_code}."""
        return self._request(
            "POST",
            f"/environments/{_env_name(name)}/exec",
            json={"command": command, "timeout": timeout},
            timeout=timeout + 30,
        )

    def export_environment(self, name: str) -> dict[str, Any]:
        return self._request(
            "POST", f"/environments/{_env_name(name)}/export", timeout=ENV_TIMEOUT
        )["environment"]

    def delete_environment(self, name: str, tarball: bool = False) -> dict[str, Any]:
        params = {"tarball": "1"} if tarball else {}
        return self._request(
            "DELETE", f"/environments/{_env_name(name)}", params=params, timeout=ENV_TIMEOUT
        )

    # -- VPSes (river_server/vps.py) ------------------------------------------------------

    def vps_list(self, all_users: bool = False) -> list[dict[str, Any]]:
        params = {"all": "1"} if all_users else {}
        return list(self._request("GET", "/vps", params=params).get("vps", []))

    def vps_create(self, **body: Any) -> dict[str, Any]:
        """Create a VPS (image, cores, memory, gpus, target, ssh, public_key, name); with
        ssh="generate" the answer holds `private_key`, shown this once."""
        return dict(self._request("POST", "/vps", json=body)["vps"])

    def vps(self, vps_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/vps/{vps_id}")["vps"])

    def vps_action(self, vps_id: str, action: str) -> dict[str, Any]:
        """stop | restart | pause | resume | snapshot."""
        return dict(self._request("POST", f"/vps/{vps_id}/{action}", timeout=120)["vps"])

    def vps_delete(self, vps_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/vps/{vps_id}", timeout=120)

    def vps_exec(self, vps_id: str, command: list[str], detach: bool = False) -> dict[str, Any]:
        """Run a command in the VPS (no TTY): `{exit_code, output}`, or `{detached: true}`."""
        body = {"command": list(command), "detach": detach}
        return self._request("POST", f"/vps/{vps_id}/exec", json=body, timeout=120)

    def vps_start_app(self, vps_id: str, app: str, **options: Any) -> dict[str, Any]:
        """Start "jupyter" or "tensorboard" (port=, logdir=) in the VPS; the VPS, whose
        `ports` now list it with the `path` to open and the `ready_path` to poll."""
        body = {"app": app, **{k: v for k, v in options.items() if v is not None}}
        return dict(self._request("POST", f"/vps/{vps_id}/apps", json=body, timeout=120)["vps"])

    def vps_snapshots(self, vps_id: str) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/vps/{vps_id}/snapshots")["snapshots"])

    def vps_delete_snapshot(self, vps_id: str, number: int) -> list[dict[str, Any]]:
        path = f"/vps/{vps_id}/snapshots/{int(number)}"
        return list(self._request("DELETE", path, timeout=120)["snapshots"])

    def proxy_url(self, ident: str, port: int, path: str = "", absolute: bool = False) -> str:
        """The URL of a VPS's (or task's) PORT through the host's proxy."""
        form = "absolute/" if absolute else ""
        return f"{self.url}/river/proxy/{form}{ident}/{int(port)}/{path.lstrip('/')}"

    def wait_url(self, url: str, timeout: float = 60.0) -> int:
        """Poll a proxied URL until it answers with something other than 502/503/409 (the
        app is still starting); its status. Raises RiverError when the time is up."""
        deadline = time.monotonic() + timeout
        status = 0
        while time.monotonic() < deadline:
            try:
                status = self._http.get(url, timeout=5).status_code
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None
            if status not in (409, 502, 503):
                return status
            time.sleep(0.25)
        raise RiverError(f"{url} did not answer within {timeout:.0f} s (last status {status})")

    # -- overlay network (river_server/overlay.py) ---------------------------------------

    def overlay(self) -> dict[str, Any]:
        """The overlay's layout and each runner's allocation (index, VXLAN id, subnet)."""
        return self._request("GET", "/overlay")

    def reserve_ip(
        self, node: str | None = None, ttl: float | None = None, ip: str | None = None
    ) -> dict[str, Any]:
        """Hold an overlay address for `ttl` seconds (default 600). The answer has `ip` and
        the `token` (shown only now): pass it as `submit(..., ip_token=token)`."""
        body = {k: v for k, v in (("node", node), ("ttl", ttl), ("ip", ip)) if v is not None}
        return self._request("POST", "/overlay/reservations", json=body)["reservation"]

    def ip_reservations(self, all: bool = False) -> list[dict[str, Any]]:
        params = {"all": "1"} if all else {}
        body = self._request("GET", "/overlay/reservations", params=params)
        return list(body.get("reservations", []))

    def release_ip(self, id_or_token: str | int) -> dict[str, Any]:
        """Give back a reservation, by its id or its token."""
        key = str(id_or_token).strip()
        if key.startswith("rip_"):  # tokens travel in the body, never in a URL
            body = self._request("POST", "/overlay/reservations/release", json={"token": key})
        elif key.isdigit():
            body = self._request("DELETE", f"/overlay/reservations/{key}")
        else:
            raise RiverError(f"give a reservation id (a number) or its rip_... token, not {key!r}")
        return body["reservation"]

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
        params: list[tuple[str, str | int]] = [("task", task_id(t)) for t in task_ids or ()]
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
                    raise error_from_response(response, "GET", API_PREFIX + path)
                yield from parse_sse(response.iter_lines(), keepalive=keepalive)
        except httpx.TransportError as exc:
            raise self._transport_error(exc) from None

    def watch(
        self,
        handles: Sequence[TaskHandle],
        *,
        logs: bool = True,
        since: Mapping[str, int] | int = 0,
        timeout: float | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ("task", record) on each change and ("log", line) per new line of several
        tasks, each task's lines in order and once, until all are terminal.

        A task's terminal record comes after its last line. Survives dropped streams:
        reconnects with `since`, polling in between, so no line is lost or repeated.
        Raises TimeoutError past `timeout`, and RiverError if the host stays unreachable
        for UNREACHABLE_LIMIT seconds.
        """
        watch = WatchSet(handles, logs, since)
        pacer = WatchPacer(timeout)
        while not watch.done:
            if pacer.use_stream:
                try:
                    yield from self._watch_stream(watch, pacer)
                except RiverError as exc:
                    if not pacer.stream_failed(exc):
                        raise
                if watch.done:
                    return
                if pacer.reopen_now(watch):
                    continue  # a working stream ended, dropped or timed out: reopen
            pacer.check_deadline(watch.pending)
            try:
                yield from self._watch_poll(watch)
                pacer.polled()
            except RiverConnectionError:
                if pacer.unreachable_too_long():
                    raise
            if watch.done:
                return
            time.sleep(pacer.next_pause())

    def _watch_stream(
        self, watch: WatchSet, pacer: WatchPacer
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        read_timeout, refreshing = pacer.open_stream(watch)
        events = self.events(
            watch.pending, since=watch.stream_since(), keepalive=True, read_timeout=read_timeout
        )
        try:
            with contextlib.closing(events):
                for kind, data in events:
                    tail_id = watch.tail_needed(kind, data)
                    if tail_id is not None:
                        yield from self._tail(watch, tail_id)
                    event = watch.events_for(kind, data)
                    if event is not None:
                        yield event
                        if watch.done:
                            return
                    if watch.should_reopen(kind, refreshing):
                        return  # only queued tasks left: reopen with the short timeout
                    pacer.check_deadline(watch.pending)
        except RiverConnectionError:
            pacer.check_deadline(watch.pending)
            raise

    def _watch_poll(self, watch: WatchSet) -> Iterator[tuple[str, dict[str, Any]]]:
        for id in watch.pending:
            record = self.task(id)
            if watch.logs:
                yield from self._tail(watch, id)
            if watch.task(record) is not None:
                yield EVENT_TASK, record

    def _tail(self, watch: WatchSet, id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The lines of task `id` after the last one seen (lines written just before the
        end may still be on their way when the terminal record arrives)."""
        since = watch.tasks[id].last_seq
        while True:
            page = watch.lines(id, self.logs(id, since=since))
            if not page:
                return
            for line in page:
                yield EVENT_LOG, line
            since = page[-1]["seq"]


class TaskHandle(HandleBase):
    """A submitted task: its state, its output, and a way to wait for or stop it."""

    def __init__(
        self,
        client: Client,
        id: str | int,
        task: dict[str, Any] | None = None,
        pull: Sequence[str] = (),
    ) -> None:
        super().__init__(id, task, pull)
        self.client = client

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
        if self.last and is_terminal(self.last.get("state")):
            return self.last
        for _kind, _data in self.watch(logs=False, timeout=timeout):
            pass
        return self.last or {}

    def stream(self, since: int = 0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield output lines (stdout/stderr) in order, each once, live, until the task is
        terminal. (Host notes on the "river" stream are left out; `logs()` has them.)"""
        for kind, data in self.watch(since=since, timeout=timeout):
            if kind == EVENT_LOG and data.get("stream") != LOG_STREAM_RIVER:
                yield data

    def watch(
        self, *, logs: bool = True, since: int = 0, timeout: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ("task", record) on each change and ("log", line) per new line, in order.

        Ends after the terminal record, which comes after the task's last line (see
        Client.watch for reconnection and timeouts).
        """
        return self.client.watch([self], logs=logs, since=since, timeout=timeout)

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The variables the task pulled (`pull=[...]` / `--pull`), once it has finished.

        Waits up to `timeout` seconds. Raises PayloadError naming the variable when one
        could not be sent or loaded, and RiverError when the task did not complete.
        """
        final = self.wait(timeout)
        blob: bytes | None = None
        try:
            blob = self.client.get_blob(self.id, PULL_BLOB)
        except RiverError as exc:
            missing_pull_blob(self.id, exc)
        return pulled_values(self, final, blob)


class TaskGroup(GroupBase[TaskHandle]):
    """Several tasks handled together: an array (`submit_array`) or one task per target."""

    def __init__(
        self,
        client: Client,
        handles: Sequence[TaskHandle],
        labels: Sequence[str] | None = None,
        *,
        array_id: str | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(handles, labels, array_id)
        self.client = client
        self.limit = limit

    def refresh(self) -> dict[str, str | None]:
        for handle in self.handles:
            handle.info()
        return self.states()

    def watch(
        self, *, logs: bool = True, timeout: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        return self.client.watch(self.handles, logs=logs, timeout=timeout)

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        for _ in self.watch(logs=False, timeout=timeout):
            pass
        return [h.last or {} for h in self.handles]

    def kill(self) -> list[dict[str, Any]]:
        """Kill every member that has not ended (queued ones end at once)."""
        out = []
        for handle in self.kill_order():
            if is_terminal((handle.last or {}).get("state")):
                continue
            try:
                out.append(handle.kill())
            except RiverError as exc:
                if exc.status != 409:  # 409: it ended meanwhile
                    raise
        return out

    def results(self, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """label -> pulled variables of each member (see TaskHandle.result)."""
        self.wait(timeout)
        return {label: h.result() for label, h in zip(self.labels, self.handles, strict=True)}
