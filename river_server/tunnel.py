"""A raw TCP connection to a task's port, through its runner (blocking; for threads).

The runner answers `GET /api/tasks/ID/tunnel/PORT` with `Upgrade: river-tcp` by `101` and
then splices the socket to the port in the task's container (river_runner/port_forward.py).
The SSH proxy uses it to reach a VPS's sshd wherever the VPS runs.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from river_runner.protocol import runner_auth_header
from river_runner.wire.forwarding import TUNNEL_PROTOCOL

MAX_HEAD = 64 * 1024


class TunnelError(Exception):
    """The runner refused the tunnel or could not be reached; `status` is its HTTP status
    (502 when nothing answered)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _read_head(sock: socket.socket) -> bytes:
    """The response head, read one byte at a time so nothing after it is consumed (the
    tunnelled protocol may speak first, as sshd does)."""
    head = bytearray()
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise TunnelError(502, "the runner closed the connection before answering")
        head += byte
        if len(head) > MAX_HEAD:
            raise TunnelError(502, "the runner's answer has no end of headers")
    return bytes(head)


def open_tunnel(
    runner_url: str, secret: str, task_id: int, port: int, timeout: float = 10.0
) -> socket.socket:
    parts = urlsplit(runner_url)
    host, runner_port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        sock = socket.create_connection((host, runner_port), timeout=timeout)
    except OSError as exc:
        raise TunnelError(502, f"cannot reach the runner at {runner_url}: {exc}") from None
    try:
        auth = runner_auth_header(secret)["Authorization"]
        request = (
            f"GET /api/tasks/{task_id}/tunnel/{port} HTTP/1.1\r\n"
            f"Host: {host}:{runner_port}\r\nConnection: Upgrade\r\nUpgrade: {TUNNEL_PROTOCOL}\r\n"
            f"Authorization: {auth}\r\n\r\n"
        )
        sock.sendall(request.encode())
        head = _read_head(sock)
        status_line, _, header_text = head.decode("latin-1").partition("\r\n")
        status = int(status_line.split()[1])
        if status != 101:
            raise TunnelError(status, _error_message(sock, header_text, status))
    except (OSError, ValueError, IndexError) as exc:
        sock.close()
        raise TunnelError(502, f"tunnel through {runner_url} failed: {exc}") from None
    except TunnelError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def _error_message(sock: socket.socket, header_text: str, status: int) -> str:
    """The runner's `{"message": ...}` for a refused tunnel, as far as it can be read."""
    length = 0
    for line in header_text.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value)
    body = b""
    try:
        while len(body) < min(length, MAX_HEAD):
            chunk = sock.recv(length - len(body))
            if not chunk:
                break
            body += chunk
        return str(json.loads(body)["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"the runner answered {status}"
