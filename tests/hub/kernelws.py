"""Drive a kernel in a Hub user's single-user server the way JupyterLab does: its REST API
(`/user/<name>/api/kernels`) and kernel websocket (`.../channels`, jupyter_client's message
format) through the Hub's proxy, with that user's Hub token. No nbclient here: the kernel
runs inside the user's VPS, reachable only through the Hub.

`client_bundle` makes the River client (river_magics and what it imports that the server's
image lacks) a zip a kernel can import from, as a user would install it into their home:
the test image carries Jupyter and the Hub, not River's client, and the zip is always this
checkout's code.
"""

from __future__ import annotations

import importlib.util
import io
import json
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import websocket

# What river_magics imports beyond what river-test-vps has (jupyter-server, ipykernel, the Hub).
BUNDLED = ("river_magics", "river_runner", "httpx", "httpcore", "h11", "sniffio", "click",
           "rich", "markdown_it", "mdurl")  # fmt: skip


def client_bundle() -> bytes:
    """A zip of the bundled packages' sources (pure Python, importable by zipimport)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in BUNDLED:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                continue  # not installed here, so not needed by this client either
            root = Path(spec.origin).parent
            for path in root.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    archive.write(path, f"{name}/{path.relative_to(root).as_posix()}")
    return buffer.getvalue()


@dataclass
class HubKernel:
    """One kernel in `user`'s server, reached through the Hub at `hub_url`."""

    hub_url: str
    user: str
    token: str
    kernel_id: str = ""
    ws: Any = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.hub_url}/user/{self.user}/api{path}", headers=self.headers,
            timeout=60, **kwargs,
        )  # fmt: skip

    def start(self) -> HubKernel:
        answer = self.api("POST", "/kernels", json={"name": "python3"})
        assert answer.status_code == 201, answer.text
        self.kernel_id = answer.json()["id"]
        url = self.hub_url.replace("http", "ws", 1)
        self.ws = websocket.create_connection(
            f"{url}/user/{self.user}/api/kernels/{self.kernel_id}/channels",
            header=[f"Authorization: token {self.token}"], timeout=60,
        )  # fmt: skip
        return self

    def put_file(self, name: str, data: bytes) -> None:
        import base64

        answer = self.api("PUT", f"/contents/{name}", json={
            "type": "file", "format": "base64", "content": base64.b64encode(data).decode(),
        })  # fmt: skip
        assert answer.status_code in (200, 201), answer.text

    def run(self, code: str, timeout: float = 180.0) -> str:
        """Execute `code`; its stream, result, display and error output as text."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": self.user,
                       "session": uuid.uuid4().hex, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        parts: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self.ws.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                parts.append(content["text"])
            elif kind in ("execute_result", "display_data", "update_display_data"):
                data = content.get("data", {})
                parts.append(data.get("text/plain") or data.get("text/html", ""))
            elif kind == "error":
                parts.append("\n".join(content.get("traceback", [])) or content.get("evalue", ""))
            elif kind == "status" and content["execution_state"] == "idle":
                return "\n".join(parts)
        raise TimeoutError(f"no idle status within {timeout} s; output so far: {parts}")

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.kernel_id:
            self.api("DELETE", f"/kernels/{self.kernel_id}")
