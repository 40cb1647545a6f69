"""Tunnel framing of the port forwards: the heads both ends of a forwarded request write.

The host's proxy (river_server/proxy.py) and the runner's forward route
(river_runner/port_forward.py) pass one HTTP request through as raw bytes, so both must
frame its head the same way. The framing lives here, in the contract package, rather than
in the runner's handler module, because importing that module pulls in the runner agent
(its handler base holds the `RunnerAgent`), which the host must never load (design.md
section 8). Standard library only.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

TUNNEL_PROTOCOL = "river-tcp"  # the Upgrade token of the raw TCP tunnel route
MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
# Headers that belong to the hop from the host, not to the request for the task's app.
# Tornado has already read (and de-chunked) the body, so its framing is set again here.
# The app's own `Authorization` (a JupyterHub token for a Hub server behind River's servers
# listener), carried to the runner under this name because the hop's `Authorization` is
# the runner credential; the runner's last hop sends it to the app as `Authorization`.
APP_AUTHORIZATION = "X-River-App-Authorization"
_DROPPED = {
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
}


async def open_connection(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket (OSError or TimeoutError when nothing answers)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), CONNECT_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    return sock


def request_head(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    upgrade: bool,
    keep_authorization: bool = False,
) -> bytes:
    """The head of a request passed on: the hop's own headers dropped (Authorization too,
    unless kept: the host sends the runner credential in it), the body framed by
    Content-Length, and one request per connection (or an upgrade)."""
    dropped = _DROPPED - {"authorization"} if keep_authorization else _DROPPED
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        if not keep_authorization and name.lower() == APP_AUTHORIZATION.lower():
            lines.append(f"Authorization: {value}")  # the app's own, carried past the hop
        elif name.lower() not in dropped:
            lines.append(f"{name}: {value}")
    lines.append("Connection: Upgrade" if upgrade else "Connection: close")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(response head, the bytes after it that came with it)."""
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, MAX_HEAD)
        if not chunk or len(data) > MAX_HEAD:
            raise ConnectionError("no complete response head")
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def closing_head(head: bytes, prefix: str = "") -> bytes:
    """The response head saying `Connection: close` unless it switches protocols: the
    connection ends with this response, so the client must not reuse it. With the proxy's
    `prefix` (X-Forwarded-Prefix), a redirect to an absolute path outside it (an app that
    does not know it is proxied: `Location: /login`) is moved under it."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split()
    if len(status) > 1 and status[1] == "101":
        return head
    kept = []
    for line in lines[1:]:
        if not line or _header_name(line) in ("connection", "keep-alive"):
            continue
        if prefix and _header_name(line) == "location":
            line = f"Location: {prefixed_location(line.split(':', 1)[1].strip(), prefix)}"
        kept.append(line)
    return ("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def prefixed_location(location: str, prefix: str) -> str:
    """`/login` -> `PREFIX/login`; full URLs, relative paths and paths already under the
    prefix are left alone."""
    prefix = prefix.rstrip("/")
    if not location.startswith("/") or location.startswith("//"):
        return location
    if location == prefix or location.startswith(prefix + "/"):
        return location
    return prefix + location


def _header_name(line: str) -> str:
    return line.split(":", 1)[0].strip().lower()
