"""`river forward VPS PORT [LOCAL]` and `river attach ID`: byte streams into containers
over the host's WebSocket routes (river_server/handlers/streams.py).

Both speak only to the host, never to a runner: the runner may be unreachable from the
user's machine, and it trusts the host's credential alone. WebSockets, not a raw HTTP
upgrade, so the stream passes whatever reverse proxy sits in front of the Jupyter server.

- forward: listens on 127.0.0.1:LOCAL (never all interfaces: the port is the owner's way
  into their VPS) and opens one WebSocket per accepted connection; the local client's EOF
  travels as a text frame `{"eof": true}` (TCP half-close), the VPS side's end closes it.
- attach: the local terminal goes raw when stdin is a TTY (window size follows); otherwise
  stdin's bytes pass as they are and its end sends ^D, so `echo hostname | river attach ID`
  runs the command and ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import termios
import threading
import tty
from typing import Any

from tornado import httpclient, websocket

from river_runner.vps_shell import window_size

from ..client import Client
from ..common import client_headers
from ..errors import RiverError
from . import config
from .follow import note
from .parsing import ShellParser, connection_options

CHUNK = 256 * 1024
EOF_FRAME = json.dumps({"eof": True})
CONNECT_TIMEOUT_S = 15.0


def socket_url(client: Client, path: str) -> str:
    """The host's WebSocket URL for an API path (ws:// or wss://, base_url kept)."""
    api = client._api
    scheme = "wss" if api.startswith("https:") else "ws"
    return f"{scheme}:{api.split(':', 1)[1]}{path}"


async def connect(client: Client, path: str) -> websocket.WebSocketClientConnection:
    """Open the WebSocket; a refusal is a RiverError carrying the host's own message."""
    request = httpclient.HTTPRequest(
        socket_url(client, path),
        headers=client_headers(client._token),
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=CONNECT_TIMEOUT_S,
    )
    try:
        return await websocket.websocket_connect(request, max_message_size=CHUNK * 4)
    except httpclient.HTTPClientError as exc:
        raise RiverError(_refusal(exc)) from None
    except (OSError, websocket.WebSocketError) as exc:
        raise RiverError(f"cannot reach {client.url}: {exc}") from None


def _refusal(exc: httpclient.HTTPClientError) -> str:
    response = exc.response
    if response is not None and response.body:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return f"{json.loads(response.body)['message']} (HTTP {exc.code})"
    return f"the host refused: HTTP {exc.code}"


# ---- forward --------------------------------------------------------------------------------


async def _relay_connection(
    client: Client, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One accepted local connection, relayed over its own WebSocket until both ends."""
    try:
        conn = await connect(client, path)
    except RiverError as exc:
        note(f"connection refused: {exc}")
        writer.close()
        return

    async def upstream() -> None:
        while data := await reader.read(CHUNK):
            await conn.write_message(data, binary=True)
        await conn.write_message(EOF_FRAME)

    sending = asyncio.ensure_future(upstream())
    try:
        while (message := await conn.read_message()) is not None:
            writer.write(message if isinstance(message, bytes) else message.encode())
            await writer.drain()
    except (OSError, ConnectionError):
        pass
    finally:
        sending.cancel()
        conn.close()
        with contextlib.suppress(OSError, ConnectionError):
            writer.close()
            await writer.wait_closed()


async def _forward_loop(client: Client, path: str, port: int, local: int, label: str) -> int:
    connections: set[asyncio.Task[None]] = set()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _relay_connection(client, path, reader, writer)
        finally:
            connections.discard(task)

    try:
        server = await asyncio.start_server(accepted, "127.0.0.1", local)
    except OSError as exc:
        raise RiverError(f"cannot listen on 127.0.0.1:{local}: {exc.strerror or exc}") from None
    bound = server.sockets[0].getsockname()[1]
    note(f"forwarding 127.0.0.1:{bound} to port {port} of VPS {label}; Ctrl+C stops")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    for task in list(connections):
        task.cancel()
    return 0


def _forward(argv: list[str]) -> int:
    """river forward VPS PORT [LOCAL]"""
    parser = ShellParser(
        prog="river forward",
        parents=[connection_options(json_output=False)],
        description="Forward 127.0.0.1:LOCAL to PORT inside your VPS, for any TCP service "
        "(ssh -p LOCAL, a database, an HTTP app); one WebSocket through the host per "
        "connection. Runs until Ctrl+C.",
    )
    parser.add_argument("vps", metavar="VPS", help="a VPS ID, a unique prefix of one, or its name")
    parser.add_argument("port", metavar="PORT", type=_port, help="the port inside the VPS")
    parser.add_argument(
        "local",
        metavar="LOCAL",
        nargs="?",
        type=_local_port,
        help="the local port (default: PORT; 0 picks a free one and prints it)",
    )
    args = parser.parse_args(argv)
    local = args.port if args.local is None else args.local
    with _client(args) as client:
        ident = client.resolve_vps(args.vps)
        vps = client.vps(ident)
        if vps.get("state") != "running":
            raise RiverError(f"VPS {ident} is {vps.get('state')}, not running; start it first")
        path = f"/vps/{ident}/forward/{args.port}"
        return asyncio.run(_forward_loop(client, path, args.port, local, ident))


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, not {text!r}")
    return int(text)


def _local_port(text: str) -> int:
    return 0 if text == "0" else _port(text)


def _client(args: argparse.Namespace) -> Client:
    url, token = config.connection(args.url, args.token)
    return Client(url, token)


# ---- attach ---------------------------------------------------------------------------------


class _Stdin:
    """Stdin's bytes to a callback from a thread (a pipe, a file or a TTY alike: the event
    loop cannot watch a regular file), and the terminal's mode restored at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Any) -> None:
        self.fd = sys.stdin.fileno()
        self.loop = loop
        self.send = send
        self.saved: list[Any] | None = None

    def start(self) -> None:
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                if self.saved is None:
                    # the end of piped input: ^D, which the remote TTY turns into EOF
                    self.loop.call_soon_threadsafe(self.send, b"\x04")
                return
            self.loop.call_soon_threadsafe(self.send, data)

    def restore(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


async def _attach_session(client: Client, path: str) -> int:
    conn = await connect(client, path)
    loop = asyncio.get_running_loop()

    def send(data: bytes | str) -> None:
        with contextlib.suppress(websocket.WebSocketClosedError):
            conn.write_message(data, binary=isinstance(data, bytes))

    def send_size() -> None:
        size = window_size(sys.stdin.fileno())
        if size:
            send(json.dumps({"resize": list(size)}))

    stdin = _Stdin(loop, send)
    stdin.start()
    if stdin.saved is not None:
        loop.add_signal_handler(signal.SIGWINCH, send_size)
        send_size()
    out = sys.stdout.buffer
    try:
        while (message := await conn.read_message()) is not None:
            out.write(message if isinstance(message, bytes) else message.encode())
            out.flush()
    finally:
        stdin.restore()
        conn.close()
    return 0


def _attach(argv: list[str]) -> int:
    """river attach ID"""
    parser = ShellParser(
        prog="river attach",
        parents=[connection_options(json_output=False)],
        description="A shell with a terminal in your running container task or VPS (docker "
        "backend). Exit the shell to leave; the task or VPS keeps running.",
    )
    parser.add_argument(
        "id", metavar="ID", help="a task or VPS: an ID, a unique prefix of one, or its name"
    )
    args = parser.parse_args(argv)
    with _client(args) as client:
        ident = _attach_target(client, args.id)
        return asyncio.run(_attach_session(client, f"/tasks/{ident}/attach"))


def _attach_target(client: Client, ref: str) -> str:
    """The task to attach to: a VPS's current incarnation when `ref` names a VPS (its ID
    outlives restarts, each of which is a new task: the host's attach route takes that
    task), else the task `ref` names."""
    try:
        vps_id = client.resolve_vps(ref)
    except RiverError as exc:
        if exc.status != 404:
            raise
        return client.resolve_task(ref)
    return str(client.vps(vps_id)["task_id"])


COMMANDS = {"forward": _forward, "attach": _attach}
