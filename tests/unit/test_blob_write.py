"""The runner's fetch writer (river_runner/blobwrite.py): real files, a real thread, a real
socket pair."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import threading
from pathlib import Path

import pytest

from river_runner import digest as blob_digest
from river_runner.blobwrite import BUFFER, FileSink, SinkError


def test_a_socket_stream_lands_in_the_file_with_its_digest(tmp_path: Path) -> None:
    data = os.urandom(3 * BUFFER + 12345)  # more buffers than the pipeline holds
    target = tmp_path / "blob"
    left, right = socket.socketpair()
    sender = threading.Thread(target=lambda: (left.sendall(data[100:]), left.close()))
    sender.start()
    counted = [0]
    # A reservation larger than what comes: the file keeps only the bytes written.
    sink = FileSink(target, size_hint=len(data) + 4096, depth=2)
    got = sink.fill_from(data[:100], right, len(data), counted)
    digest = sink.finish()
    sender.join(timeout=30)
    right.close()
    assert got == counted[0] == len(data)
    assert digest == blob_digest.of_bytes(data)
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_stream_cut_short_reports_what_came(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    left.sendall(b"x" * 1000)
    left.close()
    sink = FileSink(tmp_path / "short")
    try:
        assert sink.fill_from(b"", right, 5000) == 1000
    finally:
        sink.abort()
        right.close()
    sink._thread.join(timeout=10)
    assert not sink._thread.is_alive()


def test_a_write_error_reaches_the_fetch_and_the_thread_ends(tmp_path: Path) -> None:
    """A full disk (here: a file size limit, EFBIG) is raised to the caller as a SinkError
    (the disk, not the network), not lost in the thread; the thread ends, closing the file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (BUFFER, hard))
    sink = FileSink(tmp_path / "big", depth=2)
    try:
        with pytest.raises(SinkError) as raised:
            for _ in range(8):
                sink.write(b"x" * BUFFER)
            sink.finish()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert raised.value.errno == errno.EFBIG
    sink.abort()
    sink._thread.join(timeout=10)
    assert not sink._thread.is_alive()


def test_an_aborted_fetch_stops_the_thread_without_waiting(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "cut")
    sink.write(os.urandom(BUFFER + 1))
    sink.abort()  # a cut-off fetch: no wait
    sink._thread.join(timeout=10)
    assert not sink._thread.is_alive()
    assert "river-blob-write" not in {t.name for t in threading.enumerate()}
