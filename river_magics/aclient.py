"""The asyncio client: the same methods as `Client`, awaited (httpx.AsyncClient underneath).

    async with AsyncClient(url, token) as client:
        handle = await client.submit(script="x = 6 * 7", pull=["x"])
        async for line in handle.stream():
            print(line["text"])
        print(await handle.status, await handle.result())

Every method is written once in river_magics/core.py and task_handles.py (shared with the
blocking `Client`); this module keeps only the asyncio I/O.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx

from .core import UPLOAD_TIMEOUT, ClientCore, StreamedResponse
from .dataplane import CHUNK
from .progress import Progress
from .rawget import Download, direct
from .task_handles import GroupCore, HandleCore

__all__ = ["AsyncClient", "AsyncTaskGroup", "AsyncTaskHandle"]


class AsyncTaskHandle(HandleCore):
    """A submitted task, for asyncio code: `await handle.status`, `await handle.wait()` ..."""


class AsyncTaskGroup(GroupCore[AsyncTaskHandle]):
    """Several tasks handled together (see TaskGroup)."""


class AsyncClient(ClientCore):
    """Talks to one River host from asyncio code. `AsyncClient()` reads RIVER_URL/RIVER_TOKEN."""

    _handle_class = AsyncTaskHandle
    _group_class = AsyncTaskGroup
    _http: httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._release_lease)  # bound tasks end with a clean close
        await self._http.aclose()

    close = aclose

    # -- asyncio I/O ----------------------------------------------------------------------

    def _open_http(self, headers: dict[str, str], timeout: httpx.Timeout) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=headers, timeout=timeout)

    async def _io_request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return await self._http.request(method, url, **kwargs)

    @asynccontextmanager
    async def _io_stream(
        self, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[StreamedResponse]:
        async with self._http.stream(method, url, **kwargs) as response:
            if response.status_code >= 400:
                await response.aread()
            yield response, response.aiter_lines()

    async def _io_upload(
        self, url: str, parts: Iterable[bytes | memoryview], headers: dict[str, str]
    ) -> httpx.Response:
        async def stream() -> AsyncIterator[bytes]:
            for part in parts:  # a memoryview is sent as it is: no copy of the buffers
                yield cast(bytes, part)

        return await self._http.put(url, content=stream(), headers=headers, timeout=UPLOAD_TIMEOUT)

    async def _io_download(self, url: str, progress: Progress) -> tuple[httpx.Response, memoryview]:
        # On a raw socket straight into one buffer (river_magics/rawget.py), received in a
        # thread of its own; a proxy from the environment keeps httpx's path.
        if direct(url):
            request = self._http.build_request("GET", url)
            return await _in_thread(Download(request, UPLOAD_TIMEOUT), progress)
        async with self._http.stream("GET", url, timeout=UPLOAD_TIMEOUT) as response:
            if response.status_code >= 400:
                await response.aread()
                return response, memoryview(bytearray())
            data = bytearray(int(response.headers.get("Content-Length") or 0))
            progress.total = len(data)
            at = 0
            async for chunk in response.aiter_raw(CHUNK):
                data[at : at + len(chunk)] = chunk
                at += len(chunk)
                progress.add(len(chunk))
            del data[at:]
            return response, memoryview(data)

    async def _io_sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _LoopProgress:
    """Progress reported from the download's thread, shown from the event loop's."""

    def __init__(self, progress: Progress, loop: asyncio.AbstractEventLoop) -> None:
        self.progress, self.loop = progress, loop

    @property
    def total(self) -> int:
        return self.progress.total

    @total.setter
    def total(self, size: int) -> None:
        self.progress.total = size

    def add(self, size: int) -> None:
        self.loop.call_soon_threadsafe(self.progress.add, size)


async def _in_thread(download: Download, progress: Progress) -> tuple[httpx.Response, memoryview]:
    """Run the blocking download in its own thread (not the loop's executor: it may run
    for minutes). A cancelled caller cuts the connection and waits for the thread to end,
    so neither the socket nor the thread outlives the cancellation."""
    loop = asyncio.get_running_loop()
    outcome: list[tuple[httpx.Response, memoryview] | BaseException] = []
    finished = asyncio.Event()

    def work() -> None:
        try:
            outcome.append(download.run(_LoopProgress(progress, loop)))
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome.append(exc)
        finally:
            loop.call_soon_threadsafe(finished.set)

    thread = threading.Thread(target=work, name="river-download", daemon=True)
    thread.start()
    try:
        await finished.wait()
    except asyncio.CancelledError:
        download.cancel()
        await asyncio.shield(finished.wait())
        raise
    finally:
        thread.join()  # it has set `finished`: its last step, so this returns at once
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result
