"""A blob streamed from the network into a file: one writer thread, bounded memory, one pass.

Why this shape (docs/performance.md, "The runner's fetch streamed into its cache"): the
fetch of a GiB used to join 4 MiB batches of the HTTP body's 64 KiB pieces and hand each
batch to a fresh worker-thread call, awaiting the previous one first, so receiving and
writing took turns. Here the event loop copies each piece once into one of a few reused
4 MiB buffers (`readinto`-style: no joins, no allocation per chunk) and queues the full
buffer to one long-lived thread that hashes it and writes it (both release the GIL), while
the loop fills the next buffer. At most `depth` buffers exist, so memory stays bounded
whatever the blob's size; a full pipeline makes the loop wait for the disk.

No fsync: the caller publishes the file (rename) only after the digest matched, and a cache
entry is re-fetchable; a power loss can at worst shorten a published file, which the
cache's size check on a hit catches (river_runner/data.py). Syncing a GiB costs seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from pathlib import Path

BUFFER = 4 * 1024 * 1024
DEPTH = 4  # buffers in flight: 16 MiB at most per fetch


class BlobWriter:
    """Write and sha256 a stream of chunks into `path` (created, 0600) from the event loop."""

    def __init__(self, path: Path, size_hint: int | None = None, depth: int = DEPTH) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if size_hint:
            # Reserve the blocks at once: the file system need not allocate per write. Not
            # supported here (or no room)? The writes will say so.
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._fd, 0, size_hint)
        self._hash = hashlib.sha256()
        self._free: list[bytearray] = [bytearray(BUFFER) for _ in range(depth)]
        self._room = asyncio.Semaphore(depth - 1)  # one buffer is always being filled
        self._queue: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self._cancelled = False
        self._ended = False
        self._buffer = self._free.pop()
        self._filled = 0
        self.size = 0
        self._thread = threading.Thread(target=self._run, name="river-blob-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The writer thread: hash and write each full buffer, then hand it back."""
        written = 0
        try:
            while (item := self._queue.get()) is not None:
                buffer, length = item
                if self._error is None and not self._cancelled:
                    view = memoryview(buffer)[:length]
                    try:
                        self._hash.update(view)
                        while view:
                            view = view[os.write(self._fd, view) :]
                        written += length
                    except OSError as exc:
                        self._error = exc
                with contextlib.suppress(RuntimeError):  # the loop closed (runner stopping)
                    self._loop.call_soon_threadsafe(self._give_back, buffer)
            if self._error is None and not self._cancelled:
                os.ftruncate(self._fd, written)  # a reservation past what came is not data
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def _give_back(self, buffer: bytearray) -> None:
        self._free.append(buffer)
        self._room.release()

    async def _send(self) -> None:
        """Queue the buffer being filled and take a free one (waiting for the disk)."""
        self._queue.put((self._buffer, self._filled))
        await self._room.acquire()
        self._buffer, self._filled = self._free.pop(), 0
        if self._error is not None:
            raise self._error

    async def write(self, chunk: bytes) -> None:
        view, self.size = memoryview(chunk), self.size + len(chunk)
        while view:
            take = min(len(view), BUFFER - self._filled)
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == BUFFER:
                await self._send()

    async def finish(self) -> str:
        """Write what is left, wait for the thread; the sha256 of everything written."""
        self._ended = True
        if self._filled:
            self._queue.put((self._buffer, self._filled))
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop without waiting (a cancelled fetch): the thread drops what is queued and
        closes the file; the caller removes it. Nothing once finished."""
        if self._ended:
            return
        self._ended = self._cancelled = True
        self._queue.put(None)
