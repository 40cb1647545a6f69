"""Hashing and writing an upload's body in a thread of its own, with bounded memory.

Why: sha256 and the file writes of a GiB are seconds of CPU; done in `data_received` they
ran on the host's event loop, which then neither read the socket meanwhile nor answered
anything else. Here the loop only receives (and counts) the body's pieces; one thread per
upload hashes and writes them (both release the GIL), so receiving and hashing overlap on
two cores. At most `limit` bytes wait in between: past that, `put` returns a future that
Tornado awaits before reading more of the body (its flow control for `data_received`), so
a client faster than the disk fills the socket's buffers, not the host's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

LIMIT = 16 * 1024 * 1024


class SinkError(Exception):
    """What the writer thread raised (its `cause`), surfaced on the event loop."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class UploadSink:
    """Feeds chunks to `absorb` in a worker thread; `close` waits until all are absorbed."""

    def __init__(self, absorb: Callable[[bytes], None], limit: int = LIMIT) -> None:
        self._absorb = absorb
        self._limit = limit
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting_bytes = 0
        self._wake: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._dropped = False
        self._done: asyncio.Future[None] = self._loop.create_future()
        threading.Thread(target=self._run, name="river-upload", daemon=True).start()

    def put(self, chunk: bytes) -> asyncio.Future[None] | None:
        """Queue a chunk; a future to await when `limit` bytes are already waiting."""
        if self._error is not None:
            raise SinkError(self._error)
        with self._lock:
            self._waiting_bytes += len(chunk)
            if self._waiting_bytes >= self._limit:
                self._wake = self._loop.create_future()
        self._queue.put(chunk)
        return self._wake

    async def close(self) -> None:
        """Wait until every chunk is absorbed; raise SinkError if one failed."""
        self._queue.put(None)
        await self._done
        if self._error is not None:
            raise SinkError(self._error)

    def drop(self) -> None:
        """Stop absorbing (the upload is abandoned); the thread exits soon after."""
        self._dropped = True
        self._queue.put(None)

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                if self._dropped or self._error is not None:
                    continue  # drain without work: the caller stops feeding soon
                try:
                    self._absorb(chunk)
                except BaseException as exc:  # noqa: BLE001 - reported on the loop
                    self._error = exc
                self._taken(len(chunk))
        finally:
            self._call(self._finish)

    def _taken(self, size: int) -> None:
        with self._lock:
            self._waiting_bytes -= size
            wake = self._wake
            if wake is None or (self._waiting_bytes >= self._limit // 2 and self._error is None):
                return
            self._wake = None
        self._call(lambda: _resolve(wake))

    def _finish(self) -> None:
        if self._wake is not None:
            _resolve(self._wake)
        _resolve(self._done)

    def _call(self, fn: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed (host shutting down)
            self._loop.call_soon_threadsafe(fn)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
