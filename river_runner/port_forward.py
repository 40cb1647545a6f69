"""Port forwarding into a task's ports, for the host's proxies (HTTP/WS and SSH).

The host reaches a task's port through its runner, which alone knows where the task's
container lives (and may be the only machine that can reach it):

- `GET|POST|... /api/tasks/ID/forward/PORT/PATH` passes one HTTP request (a WebSocket
  handshake included) to `PATH` on the task's PORT and relays the answer back verbatim,
  except that it says `Connection: close` (one request per connection);
- `GET /api/tasks/ID/tunnel/PORT` with `Upgrade: river-tcp` answers 101 and then relays raw
  TCP both ways (the SSH proxy's way to a VPS's sshd).

Both take the connection over from Tornado (`detach`) and relay the two sockets in the
kernel (river_runner/splice.py): after the request's head, no byte is parsed or copied in
Python. The host's `Authorization` (the runner credential) is never passed on.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

from tornado import web

from river_runner.api_base import RunnerHandler
from river_runner.splice import relay_sockets, take_socket

TUNNEL_PROTOCOL = "river-tcp"
MAX_HEAD = 64 * 1024
CONNECT_TIMEOUT_S = 10.0
# Headers that belong to the hop from the host, not to the request for the task's app.
# Tornado has already read (and de-chunked) the body, so its framing is set again here.
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


def parse_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise web.HTTPError(400, f"port must be 1-65535, not {port}")
    return port


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
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in dropped]
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


class _ForwardBase(RunnerHandler):
    """Resolve the task's address and connect to the port there."""

    async def _connect(self, task_id: str, port: str) -> socket.socket:
        number = int(task_id)
        backend = self.agent.backend
        address = await asyncio.get_running_loop().run_in_executor(
            None, backend.forward_address, number
        )
        if address is None:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        try:
            return await open_connection(address, parse_port(port))
        except (OSError, asyncio.TimeoutError) as exc:
            raise web.HTTPError(
                502, f"nothing answers on port {port} of task {task_id} ({exc or 'timeout'})"
            ) from None


class ForwardHandler(_ForwardBase):
    """One HTTP request (or WebSocket handshake) to PATH on the task's PORT."""

    async def _forward(self, task_id: str, port: str, path: str | None) -> None:
        upstream = await self._connect(task_id, port)
        request = self.request
        target = (path or "/") + (f"?{request.query}" if request.query else "")
        body = request.body or b""
        head = request_head(
            request.method or "GET",
            target,
            request.headers.get_all(),
            body,
            upgrade=bool(request.headers.get("Upgrade")),
        )
        downstream = take_socket(self.detach())
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(upstream, head + body)
            answer, rest = await read_head(upstream)
            prefix = request.headers.get("X-Forwarded-Prefix", "")
            await loop.sock_sendall(downstream, closing_head(answer, prefix) + rest)
        except OSError:
            downstream.close()
            upstream.close()
            return
        await relay_sockets(downstream, upstream)

    get = post = put = patch = delete = head = options = _forward  # type: ignore[assignment]


class TunnelHandler(_ForwardBase):
    """Raw TCP to the task's PORT after a 101 (`Upgrade: river-tcp`)."""

    async def get(self, task_id: str, port: str) -> None:
        if self.request.headers.get("Upgrade", "").lower() != TUNNEL_PROTOCOL:
            raise web.HTTPError(400, f"a tunnel needs 'Upgrade: {TUNNEL_PROTOCOL}'")
        upstream = await self._connect(task_id, port)
        downstream = take_socket(self.detach())
        answer = (
            "HTTP/1.1 101 Switching Protocols\r\n"
            f"Upgrade: {TUNNEL_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n"
        )
        try:
            await asyncio.get_running_loop().sock_sendall(downstream, answer.encode())
        except OSError:
            downstream.close()
            upstream.close()
            return
        await relay_sockets(downstream, upstream)


def routes(args: dict[str, Any]) -> list[tuple[str, type, dict[str, Any]]]:
    return [
        (r"/api/tasks/(\d+)/forward/(\d+)(/.*)?", ForwardHandler, args),
        (r"/api/tasks/(\d+)/tunnel/(\d+)", TunnelHandler, args),
    ]
