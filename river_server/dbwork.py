"""Database work off Tornado's event loop.

The host's services are synchronous SQLAlchemy code. Run on the loop, every query stalls
every event stream, heartbeat and request of the host for its round trip (milliseconds
each on PostgreSQL over a network). So the loop hands database work to threads and awaits
it (docs/design-decisions.md, "Database work off the event loop"):

- one *writer* thread runs everything that may change rows, one unit of work at a time:
  exactly the serial order the loop gave before, so a terminal state stays final without
  row locks, and SQLite's single writer never sees two writers of ours;
- a small *reader* pool (the engine's pool size less the writer's connection) runs pure
  reads (lists, lookups, stream backlogs), which need no order among themselves.

State that lives on the loop (event subscriber queues, dispatcher wake-ups, launch tasks)
is reached from a worker only through `call_on_loop`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


class DbWork:
    """The writer thread, the reader pool, and a way back onto the loop."""

    def __init__(self, readers: int = 4) -> None:
        self.readers = max(1, readers)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="river-db-write")
        self._reader = ThreadPoolExecutor(self.readers, thread_name_prefix="river-db-read")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remember the host's loop (called from it, at start or on first use)."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def on_loop(self) -> bool:
        """True on the loop's thread, or when no loop is known (tests, start-up)."""
        return self._loop_thread is None or threading.get_ident() == self._loop_thread

    def call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop: now if already there, else as its next callback
        (callbacks from one thread keep their order)."""
        if self.on_loop() or self._loop is None:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the writer thread: it may change rows."""
        return await self._run(self._writer, fn, args, kwargs)

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on a reader thread: it must not change rows."""
        return await self._run(self._reader, fn, args, kwargs)

    async def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[..., T], args: tuple, kwargs: dict
    ) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self.bind(loop)
        return await loop.run_in_executor(pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Let queued work finish (a transition must not be cut in half), then stop."""
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)


def pool_readers(engine: Any) -> int:
    """Reader threads matched to the engine's connection pool: the writer holds one
    connection, readers may hold the rest, so no thread waits on the pool itself."""
    size = getattr(engine.pool, "size", None)
    total = size() if callable(size) else 5
    return max(1, int(total) - 1)
