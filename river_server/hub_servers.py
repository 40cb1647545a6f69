"""`/user/<name>/...` on River: where the Hub's proxy reaches a RiverSpawner server.

A Hub user's single-user server runs in that user's VPS (river_server/hub_spawner.py) on a
runner the Hub cannot route to; River reaches every runner. The Hub gives its proxy
(configurable-http-proxy) only `proto://host:port` as a server's target (no path) and
forwards the browser's path as it is, `/user/<name>/...`; so River answers that path (its
own routes all live under `/river/`, `/lab`, `/api`, ...: no clash), finds the user's
running Hub server VPS, and passes each request on to its port through the runner, as
`/river/proxy/absolute/...` does.

Why River does not check its own login here: the request comes from the Hub's proxy with
the browser's *Hub* cookies, not River's. The single-user server authenticates every
request itself with the Hub's OAuth (JupyterHub's own design: the Hub's proxy checks nothing
either), so this route opens exactly what the Hub's proxy already opens, and only for:

- a VPS created with `hub_port` (RiverSpawner sets it; a user opts their own VPS in), owned
  by the user named in the path, and
- that one port: every other port stays behind River's owner-only proxy.

One server per user (the Hub's default server; named servers are not routed yet).

River's own cookies and XSRF cookie are still stripped (a browser on River's origin must
not hand River's session to a user's server), and the path is passed whole (the server's
base URL is the Hub's `/user/<name>/`). The server's own `?token=` and cookies reach it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlsplit

from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from river_runner.protocol import TaskState
from river_server import db
from river_server.proxy import RiverProxyHandler
from river_server.standby import refuse_if_standby

HUB_SERVER_ROUTE = r"/user/([^/]+)(/.*)?"


class HubServerProxyHandler(RiverProxyHandler):
    """The proxy route without River's login: only a VPS's declared Hub server port."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        await JupyterHandler.prepare(self)
        if self._finished:
            return
        if refuse_if_standby(self, leader_only=True):
            return
        name, path = self.path_args
        self.target = self._resolve_hub(unquote(name), path or "")
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
        node = self.river.nodes.connection(task.node or "")
        if node is None:
            raise web.HTTPError(503, f"node {task.node} is offline; try again when it is back")
        runner = urlsplit(node.url)
        self.target_host = runner.hostname or ""
        self.runner_secret = node.secret
        whole = f"user/{quote(name, safe='')}{path}"
        forward = f"/api/tasks/{task.id}/forward/{port}/{whole}"
        return self.target_host, runner.port or 80, forward

    def check_xsrf_cookie(self) -> None:
        """The server checks its own XSRF token (jupyter_server does); River has no session
        here to protect."""

    async def http_get(self, *args: Any) -> None:
        await self.proxy(*self.target)

    def _get_context_path(self, host: str, port: int) -> str:
        """No X-Forwarded-Prefix: the server knows its whole path (the Hub's base URL), so
        its redirects (to the Hub's OAuth at `/hub/...`) must not be moved under River's."""
        return ""
