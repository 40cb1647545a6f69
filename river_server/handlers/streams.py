"""WebSocket routes that carry a byte stream to a user's container: `river forward` and
`river attach` (docs/cli.md).

- `/river/api/vps/ID/forward/PORT`: raw TCP to PORT in the VPS. The host opens the
  runner's `river-tcp` tunnel (river_server/tunnel.py, as the SSH proxy does) and relays:
  each binary frame from the client is written to the port, each chunk read from it comes
  back as a binary frame. A text frame `{"eof": true}` ends the client's sending side
  (TCP half-close), so protocols that answer after the request's end still work.
- `/river/api/tasks/ID/attach`: a shell with a TTY in a running container task, relayed to
  the runner's exec WebSocket (river_runner/app.py ExecSocket) with the runner credential;
  frames pass both ways unchanged (binary: terminal bytes; text `{"resize": [rows, cols]}`).

Both are for the owner only, as the proxy is (docs/security.md "Proxied apps"): what runs
there runs as the owner. Operators get 403, everyone else 404. Each open socket holds a
slot of `c.RiverHost.max_tunnels_per_user` (river_server/limits.py): more get 429.
The handshake is refused with a real HTTP status (and a JSON message) before upgrading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import httpclient, web, websocket

from river_runner.ids import parse_id
from river_runner.protocol import TaskState, runner_auth_header
from river_server import db
from river_server.auth import role_at_least, user_role
from river_server.limits import LimitReached
from river_server.standby import refuse_if_standby
from river_server.tunnel import TunnelError, open_tunnel

CHUNK = 256 * 1024
LIVE = (TaskState.RUNNING.value,)


class _OwnerSocket(WebSocketMixin, websocket.WebSocketHandler, JupyterHandler):  # type: ignore[misc]
    """Authentication, ownership and the per-user slot, all settled before the upgrade."""

    _slot_user: str | None = None

    @property
    def river(self) -> Any:
        return self.settings["river"]

    def set_default_headers(self) -> None:
        """JupyterHandler's page headers (CSP, ...) mean nothing on a WebSocket."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        result = super().prepare(*args, **kwargs)
        if result is not None:
            await result
        if not self._finished:  # the runners' connections are the leader's
            refuse_if_standby(self, leader_only=True)

    def check_xsrf_cookie(self) -> None:
        """A WebSocket handshake is a GET; origin is checked by WebSocketMixin instead."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def owned(self, ident: str, thing: str) -> db.Task:
        """The task (a VPS's current incarnation for `thing == "VPS"`) when the caller owns
        it and it runs; 404 for strangers, 403 for operators, 409 when not running."""
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "log in to River (or send Authorization: token ...)")
        try:
            number = parse_id(ident)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        if thing == "VPS":
            task = self.river.vps.current(number)
        else:
            with self.river.sessions() as session:
                task = session.get(db.Task, number)
        if task is None or (
            task.owner != user.username and not role_at_least(user_role(user), "operator")
        ):
            raise web.HTTPError(404, f"no {thing} {ident}")
        if task.owner != user.username:
            raise web.HTTPError(
                403,
                f"only {task.owner}, the owner of {thing} {ident}, may open a stream into it: "
                "what runs there runs as the owner",
            )
        if task.state not in LIVE:
            raise web.HTTPError(409, f"{thing} {ident} is {task.state}, not running")
        return task

    def require_upgrade(self) -> None:
        """A plain GET gets a 400 that says what this route is, before anything opens."""
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise web.HTTPError(
                400,
                "this route is a WebSocket: connect with a WebSocket client "
                "(the `river forward` and `river attach` commands do)",
            )

    def runner(self, task: db.Task) -> Any:
        node = self.river.nodes.connection(task.node or "")
        if node is None:
            raise web.HTTPError(503, f"node {task.node} is offline; try again when it is back")
        return node

    def take_slot(self) -> None:
        user = self.current_user.username
        try:
            self.river.tunnels.acquire(user)
        except LimitReached as exc:
            raise web.HTTPError(429, str(exc)) from None
        self._slot_user = user

    def release_slot(self) -> None:
        if self._slot_user is not None:
            self.river.tunnels.release(self._slot_user)
            self._slot_user = None

    def on_finish(self) -> None:
        """A refused handshake (no upgrade) gives its slot back here."""
        if self.ws_connection is None:
            self.release_slot()


class ForwardSocket(_OwnerSocket):
    """Raw TCP to a port of the caller's VPS (`river forward`)."""

    sock: socket.socket | None = None
    pumping: asyncio.Future[None] | None = None

    async def get(self, vps_id: str, port: str) -> None:  # type: ignore[override]
        number = int(port) if port.isdigit() else 0
        if not 1 <= number <= 65535:
            raise web.HTTPError(400, f"port must be 1-65535, not {port}")
        task = self.owned(vps_id, "VPS")
        self.require_upgrade()
        node = self.runner(task)
        self.take_slot()
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(
                None, open_tunnel, node.url, node.secret, task.id, number
            )
        except TunnelError as exc:
            self.release_slot()
            status = exc.status if exc.status in (404, 409, 502, 503) else 502
            raise web.HTTPError(status, f"port {number} of VPS {vps_id}: {exc}") from None
        sock.setblocking(False)
        self.sock = sock
        await super().get(vps_id, port)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        self.pumping = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        """The port's bytes to the client, one frame per read; awaiting each write keeps a
        slow client from growing the host's buffers."""
        loop = asyncio.get_running_loop()
        sock = self.sock
        assert sock is not None
        try:
            while True:
                data = await loop.sock_recv(sock, CHUNK)
                if not data:
                    break
                await self.write_message(data, binary=True)
        except (OSError, websocket.WebSocketClosedError):
            pass
        self.close()

    async def on_message(self, message: str | bytes) -> None:
        sock = self.sock
        if sock is None:
            return
        if isinstance(message, str):
            if _is_eof(message):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            return
        try:
            await asyncio.get_running_loop().sock_sendall(sock, message)
        except OSError:
            self.close()

    def on_close(self) -> None:
        if self.pumping is not None:
            self.pumping.cancel()
        if self.sock is not None:
            # The pending sock_recv's reader must go before the fd closes: a new connection
            # reusing the number would otherwise meet the stale registration and hang.
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self.release_slot()


def _is_eof(message: str) -> bool:
    try:
        return bool(json.loads(message).get("eof"))
    except (ValueError, AttributeError):
        return False


class AttachSocket(_OwnerSocket):
    """A TTY shell in the caller's running container task (`river attach`)."""

    upstream: websocket.WebSocketClientConnection | None = None

    async def get(self, task_id: str) -> None:  # type: ignore[override]
        task = self.owned(task_id, "task")
        self.require_upgrade()
        node = self.runner(task)
        self.take_slot()
        base = urlsplit(node.url)
        scheme = "wss" if base.scheme == "https" else "ws"
        url = f"{scheme}://{base.netloc}/api/tasks/{task.id}/exec"
        request = httpclient.HTTPRequest(
            url, headers=runner_auth_header(node.secret), connect_timeout=15, request_timeout=15
        )
        try:
            self.upstream = await websocket.websocket_connect(request)
        except httpclient.HTTPClientError as exc:
            self.release_slot()
            message = _runner_reason(exc)
            if exc.code == 409:
                message = (
                    f"task {task_id} runs on a backend without terminals ({message}); "
                    "attach needs a container task (--image or --environment)"
                )
            status = exc.code if exc.code in (404, 409) else 502
            raise web.HTTPError(status, message) from None
        except OSError as exc:
            self.release_slot()
            raise web.HTTPError(502, f"cannot reach the runner of task {task_id}: {exc}") from None
        await super().get(task_id)

    def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)
        asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        upstream = self.upstream
        assert upstream is not None
        try:
            while True:
                message = await upstream.read_message()
                if message is None:
                    break
                await self.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            pass
        self.close()

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is None:
            return
        try:
            await self.upstream.write_message(message, binary=isinstance(message, bytes))
        except websocket.WebSocketClosedError:
            self.close()

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.release_slot()


def _runner_reason(exc: httpclient.HTTPClientError) -> str:
    """The runner's reason for refusing the exec socket, as far as it says one."""
    response = exc.response
    if response is not None and response.reason:
        return response.reason
    return str(exc)
