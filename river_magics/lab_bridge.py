"""River's API inside a user's own Jupyter server (a Hub single-user server), as that user.

The lab panel (labextension/src/api.ts) calls its *own* Jupyter server's `/river/api/...`
with the page's cookie and XSRF header, and opens `/river/api/events` as an EventSource.
On River's host those routes are River's; in a Hub user's server the host extension is not
loaded, so they would 404. This extension serves the same paths there by forwarding each
request to `$RIVER_URL/river/api/...` with `Authorization: token $RIVER_TOKEN`: the token
the Hub gave this server (river_server/hub_spawn.py), so River sees the server's own user
and decides what they may do, exactly as for their `%river` magics.

Why a forwarder rather than pointing the panel at RIVER_URL: the browser would need River's
origin, River's cookie and CORS, and a token in page script; here the page keeps talking to
its own origin under Jupyter's own login (`web.authenticated`, XSRF), and River's token
never leaves the server process. What crosses: the method, path, query (less Jupyter's
`token` parameter), body (bounded) and content headers. What never crosses: the browser's
cookies and its Authorization header (Jupyter's token). River's answers (errors included)
come back with their status and body; the event stream is relayed chunk by chunk, unbuffered.

Active only when RIVER_URL is set and the River host extension (`river_server`) is not
enabled in this server, so enabling it everywhere (jupyter_server_config.d) is harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

# River's own default request bound (c.RiverHost.max_request_body): nothing larger is useful.
MAX_BODY = 16 * 1024 * 1024
# Request headers that describe the body or what the caller accepts; nothing else goes on.
FORWARD_REQUEST = ("content-type", "accept", "last-event-id")
# Answer headers the panel needs; never Set-Cookie (River's cookies are not this origin's).
FORWARD_RESPONSE = ("content-type", "cache-control", "content-disposition", "x-accel-buffering")
# Query parameters that belong to this Jupyter server, not to River.
LOCAL_PARAMS = frozenset({"token", "_xsrf"})


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "river_magics.lab_bridge"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the forwarding route, unless this server is River's host or has no RIVER_URL."""
    river_url = os.environ.get("RIVER_URL", "").strip().rstrip("/")
    token = os.environ.get("RIVER_TOKEN", "").strip()
    if serverapp.jpserver_extensions.get("river_server"):
        serverapp.log.info("River lab bridge: the River host runs here; not forwarding")
        return
    if not river_url:
        serverapp.log.info("River lab bridge: RIVER_URL is not set; not forwarding")
        return
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], r"/river/api/(.*)")
    web_app.add_handlers(
        ".*$",
        [(route, RiverForwardHandler, {"river_url": river_url, "river_token": token})],
    )
    serverapp.log.info("River lab bridge: /river/api/* goes to %s/river/api/", river_url)


class RiverForwardHandler(JupyterHandler):
    """Forwards one request of this server's logged-in user to River as RIVER_TOKEN's user."""

    river_url: str
    river_token: str
    _forwarding: asyncio.Task[None] | None = None

    def initialize(self, river_url: str, river_token: str) -> None:
        self.river_url = river_url
        self.river_token = river_token

    @web.authenticated
    async def get(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def post(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def put(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def patch(self, path: str) -> None:
        await self._forward(path)

    @web.authenticated
    async def delete(self, path: str) -> None:
        await self._forward(path)

    def on_connection_close(self) -> None:
        # The browser left (a closed panel's event stream): stop reading River's answer.
        if self._forwarding is not None:
            self._forwarding.cancel()

    def _fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def _target(self, path: str) -> str:
        query = [
            (key, value)
            for key, value in parse_qsl(self.request.query, keep_blank_values=True)
            if key not in LOCAL_PARAMS
        ]
        url = f"{self.river_url}/river/api/{path}"
        return f"{url}?{urlencode(query)}" if query else url

    async def _forward(self, path: str) -> None:
        if not self.river_token:
            self._fail(503, "RIVER_TOKEN is not set in this server's environment")
            return
        body = self.request.body or None
        if body is not None and len(body) > MAX_BODY:
            self._fail(413, f"request body over {MAX_BODY} bytes; send less")
            return
        headers = {
            name: value
            for name, value in self.request.headers.items()
            if name.lower() in FORWARD_REQUEST
        }
        headers["Authorization"] = f"token {self.river_token}"
        # No read timeout: the event stream stays open as long as the page does.
        timeout = httpx.Timeout(30.0, read=None)
        self._forwarding = asyncio.current_task()
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
                client.stream(
                    self.request.method or "GET",
                    self._target(path),
                    headers=headers,
                    content=body,
                ) as answer,
            ):
                self.set_status(answer.status_code)
                for name in FORWARD_RESPONSE:
                    if name in answer.headers:
                        self.set_header(name, answer.headers[name])
                async for chunk in answer.aiter_bytes():
                    self.write(chunk)
                    await self.flush()  # unbuffered: an event reaches the page as it comes
        except httpx.HTTPError as exc:
            if not self._headers_written:
                self._fail(502, f"River at {self.river_url} did not answer: {exc}")
                return
        except (StreamClosedError, asyncio.CancelledError):
            return  # the browser went away
        finally:
            self._forwarding = None
        if not self._finished:
            self.finish()
