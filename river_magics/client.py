"""The blocking Python client for the River host (REST + server-sent events).

Plain blocking httpx on purpose: inside a Jupyter kernel an asyncio loop already runs, so
`asyncio.run` is unavailable, while a blocking socket read is interrupted cleanly by the
kernel's interrupt (KeyboardInterrupt), which is what lets a waiting cell cancel its task.

Every method is written once in river_magics/core.py and task_handles.py (shared with
`AsyncClient`); this module keeps only the blocking I/O (see river_magics/bridge.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx

from .bridge import Blocking
from .common import is_terminal, normalize_url, task_id
from .core import ENV_EXEC_TIMEOUT, ENV_TIMEOUT, UPLOAD_TIMEOUT, ClientCore, StreamedResponse
from .dataplane import CHUNK
from .progress import Progress
from .rawget import Download, direct
from .task_handles import GroupCore, HandleCore

__all__ = ["ENV_EXEC_TIMEOUT", "ENV_TIMEOUT", "Client", "TaskGroup", "TaskHandle", "is_terminal"]

# Kept under their old names for code that imported them from here.
_normalize_url = normalize_url
_task_id = task_id


async def _lines(lines: Iterator[str]) -> AsyncGenerator[str, None]:
    for line in lines:
        yield line


class TaskHandle(Blocking, HandleCore):
    """A submitted task: `handle.status`, `handle.wait()`, `handle.logs()`, `handle.kill()`."""


class TaskGroup(Blocking, GroupCore[TaskHandle]):
    """Several tasks handled together: an array (`submit_array`) or one task per target."""


class Client(Blocking, ClientCore):
    """Talks to one River host. `Client()` reads RIVER_URL and RIVER_TOKEN.

    Safe to share between threads (httpx.Client is); `clone()` gives an independent one,
    e.g. for a background thread that holds an event stream open.
    """

    _handle_class = TaskHandle
    _group_class = TaskGroup
    _http: httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._release_lease()  # bound tasks end with a clean close, not a lease later
        self._http.close()

    # -- blocking I/O: async in form only, never suspends ---------------------------------

    def _open_http(self, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(headers=headers, timeout=timeout)

    async def _io_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._http.request(method, url, **kwargs)

    @asynccontextmanager
    async def _io_stream(
        self, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[StreamedResponse]:
        with self._http.stream(method, url, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
            lines = _lines(response.iter_lines())
            try:
                yield response, lines
            finally:
                await lines.aclose()

    async def _io_sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def _io_upload(
        self, url: str, parts: Iterable[bytes | memoryview], headers: dict[str, str]
    ) -> httpx.Response:
        # An interrupt here closes the connection: the host drops the partial upload.
        # httpx sends each part as it is (a memoryview too): no copy of the array's buffers.
        content = cast(Iterable[bytes], parts)
        return self._http.put(url, content=content, headers=headers, timeout=UPLOAD_TIMEOUT)

    async def _io_download(self, url: str, progress: Progress) -> tuple[httpx.Response, memoryview]:
        # On a raw socket straight into one buffer (river_magics/rawget.py); a proxy from
        # the environment keeps httpx's path. An interrupt closes the connection.
        if direct(url):
            request = self._http.build_request("GET", url)
            return Download(request, UPLOAD_TIMEOUT).run(progress)
        with self._http.stream("GET", url, timeout=UPLOAD_TIMEOUT) as response:
            if response.status_code >= 400:
                response.read()
                return response, memoryview(bytearray())
            data = bytearray(int(response.headers.get("Content-Length") or 0))
            progress.total = len(data)
            at = 0
            for chunk in response.iter_raw(CHUNK):
                data[at : at + len(chunk)] = chunk
                at += len(chunk)
                progress.add(len(chunk))
            del data[at:]
            return response, memoryview(data)
