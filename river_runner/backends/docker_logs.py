"""Reading a docker container's log: timestamps, the streamed body, multiplexed frames.

Why a module of its own: this is plumbing over the daemon's `/containers/{id}/logs`
response that needs nothing of the backend's state (no tasks, no client), so it can be read,
tested and tuned for speed on its own. The backend (river_runner.backends.docker) opens the
log and turns the frames into numbered lines.

* Log lines carry RFC 3339 timestamps with nanoseconds; `docker_time_ns` keeps them exact
  (the backend compares them to find where a follow stopped), `parse_docker_time` gives the
  epoch seconds a line is reported with.
* The daemon sends each log frame as its own HTTP chunk; `body_pieces` de-chunks straight from
  the connection's buffered reader, which is several times faster than urllib3.
* Without `tty`, the log is multiplexed: an 8-byte header (stream id, length) before each
  payload; `frame_batches` splits the body into (stream id, payload) frames.
"""

from __future__ import annotations

import calendar
import functools
import http.client
import io
import struct
import time
from collections.abc import Iterator
from typing import Any


def docker_time_ns(stamp: bytes | str) -> int:
    """RFC 3339 with nanoseconds ("2026-01-02T03:04:05.123456789Z") to epoch nanoseconds."""
    text = stamp.decode() if isinstance(stamp, bytes) else stamp
    base, _, frac = text.rstrip("Z").partition(".")
    digits = (frac + "000000000")[:9]
    if not digits.isdigit():
        raise ValueError(f"bad timestamp {text!r}")
    return _epoch_seconds(base) * 1_000_000_000 + int(digits)


def parse_docker_time(stamp: bytes | str) -> float:
    """Epoch seconds of a log timestamp (see docker_time_ns)."""
    return docker_time_ns(stamp) / 1e9


@functools.lru_cache(maxsize=256)
def _epoch_seconds(base: str) -> int:
    # strptime is slow (tens of microseconds); a burst of lines shares a few seconds.
    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))


def body_pieces(response: Any) -> Iterator[bytes] | None:
    """The body of a streamed response as it arrives, or None without a way to do that.

    The daemon sends each log frame as its own HTTP chunk, and urllib3 plus http.client
    spend ~40 us per chunk; de-chunking straight from the connection's buffered reader is
    several times faster. Falls back to urllib3's read1 when the response is not the
    expected http.client one."""
    inner = getattr(response.raw, "_fp", None)
    fp = getattr(inner, "fp", None)
    if (
        isinstance(inner, http.client.HTTPResponse)
        and isinstance(fp, io.BufferedReader)
        and inner.chunked
        and inner.chunk_left is None  # nothing of the body read yet
    ):
        return _dechunk(fp)
    read1 = getattr(response.raw, "read1", None)  # urllib3 >= 2: what is available
    if read1 is None:
        return None
    return iter(lambda: read1(1 << 16), b"")


def _dechunk(fp: io.BufferedReader) -> Iterator[bytes]:
    while True:
        size_line = fp.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return  # end of stream (b"") or not chunked after all
        if size == 0:
            fp.readline(1024)  # the empty trailer line ends the body
            return
        left = size
        while left:
            piece = fp.read1(min(left, 1 << 16))
            if not piece:
                return
            left -= len(piece)
            yield piece
        fp.readline(16)  # CRLF after the chunk


def frame_batches(response: Any) -> Iterator[list[tuple[int, bytes]]]:
    """Multiplexed frames (stream id, payload), in batches of what has arrived."""
    pieces = body_pieces(response)
    if pieces is None:  # no incremental reader: one frame at a time, exact reads
        raw = response.raw
        while True:
            header = raw.read(8)
            if not header or len(header) < 8:
                return
            stream_id, length = struct.unpack(">BxxxL", header)
            data = raw.read(length) if length else b""
            if length and not data:
                return
            yield [(stream_id, data)]
    buffer = b""
    for piece in pieces:
        buffer = buffer + piece if buffer else piece
        batch, pos = [], 0
        while len(buffer) - pos >= 8:
            stream_id, length = struct.unpack_from(">BxxxL", buffer, pos)
            if len(buffer) - pos - 8 < length:
                break
            if length:
                batch.append((stream_id, buffer[pos + 8 : pos + 8 + length]))
            pos += 8 + length
        buffer = buffer[pos:]
        if batch:
            yield batch
