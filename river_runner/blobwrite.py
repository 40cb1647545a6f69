"""A blob received from a socket into a file: one writer thread, bounded memory, one pass.

Why this shape (docs/performance.md, "The runner's fetch streamed into its cache" and
"Runner legs on raw sockets"): the receiving thread `recv_into`s one of a few reused 4 MiB
buffers straight from the socket (no per-chunk `bytes`, no joins, no event loop) and
queues each full buffer to one long-lived thread that hashes it and writes it (both
release the GIL) while the next buffer fills. At most `depth` buffers exist, so memory
stays bounded whatever the blob's size; a full pipeline makes the receiver wait for the
disk.

No fsync: the caller publishes the file (rename) only after the digest matched, and a cache
entry is re-fetchable; a power loss can at worst shorten a published file, which the
cache's size check on a hit catches (river_runner/data.py). Syncing a GiB costs seconds.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from pathlib import Path

from river_runner.digest import hasher

BUFFER = 4 * 1024 * 1024
DEPTH = 4  # buffers in flight: 16 MiB at most per fetch
WAIT = 300.0  # the most the receiver waits for a free buffer (the disk)


class SinkError(OSError):
    """Writing the file failed (a full or gone disk), as opposed to the network."""

    @classmethod
    def of(cls, exc: OSError) -> SinkError:
        return exc if isinstance(exc, SinkError) else cls(exc.errno, exc.strerror)


class FileSink:
    """Write and hash (BLAKE3) buffers into `path` (created, 0600) in a thread of its own."""

    def __init__(self, path: Path, size_hint: int | None = None, depth: int = DEPTH) -> None:
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise SinkError.of(exc) from None
        if size_hint:
            # Reserve the blocks at once: the file system need not allocate per write. Not
            # supported here (or no room)? The writes will say so.
            with contextlib.suppress(OSError):
                os.posix_fallocate(self._fd, 0, size_hint)
        self._hash = hasher()
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(depth):
            self._free.put(bytearray(BUFFER))
        self._full: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: OSError | None = None
        self._cancelled = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="river-blob-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The writer thread: hash and write each full buffer, then hand it back."""
        written = 0
        try:
            while (item := self._full.get()) is not None:
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
                self._free.put(buffer)
            if self._error is None and not self._cancelled:
                os.ftruncate(self._fd, written)  # a reservation past what came is not data
        except OSError as exc:
            self._error = exc
        finally:
            os.close(self._fd)

    def _take(self) -> bytearray:
        """A free buffer (waiting for the disk); the writer's error, if it had one."""
        try:
            buffer = self._free.get(timeout=WAIT)
        except queue.Empty:
            raise SinkError(0, "the disk took no data for minutes") from None
        if self._error is not None:
            raise SinkError.of(self._error)
        return buffer

    def write(self, data: bytes | memoryview) -> None:
        """Queue `data` (copied into buffers): for callers that hold bytes, not a socket."""
        view = memoryview(data)
        while view:
            buffer = self._take()
            take = min(len(view), BUFFER)
            buffer[:take] = view[:take]
            self._full.put((buffer, take))
            view = view[take:]

    def fill_from(
        self, first: bytes, sock: socket.socket, size: int, counted: list[int] | None = None
    ) -> int:
        """`first` and then the socket's bytes, up to `size` in all, into the file; the
        bytes received (fewer when the peer closed early). `counted[0]` grows as they come."""
        got, filled = 0, 0
        buffer = self._take()
        pending = memoryview(first)[:size]
        while got < size:
            if pending:
                take = min(len(pending), BUFFER - filled)
                buffer[filled : filled + take] = pending[:take]
                pending = pending[take:]
            else:
                want = min(BUFFER - filled, size - got)
                take = sock.recv_into(memoryview(buffer)[filled:], want)
                if take == 0:
                    break
            filled += take
            got += take
            if counted is not None:
                counted[0] += take
            if filled == BUFFER:
                self._full.put((buffer, filled))
                buffer, filled = self._take(), 0
        if filled:
            self._full.put((buffer, filled))
        else:
            self._free.put(buffer)
        return got

    def finish(self) -> str:
        """Write what is queued, wait for the thread; the BLAKE3 of everything written."""
        self._ended = True
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise SinkError.of(self._error)
        return self._hash.hexdigest()

    def abort(self) -> None:
        """Stop without waiting (a cut-off fetch): the thread drops what is queued and
        closes the file; the caller removes it. Nothing once finished."""
        if self._ended:
            return
        self._ended = self._cancelled = True
        self._full.put(None)
