"""`/user/<name>/...` on River's JupyterHub-servers listener: the Hub proxy's target.

A Hub user's single-user server runs in that user's VPS (river_server/hub_spawner.py) on a
runner the Hub cannot route to; River reaches every runner. The Hub gives its proxy
(configurable-http-proxy) only `proto://host:port` as a server's target (no path) and
forwards the browser's path as it is, `/user/<name>/...`; this listener finds the user's
running Hub server VPS and passes each request on to its port through the runner, as
`/river/proxy/absolute/...` does.

Why a listener of its own (c.RiverHost.hub_servers_port), not a route on River's origin:
the single-user server runs code its user controls. On River's origin its JavaScript would
run with the River session of whoever opened the link (bob opening alice's `/user/alice/`
would run alice's script as bob: docs/security.md). So River's main origin answers 404 for
`/user/...`, and this listener serves *only* these forwards: no River page, API, login or
cookie; a browser reaches it only through the Hub's proxy, on the Hub's origin, where every
user's server already lives (JupyterHub's own model).

Why it does not check a login: requests come from the Hub's proxy with the browser's *Hub*
cookies. The single-user server authenticates every request itself with the Hub's OAuth
(the Hub's proxy checks nothing either), so this listener opens exactly what the Hub's
proxy already opens, and only for:

- a VPS created with `hub_port` (RiverSpawner sets it; a user opts their own VPS in), owned
  by the user named in the path, and
- that one port: every other port stays behind River's owner-only proxy.

One server per user (the Hub's default server; named servers are not routed yet). River's
login and XSRF cookies are still stripped (cookies are per host, not per port, so a
browser may send River's here), and the path is passed whole (the server's base URL is the
Hub's `/user/<name>/`). The server's own `?token=` and cookies reach it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from jupyter_server.base.call_context import CallContext
from tornado import httpserver, web

from river_runner.protocol import TaskState
from river_runner.wire.forwarding import APP_AUTHORIZATION
from river_server import db
from river_server.proxy import RiverProxyHandler
from river_server.standby import refuse_if_standby

HUB_SERVER_ROUTE = r"/user/([^/]+)(/.*)?"


class HubServerProxyHandler(RiverProxyHandler):
    """The forward without River's login: only a VPS's declared Hub server port."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # No River identity here, ever: River's cookies or tokens sent to this listener are
        # not read (nor refreshed, nor set), so nothing here acts as a River user.
        CallContext.set(CallContext.JUPYTER_HANDLER, self)
        self.current_user = self._jupyter_current_user = None
        if refuse_if_standby(self, leader_only=True):
            return
        # Tornado has percent-decoded the name once, as the Hub's proxy encoded it once;
        # decoding again would let `/user/alic%2565/` (user "alic%65") reach alice's server.
        name, path = self.path_args
        self.target = self._resolve_hub(name, path or "")
        self.forward_query = self.request.query  # the server's own ?token= reaches it

    def _server_task(self, name: str) -> db.Task | None:
        """The user's newest Hub server VPS incarnation that runs (or is paused)."""
        live = (TaskState.RUNNING.value, TaskState.PAUSED.value)
        found = [
            tasks[-1]
            for tasks in self.river.vps.incarnations(owner=name).values()
            if tasks[-1].spec["vps"].get("hub_port") and tasks[-1].state in live
        ]
        return max(found, key=lambda task: task.id) if found else None

    def _resolve_hub(self, name: str, path: str) -> tuple[str, int, str]:
        task = self._server_task(name)
        if task is None:
            # The same answer for "no such user" and "no server running": this route says
            # nothing about VPSes it does not serve.
            raise web.HTTPError(503, f"no JupyterHub server of {name} runs in River now")
        port = int(task.spec["vps"]["hub_port"])
        runner_port = self._aim_at_runner(task)
        whole = f"user/{quote(name, safe='')}{path}"
        forward = f"/api/tasks/{task.id}/forward/{port}/{whole}"
        return self.target_host, runner_port, forward

    def proxy_request_headers(self) -> Any:
        """The Hub's `Authorization` (the user's Hub token) reaches the server, renamed past
        the runner hop (whose own `Authorization` is the runner credential)."""
        headers = super().proxy_request_headers()
        headers.pop(APP_AUTHORIZATION, None)
        sent = self.request.headers.get("Authorization")
        if sent:
            headers[APP_AUTHORIZATION] = sent
        return headers

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Plain JSON, never River's page template (which would set River's XSRF cookie)."""
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    def check_xsrf_cookie(self) -> None:
        """The server checks its own XSRF token (jupyter_server does); River has no session
        here to protect."""

    async def http_get(self, *args: Any) -> None:
        await self.proxy(*self.target)

    def _get_context_path(self, host: str, port: int) -> str:
        """No X-Forwarded-Prefix: the server knows its whole path (the Hub's base URL), so
        its redirects (to the Hub's OAuth at `/hub/...`) must not be moved under River's."""
        return ""


class NotAHubServer(web.RequestHandler):
    """Every other path of the listener: 404, and nothing of River's."""

    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "message": "this River listener serves only JupyterHub servers at /user/<name>/; "
            "River itself is on its own port",
        }))  # fmt: skip


def servers_app(settings: dict[str, Any]) -> web.Application:
    """The listener's application: the Jupyter server's settings (River's services, the
    runner connections), one route, no XSRF cookies of its own."""
    own = {**settings, "xsrf_cookies": False, "default_handler_class": NotAHubServer}
    # No static files: tornado would add Jupyter's /static/ routes (and their error pages,
    # which set River's XSRF cookie) for a `static_path` (tests/security/
    # test_hub_servers_walk.py found them).
    for key in ("default_handler_args", "static_path", "static_handler_class"):
        own.pop(key, None)
    return web.Application([(HUB_SERVER_ROUTE, HubServerProxyHandler)], **own)


def listen(settings: dict[str, Any], address: str, port: int) -> httpserver.HTTPServer:
    """Start the listener on `address:port` (OSError when it cannot bind)."""
    server = httpserver.HTTPServer(servers_app(settings), xheaders=False)
    server.listen(port, address)
    return server
