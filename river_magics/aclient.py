"""The asyncio twin of `Client`: the same methods, awaited (httpx.AsyncClient underneath).

    async with AsyncClient(url, token) as client:
        handle = await client.submit(script="x = 6 * 7", pull=["x"])
        async for line in handle.stream():
            print(line["text"])
        print(await handle.status, await handle.result())

Request bodies, array specs, pickling and the watch rules come from river_magics.common,
so both clients behave the same; only the I/O differs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
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

__all__ = ["AsyncClient", "AsyncTaskGroup", "AsyncTaskHandle"]


async def _aparse_sse(lines: AsyncIterator[str], keepalive: bool) -> AsyncIterator[tuple[str, Any]]:
    """parse_sse over an async line source (buffered per event, so the rules are shared)."""
    buffer: list[str] = []
    async for line in lines:
        buffer.append(line)
        if line.rstrip("\r\n") == "" or (line.startswith(":") and len(buffer) == 1):
            for event in parse_sse(buffer, keepalive=keepalive):
                yield event
            buffer = []


class AsyncClient:
    """Talks to one River host from asyncio code. `AsyncClient()` reads RIVER_URL/RIVER_TOKEN."""

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        url = url or os.environ.get("RIVER_URL")
        if not url:
            raise RiverError(NO_HOST_MESSAGE)
        self.url, url_token = normalize_url(url)
        self._token = token or url_token or os.environ.get("RIVER_TOKEN") or None
        self._api = self.url + API_PREFIX
        self.push_limit = PUSH_LIMIT
        self._http = httpx.AsyncClient(
            headers=client_headers(self._token),
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
        )

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    close = aclose

    # -- plumbing ---------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, self._api + path, **kwargs)
        except httpx.TransportError as exc:
            raise RiverConnectionError(transport_message(self.url, exc)) from None
        if response.status_code >= 400:
            raise error_from_response(response, method, API_PREFIX + path)
        return response

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, **kwargs)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise RiverError(
                f"unexpected answer from {self.url}{API_PREFIX}{path} (not JSON): "
                "is this a River host?",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise RiverError(f"unexpected answer from {self.url}{API_PREFIX}{path}: {body!r}")
        return body

    # -- REST -------------------------------------------------------------------------
    async def nodes(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "/nodes")).get("nodes", []))

    async def tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        return list((await self._request("GET", "/tasks", params=params)).get("tasks", []))

    async def iter_tasks(
        self, all: bool = False, state: str | Iterable[str] | None = None, page_size: int = 1000
    ) -> AsyncIterator[dict[str, Any]]:
        """Every task, newest first, page by page: `tasks()` answers the newest page only;
        this follows the list's `next` cursor to the oldest."""
        params: dict[str, str] = {"limit": str(page_size)}
        if all:
            params["all"] = "1"
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        while True:
            page = await self._request("GET", "/tasks", params=params)
            for task in page.get("tasks", []):
                yield task
            if not page.get("next"):
                return
            params["before"] = str(page["next"])

    async def task(self, id: str | int) -> dict[str, Any]:
        return (await self._request("GET", f"/tasks/{task_id(id)}"))["task"]

    async def submit(
        self,
        command: str | Sequence[str] | None = None,
        *,
        _array: dict[str, Any] | None = None,
        **options: Any,
    ) -> AsyncTaskHandle:
        """Queue a task; the options are those of Client.submit (push, pull included)."""
        body, pull = submit_body(command, push_limit=self.push_limit, **options)
        if _array is not None:
            body["array"] = _array
        task = (await self._request("POST", "/tasks", json=body))["task"]
        return AsyncTaskHandle(self, task["id"], task, pull=pull)

    async def submit_array(
        self, array: str | Iterable[int], *, limit: int | None = None, **options: Any
    ) -> AsyncTaskGroup:
        """One task per index, at most `limit` at once (see Client.submit_array)."""
        indices, spec_limit = parse_array(array)
        limit = limit or spec_limit
        array_id = new_array_id()
        handles: list[AsyncTaskHandle] = []
        try:
            for index in indices:
                field = array_field(array_id, index, len(indices), limit)
                handles.append(await self.submit(**options, _array=field))
        except BaseException:
            await AsyncTaskGroup(self, handles).kill()
            raise
        return AsyncTaskGroup(self, handles, [str(i) for i in indices], array_id=array_id)

    async def kill(self, id: str | int) -> dict[str, Any]:
        return (await self._request("POST", f"/tasks/{task_id(id)}/kill"))["task"]

    async def pause(self, id: str | int) -> dict[str, Any]:
        return (await self._request("POST", f"/tasks/{task_id(id)}/pause"))["task"]

    async def resume(self, id: str | int) -> dict[str, Any]:
        return (await self._request("POST", f"/tasks/{task_id(id)}/resume"))["task"]

    async def logs(self, id: str | int, since: int = 0) -> list[dict[str, Any]]:
        body = await self._request("GET", f"/tasks/{task_id(id)}/logs", params={"since": since})
        return list(body.get("lines", []))

    async def blobs(self, id: str | int) -> list[dict[str, Any]]:
        return list((await self._request("GET", f"/tasks/{task_id(id)}/blobs")).get("blobs", []))

    async def get_blob(self, id: str | int, name: str) -> bytes:
        return (await self._send("GET", f"/tasks/{task_id(id)}/blobs/{name}")).content

    async def put_blob(self, id: str | int, name: str, data: bytes) -> dict[str, Any]:
        path = f"/tasks/{task_id(id)}/blobs/{name}"
        return (await self._request("PUT", path, content=data))["blob"]

    def handle(self, id: str | int) -> AsyncTaskHandle:
        return AsyncTaskHandle(self, task_id(id))

    # -- overlay network (see Client) ---------------------------------------------------
    async def overlay(self) -> dict[str, Any]:
        return await self._request("GET", "/overlay")

    async def reserve_ip(
        self, node: str | None = None, ttl: float | None = None, ip: str | None = None
    ) -> dict[str, Any]:
        body = {k: v for k, v in (("node", node), ("ttl", ttl), ("ip", ip)) if v is not None}
        return (await self._request("POST", "/overlay/reservations", json=body))["reservation"]

    async def ip_reservations(self, all: bool = False) -> list[dict[str, Any]]:
        params = {"all": "1"} if all else {}
        body = await self._request("GET", "/overlay/reservations", params=params)
        return list(body.get("reservations", []))

    async def release_ip(self, id_or_token: str | int) -> dict[str, Any]:
        key = str(id_or_token).strip()
        if key.startswith("rip_"):
            path, kwargs = "/overlay/reservations/release", {"json": {"token": key}}
            body = await self._request("POST", path, **kwargs)
        elif key.isdigit():
            body = await self._request("DELETE", f"/overlay/reservations/{key}")
        else:
            raise RiverError(f"give a reservation id (a number) or its rip_... token, not {key!r}")
        return body["reservation"]

    # -- events -----------------------------------------------------------------------
    async def events(
        self,
        task_ids: Iterable[str | int] | None = None,
        since: int = 0,
        all_tasks: bool = False,
        *,
        keepalive: bool = False,
        read_timeout: float = EVENTS_READ_TIMEOUT,
    ) -> AsyncIterator[tuple[str, Any]]:
        """Async iterator of `(kind, data)` from the event stream (see Client.events)."""
        params: list[tuple[str, str | int]] = [("task", task_id(t)) for t in task_ids or ()]
        if since:
            params.append(("since", since))
        if all_tasks:
            params.append(("tasks", "all"))
        timeout = httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT, read=read_timeout)
        path = "/events"
        try:
            async with self._http.stream(
                "GET",
                self._api + path,
                params=params,
                headers={"Accept": "text/event-stream"},
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response, "GET", API_PREFIX + path)
                async for event in _aparse_sse(response.aiter_lines(), keepalive):
                    yield event
        except httpx.TransportError as exc:
            raise RiverConnectionError(transport_message(self.url, exc)) from None

    async def watch(
        self,
        handles: Sequence[AsyncTaskHandle],
        *,
        logs: bool = True,
        since: Mapping[str, int] | int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Async twin of Client.watch: ordered, deduplicated, reconnecting."""
        watch = WatchSet(handles, logs, since)
        pacer = WatchPacer(timeout)
        while not watch.done:
            if pacer.use_stream:
                try:
                    async for event in self._watch_stream(watch, pacer):
                        yield event
                except RiverError as exc:
                    if not pacer.stream_failed(exc):
                        raise
                if watch.done:
                    return
                if pacer.reopen_now(watch):
                    continue
            pacer.check_deadline(watch.pending)
            try:
                async for event in self._watch_poll(watch):
                    yield event
                pacer.polled()
            except RiverConnectionError:
                if pacer.unreachable_too_long():
                    raise
            if watch.done:
                return
            await asyncio.sleep(pacer.next_pause())

    async def _watch_stream(
        self, watch: WatchSet, pacer: WatchPacer
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        read_timeout, refreshing = pacer.open_stream(watch)
        events = self.events(
            watch.pending, since=watch.stream_since(), keepalive=True, read_timeout=read_timeout
        )
        try:
            async for kind, data in events:
                tail_id = watch.tail_needed(kind, data)
                if tail_id is not None:
                    async for event in self._tail(watch, tail_id):
                        yield event
                event = watch.events_for(kind, data)
                if event is not None:
                    yield event
                    if watch.done:
                        return
                if watch.should_reopen(kind, refreshing):
                    return
                pacer.check_deadline(watch.pending)
        except RiverConnectionError:
            pacer.check_deadline(watch.pending)
            raise
        finally:
            await events.aclose()

    async def _watch_poll(self, watch: WatchSet) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for id in watch.pending:
            record = await self.task(id)
            if watch.logs:
                async for event in self._tail(watch, id):
                    yield event
            if watch.task(record) is not None:
                yield EVENT_TASK, record

    async def _tail(self, watch: WatchSet, id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        since = watch.tasks[id].last_seq
        while True:
            page = watch.lines(id, await self.logs(id, since=since))
            if not page:
                return
            for line in page:
                yield EVENT_LOG, line
            since = page[-1]["seq"]


class AsyncTaskHandle(HandleBase):
    """A submitted task, for asyncio code: `await handle.status`, `await handle.wait()` ..."""

    def __init__(
        self,
        client: AsyncClient,
        id: str | int,
        task: dict[str, Any] | None = None,
        pull: Sequence[str] = (),
    ) -> None:
        super().__init__(id, task, pull)
        self.client = client

    @property
    def status(self) -> Awaitable[str]:
        """`await handle.status`: the task's state now (one request)."""

        async def fetch() -> str:
            return (await self.info())["state"]

        return fetch()

    async def info(self) -> dict[str, Any]:
        self.last = await self.client.task(self.id)
        return self.last

    async def kill(self) -> dict[str, Any]:
        self.last = await self.client.kill(self.id)
        return self.last

    async def pause(self) -> dict[str, Any]:
        self.last = await self.client.pause(self.id)
        return self.last

    async def resume(self) -> dict[str, Any]:
        self.last = await self.client.resume(self.id)
        return self.last

    async def logs(self, since: int = 0) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        while True:
            page = [x for x in await self.client.logs(self.id, since=since) if x["seq"] > since]
            if not page:
                return lines
            lines.extend(page)
            since = page[-1]["seq"]

    def watch(
        self, *, logs: bool = True, since: int = 0, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self.client.watch([self], logs=logs, since=since, timeout=timeout)

    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if self.last and is_terminal(self.last.get("state")):
            return self.last
        async for _ in self.watch(logs=False, timeout=timeout):
            pass
        return self.last or {}

    async def stream(
        self, since: int = 0, timeout: float | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Output lines (stdout/stderr) in order, each once, live, until the task ends."""
        async for kind, data in self.watch(since=since, timeout=timeout):
            if kind == EVENT_LOG and data.get("stream") != LOG_STREAM_RIVER:
                yield data

    async def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The pulled variables once the task has finished (see TaskHandle.result)."""
        final = await self.wait(timeout)
        blob: bytes | None = None
        try:
            blob = await self.client.get_blob(self.id, PULL_BLOB)
        except RiverError as exc:
            missing_pull_blob(self.id, exc)
        return pulled_values(self, final, blob)


class AsyncTaskGroup(GroupBase[AsyncTaskHandle]):
    """Several tasks handled together (see TaskGroup)."""

    def __init__(
        self,
        client: AsyncClient,
        handles: Sequence[AsyncTaskHandle],
        labels: Sequence[str] | None = None,
        *,
        array_id: str | None = None,
    ) -> None:
        super().__init__(handles, labels, array_id)
        self.client = client

    def watch(
        self, *, logs: bool = True, timeout: float | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        return self.client.watch(self.handles, logs=logs, timeout=timeout)

    async def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        async for _ in self.watch(logs=False, timeout=timeout):
            pass
        return [h.last or {} for h in self.handles]

    async def kill(self) -> list[dict[str, Any]]:
        out = []
        for handle in self.kill_order():
            if is_terminal((handle.last or {}).get("state")):
                continue
            try:
                out.append(await handle.kill())
            except RiverError as exc:
                if exc.status != 409:
                    raise
        return out

    async def results(self, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        await self.wait(timeout)
        return {label: await h.result() for label, h in zip(self.labels, self.handles, strict=True)}
