"""Talk to a JupyterLab terminal over its WebSocket as a user would (shared by the container
and the VM VPS terminal tests): wait for the prompt, type, read until the answer shows."""

from __future__ import annotations

import asyncio
import json

from tornado import httpclient, websocket

from tests.cluster import Cluster


def terminal_output(
    cluster: Cluster, token: str, name: str, command: str, want: str, timeout: float = 20
) -> str:
    """Run `command` through the Jupyter terminal's websocket; the output once `want` shows
    (an AssertionError with the output so far after `timeout` seconds)."""

    async def talk() -> str:
        url = cluster.url.replace("http", "ws", 1) + f"/terminals/websocket/{name}"
        request = httpclient.HTTPRequest(url, headers={"Authorization": f"token {token}"})
        conn = await websocket.websocket_connect(request)
        seen = ""
        sent = False
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while want not in seen:
                # Type once the shell shows its prompt (typed-ahead input meets its
                # cursor-position query, as an impatient user's would).
                if not sent and ("# " in seen or "$ " in seen):
                    await asyncio.sleep(0.3)
                    conn.write_message(json.dumps(["stdin", command + "\r"]))
                    sent = True
                left = deadline - asyncio.get_running_loop().time()
                assert left > 0, f"no {want!r} in terminal output: {seen!r}"
                try:
                    message = await asyncio.wait_for(conn.read_message(), left)
                except asyncio.TimeoutError:
                    raise AssertionError(f"no {want!r} in terminal output: {seen!r}") from None
                assert message is not None, f"terminal closed; output so far: {seen!r}"
                kind, *rest = json.loads(message)
                if kind == "stdout":
                    seen += rest[0]
        finally:
            conn.close()
        return seen

    return asyncio.run(talk())
