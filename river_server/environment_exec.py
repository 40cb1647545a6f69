"""One command in an environment container, with a hard time limit (blocking; docker SDK).

Why not `exec_start(stream=True)`: its generator blocks in a read with no deadline, so a
silent command (`sleep 1d`) would hold a worker thread for ever, and Docker has no "kill this
exec" call. Here the command is started through `/bin/sh`, which first prints its own PID
(then `exec`s the command, so that PID is the command); the multiplexed stream is read from
the raw socket against a deadline, and past it the command and its descendants are killed
by a second exec inside the container (walking /proc/PID/task/*/children), so the limit
holds even for a command that prints nothing.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

# Prints its PID, then becomes the command ("$@").
_WRAPPER = 'echo "$$"; exec "$@"'
# Stops each process before listing its children, so none escapes by forking meanwhile.
_KILL_TREE = (
    "k() { kill -STOP $1 2>/dev/null; "
    "for c in $(cat /proc/$1/task/*/children 2>/dev/null); do k $c; done; "
    "kill -KILL $1 2>/dev/null; }; k "
)
DRAIN_AFTER_KILL_S = 5.0


@dataclass
class ExecResult:
    exit_code: int | None
    output: bytes
    truncated: bool
    timed_out: bool
    seconds: float


def run_bounded(
    api: Any, container_id: str, argv: list[str], timeout: float, max_output: int
) -> ExecResult:
    """Run `argv` in the container; merged stdout+stderr (the last `max_output` bytes).
    Past `timeout` seconds the command is killed and `timed_out` is set."""
    started = time.monotonic()
    deadline = started + timeout
    command = ["/bin/sh", "-c", _WRAPPER, "river-exec", *argv]
    exec_id = api.exec_create(container_id, command, stdout=True, stderr=True)["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    reader = _FrameReader(raw)
    output = bytearray()
    head = bytearray()  # until the wrapper's PID line is complete
    pid: int | None = None
    truncated = timed_out = False
    try:
        while True:
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                if pid is not None:
                    _kill_tree(api, container_id, pid)
                deadline = now + DRAIN_AFTER_KILL_S
            elif timed_out and now >= deadline:
                break  # something still holds the output open: give up on it
            chunk = reader.next(max(0.05, deadline - now))
            if chunk is None:
                break  # end of stream: the command ended
            if not chunk:
                continue  # no data before the deadline
            if pid is None:
                head.extend(chunk)
                line, sep, rest = bytes(head).partition(b"\n")
                if not sep:
                    continue
                pid = int(line) if line.strip().isdigit() else -1
                chunk = rest
            output.extend(chunk)
            if len(output) > max_output:
                del output[: len(output) - max_output]
                truncated = True
    finally:
        with contextlib.suppress(OSError):
            raw.close()
        with contextlib.suppress(Exception):
            sock.close()
    code = None
    with contextlib.suppress(Exception):
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            code = info.get("ExitCode")
    if pid is None:  # the stream ended before the PID line (the shell itself failed)
        output = head + output
    return ExecResult(code, bytes(output), truncated, timed_out, time.monotonic() - started)


def _kill_tree(api: Any, container_id: str, pid: int) -> None:
    if pid <= 0:
        return
    with contextlib.suppress(Exception):
        killer = api.exec_create(container_id, ["/bin/sh", "-c", _KILL_TREE + str(pid)])
        api.exec_start(killer["Id"])


class _FrameReader:
    """Docker's multiplexed exec stream (8-byte header: stream, 0, 0, 0, size) on a raw
    socket, read against a deadline."""

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self.buffer = b""
        self.eof = False

    def _fill(self, wait: float) -> bool:
        """Read once, waiting at most `wait` s; False on timeout."""
        self.raw.settimeout(wait)
        try:
            data = self.raw.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.eof = True
        self.buffer += data
        return True

    def next(self, wait: float) -> bytes | None:
        """The next frame's payload; b"" when none came within `wait`; None at the end."""
        end = time.monotonic() + wait
        while True:
            if len(self.buffer) >= 8:
                size = struct.unpack(">I", self.buffer[4:8])[0]
                if len(self.buffer) >= 8 + size:
                    payload = self.buffer[8 : 8 + size]
                    self.buffer = self.buffer[8 + size :]
                    return payload
            if self.eof:
                return None
            left = end - time.monotonic()
            if left <= 0 or not self._fill(left):
                return b""
