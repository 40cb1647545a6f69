"""`python -m river_runner.vps_shell WS_URL`: this terminal becomes a shell in a VPS.

The host starts it as a JupyterLab terminal's `shell_command`; WS_URL is the runner's exec
WebSocket with a single-use ticket (river_runner.app.ExecSocket). Local stdin goes raw to
the remote TTY, its output comes back to stdout, and window size changes follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import struct
import sys
import termios
import tty

from tornado import httpclient, websocket


def window_size(fd: int) -> tuple[int, int] | None:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


async def run(url: str) -> int:
    try:
        conn = await websocket.websocket_connect(
            httpclient.HTTPRequest(url, connect_timeout=15, request_timeout=15)
        )
    except Exception as exc:  # noqa: BLE001 - any failure ends the terminal with a message
        print(f"river: cannot open the VPS shell: {exc}", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()

    def send_size() -> None:
        size = window_size(stdin)
        if size:
            conn.write_message(json.dumps({"resize": list(size)}))

    def on_input() -> None:
        try:
            data = os.read(stdin, 65536)
        except OSError:
            data = b""
        if not data:
            conn.close()
            return
        conn.write_message(data, binary=True)

    saved = None
    if os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
        loop.add_signal_handler(signal.SIGWINCH, send_size)
        send_size()
    loop.add_reader(stdin, on_input)
    try:
        while True:
            message = await conn.read_message()
            if message is None:
                break
            if isinstance(message, str):
                message = message.encode()
            os.write(stdout, message)
    finally:
        loop.remove_reader(stdin)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        with contextlib.suppress(Exception):
            conn.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m river_runner.vps_shell WS_URL", file=sys.stderr)
        return 2
    return asyncio.run(run(args[0]))


if __name__ == "__main__":
    sys.exit(main())
