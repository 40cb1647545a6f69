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
Python. The host's `Authorization` (the runner credential) is never passed on. The framing
of the heads is shared with the host's proxy and lives in the contract package
(river_runner/wire/forwarding.py), so the host never imports this agent module.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tornado import web

from river_runner.api_base import RunnerHandler
from river_runner.splice import relay_sockets, take_socket
from river_runner.wire.forwarding import (
    TUNNEL_PROTOCOL,
    closing_head,
    open_connection,
    read_head,
    request_head,
)


def parse_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise web.HTTPError(400, f"port must be 1-65535, not {port}")
    return port


class _ForwardBase(RunnerHandler):
    """Resolve the task's address and connect to the port there."""

    async def _connect(self, task_id: str, port: str) -> socket.socket:
        target = await self.agent.backend.forward_target(int(task_id), parse_port(port))
        if target is None:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        try:
            return await open_connection(*target)
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
