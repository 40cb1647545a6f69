"""The runner's fetch writer (river_runner/blobwrite.py): real files, a real thread."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import resource
import signal
import threading
from pathlib import Path

import pytest

from river_runner.blobwrite import BUFFER, BlobWriter


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


def test_pieces_of_any_size_land_in_the_file_with_their_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 * BUFFER + 12345)  # more buffers than the pipeline holds
    target = tmp_path / "blob"

    async def run() -> str:
        # A reservation larger than what comes: the file keeps only the bytes written.
        writer = BlobWriter(target, size_hint=len(data) + 4096, depth=2)
        for piece in _pieces(data, 65536 + 7):
            await writer.write(piece)
        return await writer.finish()

    assert asyncio.run(run()) == hashlib.sha256(data).hexdigest()
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_write_error_reaches_the_fetch_and_the_thread_ends(tmp_path: Path) -> None:
    """A full disk (here: a file size limit, EFBIG) is raised to the caller, not lost in
    the thread; the thread ends and closes the file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (BUFFER, hard))
    writer: BlobWriter | None = None

    async def run() -> None:
        nonlocal writer
        writer = BlobWriter(tmp_path / "big", depth=2)
        for _ in range(8):
            await writer.write(b"x" * BUFFER)
        await writer.finish()

    try:
        with pytest.raises(OSError) as raised:
            asyncio.run(run())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert raised.value.errno == errno.EFBIG
    assert writer is not None
    writer.abort()
    writer._thread.join(timeout=10)
    assert not writer._thread.is_alive()


def test_an_aborted_fetch_stops_the_thread_without_waiting(tmp_path: Path) -> None:
    async def run() -> BlobWriter:
        writer = BlobWriter(tmp_path / "cut")
        await writer.write(os.urandom(BUFFER + 1))
        writer.abort()  # a cancelled fetch: no await
        return writer

    writer = asyncio.run(run())
    writer._thread.join(timeout=10)
    assert not writer._thread.is_alive()
    assert "river-blob-write" not in {t.name for t in threading.enumerate()}
