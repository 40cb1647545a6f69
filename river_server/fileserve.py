"""Serving a blob's file as a response body: `os.sendfile` in a worker thread.

Why: a GiB served by reading 1 MiB at a time on the event loop and awaiting a flush per
chunk costs the host ~1,000 loop wake-ups, a copy into Python and one out of it per MiB,
all on the one thread that also answers every other request and heartbeat. `sendfile`
moves the bytes from the page cache to the socket in the kernel and releases the GIL.

How: Tornado writes the head (its headers, Jupyter's, `Connection: close`), then the
handler `detach`es the stream (Tornado's public way to take a connection over, as
websockets do) and a thread sends the body on a duplicate of the socket's descriptor, so a
peer that goes away (Tornado may close its own descriptor then) never leaves the thread
writing to a reused descriptor. Tornado does not log a detached request, so the access-log
line (with the bytes sent) is written here when the body ends (river_server/access_log.py). The connection is closed after the body: one fewer
keep-alive connection per download, next to a body of MiBs. A stalled reader is dropped
after `STALL_SECONDS` without progress. TLS streams (or any output transform) cannot be
sendfile'd: they get the loop-side path with 4 MiB reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tornado import iostream, web

from river_server.access_log import log_sent

CHUNK = 4 * 1024 * 1024  # per sendfile call, and per read on the TLS path
SENDFILE_MIN = 256 * 1024  # below this a thread hand-off costs more than it saves
STALL_SECONDS = 120.0
# Downloads at once in threads; more wait for a free one (each holds one thread while the
# peer reads; a stalled peer for at most STALL_SECONDS).
_senders = ThreadPoolExecutor(max_workers=16, thread_name_prefix="river-sendfile")


def _can_sendfile(handler: web.RequestHandler) -> bool:
    connection = handler.request.connection
    stream = getattr(connection, "stream", None)
    return (
        isinstance(stream, iostream.IOStream)
        and not isinstance(stream, iostream.SSLIOStream)
        and not handler.application.transforms  # e.g. gzip would rewrite the body
        and hasattr(connection, "detach")
    )


def sendfile_all(fd: int, source: int, size: int, stop: threading.Event) -> int:
    """Send `size` bytes of file `source` on socket `fd` (non-blocking); bytes sent.

    Stops early (returns less) if the peer goes away, `stop` is set, or the peer reads
    nothing for STALL_SECONDS."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    sent = 0
    while sent < size and not stop.is_set():
        try:
            sent += os.sendfile(fd, source, sent, min(CHUNK, size - sent))
            continue
        except BlockingIOError:
            pass
        except OSError:  # EPIPE, ECONNRESET: the reader is gone
            return sent
        events = poller.poll(STALL_SECONDS * 1000)
        if not events or any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
            return sent
    return sent


def _send_and_close(fd: int, source: int, size: int, stop: threading.Event) -> int:
    """sendfile_all on descriptors this thread owns (closed here, even if the awaiting
    coroutine was cancelled: nobody else closes them under it)."""
    try:
        return sendfile_all(fd, source, size, stop)
    finally:
        os.close(fd)
        os.close(source)


async def _send_detached(handler: web.RequestHandler, path: Path, size: int) -> None:
    source = os.open(path, os.O_RDONLY)
    try:
        handler.set_header("Connection", "close")
        await handler.flush()  # the head, written by Tornado
        stream = handler.detach()
        fd = os.dup(stream.socket.fileno())
    except BaseException:
        os.close(source)
        raise
    stop = threading.Event()
    sent: int | None = None
    try:
        loop = asyncio.get_running_loop()
        sent = await loop.run_in_executor(_senders, _send_and_close, fd, source, size, stop)
    finally:
        stop.set()  # cancelled (host shutting down): the thread stops at its next step
        stream.close()
        log_sent(handler, sent, size)  # Tornado logs no detached request (access_log.py)


async def _send_chunks(handler: web.RequestHandler, path: Path) -> None:
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            handler.write(chunk)
            try:
                await handler.flush()
            except iostream.StreamClosedError:
                return
    handler.finish()


async def send_file(handler: web.RequestHandler, path: Path) -> None:
    """Answer with the file's bytes (octet-stream, with its Content-Length)."""
    size = path.stat().st_size
    handler.set_header("Content-Type", "application/octet-stream")
    handler.set_header("Content-Length", str(size))
    if size >= SENDFILE_MIN and _can_sendfile(handler):
        with contextlib.suppress(iostream.StreamClosedError):  # gone before the head
            await _send_detached(handler, path, size)
        return
    await _send_chunks(handler, path)
