"""The runner's side of the supervisor fork server (river_runner/zygote.py)."""

from __future__ import annotations

import array
import json
import logging
import os
import socket
import subprocess
import threading
from typing import Any

from river_runner import zygote

log = logging.getLogger("river.runner.zygote")
ANSWER_TIMEOUT_S = 5.0


class ZygoteClient:
    """Starts the zygote on first use and asks it for supervisors. `spawn` answers None
    whenever the zygote cannot help (not started, gone, refused): the caller then starts
    the supervisor the slow way, so a broken zygote costs speed, never a task."""

    def __init__(self, python: str, use: bool = True) -> None:
        self.python = python
        self.use = use
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> socket.socket:
        if self._sock is not None and self._proc is not None and self._proc.poll() is None:
            return self._sock
        self.close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-S", zygote.__file__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                # Not the runner's environment (it may hold a join token); each
                # supervisor it forks gets its task's environment from the request.
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        finally:
            theirs.close()
        ours.settimeout(ANSWER_TIMEOUT_S)
        self._sock = ours
        return ours

    def spawn(self, request: dict[str, Any], bell_write: int) -> int | None:
        """Fork a supervisor for `request` with `bell_write` as its stdout; its pid."""
        if not self.use:
            return None
        with self._lock:
            try:
                sock = self._ensure()
                fds = array.array("i", [bell_write])
                sock.sendmsg(
                    [json.dumps(request).encode()],
                    [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())],
                )
                answer = sock.recv(256).decode()
                return int(answer)
            except (OSError, ValueError) as exc:
                log.warning(
                    "supervisor fork server unusable (%s); starting supervisors by exec", exc
                )
                self.close()
                return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the zygote sees the end and exits
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
