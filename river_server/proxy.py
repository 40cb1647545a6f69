"""`/river/proxy/<id>/<port>/...`: a VPS's or task's web UI (Jupyter, TensorBoard, ...).

A jupyter-server-proxy `ProxyHandler` whose target is computed per request: the task's
runner, at its port-forward route (`river_runner/port_forward.py`), which passes the
request on to the port inside the container. Two forms, as jupyter-server-proxy has:

- `/river/proxy/ID/PORT/PATH`: the app sees `/PATH` (and `X-Forwarded-Prefix`);
- `/river/proxy/absolute/ID/PORT/PATH`: the app sees the whole path, for apps started with
  that prefix as their base URL (Jupyter's `base_url`, TensorBoard's `--path_prefix`).

The app's pages run on River's own origin, with the session of whoever opens them, so only
the owner of the VPS/task gets through: operators and admins get 403 (they can read and
control the task through the API, but opening its app would run the owner's JavaScript as
them); anyone else gets 404, as for the task itself. Requests without a River login get 403
(a browser opening a page is sent to the login page instead). Cookie-authenticated requests
other than GET/HEAD/OPTIONS need an XSRF token (header `X-XSRFToken` matching an `_xsrf`
cookie), as Jupyter's own API does; token-authenticated ones are exempt.

River's credentials stay here (river_server/proxy_credentials.py): the `Authorization`
header is replaced by the runner credential (which the runner drops), River's login and
XSRF cookies are removed from `Cookie`, and a `?token=` that is a River credential is
removed from the query, so the app behind the proxy never sees them; an app's own token
travels in the query (`?token=`) and reaches it. Responses pass through byte for byte as
they arrive, whatever their size (`_proxy_buffered`); WebSockets go through
jupyter-server-proxy's own relay.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import ProxyHandler
from tornado import web

from river_runner.ids import parse_id
from river_runner.protocol import TaskState, runner_auth_header
from river_runner.splice import relay_sockets, take_socket
from river_runner.wire.forwarding import open_connection, request_head
from river_server import db
from river_server.auth import RiverIdentityProvider, role_at_least, user_role
from river_server.proxy_credentials import cookie_values, forwarded_cookies, forwarded_query
from river_server.standby import refuse_if_standby

PROXY_ROUTE = r"/river/proxy/(absolute/)?([^/]+)/(\d+)(.*)"


def _only_target(handler: RiverProxyHandler, host: str) -> bool:
    """jupyter-server-proxy's host allowlist: only the runner this request resolved to."""
    return host == handler.target_host


class RiverProxyHandler(ProxyHandler):
    """The proxy route. `prepare` authenticates and resolves the target, so both plain
    requests and WebSocket upgrades fail with a real HTTP status before anything opens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("host_allowlist", _only_target)
        super().__init__(*args, **kwargs)
        self.target_host = ""
        self.target: tuple[str, int, str] | None = None
        self.forward_query = ""

    @property
    def river(self) -> Any:
        return self.settings["river"]

    async def prepare(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # JupyterHandler.prepare resolves the user; ProxyHandler.prepare would then redirect
        # any unauthenticated GET to the login page, which an API client cannot follow.
        await JupyterHandler.prepare(self)
        if self._finished:
            return
        if self.current_user is None:
            wants_page = "text/html" in self.request.headers.get("Accept", "")
            upgrading = self.request.headers.get("Upgrade", "").lower() == "websocket"
            if self.request.method == "GET" and wants_page and not upgrading:
                web.authenticated(lambda handler: None)(self)  # redirect to the login page
                return
            raise web.HTTPError(403, "log in to River (or send Authorization: token ...)")
        if refuse_if_standby(self, leader_only=True):  # only the leader reaches runners
            return
        absolute, ident, port, path = self.path_args
        self.target = self._resolve(bool(absolute), ident, int(port), path or "")
        self.forward_query = forwarded_query(self.request.query, self._is_river_token)

    def _is_river_token(self, token: str) -> bool:
        """Whether River would accept `token` (an API token or the server token)."""
        provider = self.identity_provider
        if not isinstance(provider, RiverIdentityProvider):
            return True  # not River's login: keep every `?token=` away from the app
        if not token.isascii():
            return False  # River's tokens are ASCII (and hmac refuses to compare others)
        return provider._user_for_any_token(self.river, self, token) is not None

    def check_xsrf_cookie(self) -> None:
        """Jupyter's rule, which jupyter-server-proxy switches off ("defer to proxied
        apps"): apps such as TensorBoard have no login of their own and rely on River's, so
        a page elsewhere must not make the owner's browser post to them. Cookie-authenticated
        requests that change things need `X-XSRFToken` (or `_xsrf`) matching one of the
        `_xsrf` cookies on this origin: River's, or the app's own at its longer path (its
        pages send theirs)."""
        if not hasattr(self, "_jupyter_current_user") or self.current_user is None:
            return  # too early (prepare checks again), or no login: prepare answers 403
        if self.token_authenticated or self.settings.get("disable_check_xsrf", False):
            return
        if not self.check_origin():
            raise web.HTTPError(403, "cross-origin request to a proxied app refused")
        fix = (
            "send the value of the _xsrf cookie in an X-XSRFToken header, "
            "or authenticate with Authorization: token ..."
        )
        sent = (
            self.get_argument("_xsrf", None)
            or self.request.headers.get("X-Xsrftoken")
            or self.request.headers.get("X-Csrftoken")
        )
        if not sent:
            raise web.HTTPError(
                403, f"XSRF token missing for a cookie-authenticated request: {fix}"
            )
        _, token, _ = self._decode_xsrf_token(sent)
        name = self.settings.get("xsrf_cookie_name", "_xsrf")
        for value in cookie_values(self.request.headers.get("Cookie", ""), name):
            _, expected, _ = self._decode_xsrf_token(value.strip('"'))
            if token and expected and hmac.compare_digest(token, expected):
                return
        raise web.HTTPError(403, f"XSRF token does not match the _xsrf cookie: {fix}")

    def _resolve(self, absolute: bool, ident: str, port: int, path: str) -> tuple[str, int, str]:
        if not 1 <= port <= 65535:
            raise web.HTTPError(400, f"port must be 1-65535, not {port}")
        task = self._owned_task(ident)
        if task.state not in (TaskState.RUNNING.value, TaskState.PAUSED.value):
            raise web.HTTPError(409, f"{ident} is {task.state}, not running")
        runner_port = self._aim_at_runner(task)
        prefix = f"river/proxy/{'absolute/' if absolute else ''}{ident}/{port}"
        self.proxy_base = prefix
        app_path = (url_path_join(self.base_url, prefix) + path) if absolute else path
        forward = f"/api/tasks/{task.id}/forward/{port}/{app_path.lstrip('/')}"
        return self.target_host, runner_port, forward

    def _aim_at_runner(self, task: db.Task) -> int:
        """Point this request at the runner of TASK's node and return that runner's port.

        Shared by every proxy route (this one and the Hub's server route) so the offline
        answer and the runner credential the hop carries are decided in one place.
        """
        node = self.river.nodes.connection(task.node or "")
        if node is None:
            raise web.HTTPError(503, f"node {task.node} is offline; try again when it is back")
        runner = urlsplit(node.url)
        self.target_host = runner.hostname or ""
        self.runner_secret = node.secret
        return runner.port or 80

    def _owned_task(self, ident: str) -> db.Task:
        """The VPS's current task, or the task, when the caller owns it. Others who may see
        it (operators, admins) get 403: its pages would run as them; the rest get 404."""
        try:
            number = parse_id(ident)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        task = self.river.vps.current(number)
        if task is None:
            with self.river.sessions() as session:
                task = session.get(db.Task, number)
        user = self.current_user
        if task is not None and task.owner == user.username:
            return task
        if task is None or not role_at_least(user_role(user), "operator"):
            raise web.HTTPError(404, f"no VPS or task {ident}")
        raise web.HTTPError(
            403,
            f"only {task.owner}, the owner of {ident}, may open its apps through the proxy: "
            "its pages would run with your River session. Use the task's API (logs, exec) "
            "instead, or ask the owner",
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON `{"message": ...}` for API clients (a page for browsers), like River's API."""
        if "text/html" in self.request.headers.get("Accept", ""):
            super().write_error(status_code, **kwargs)
            return
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))

    # ---- what reaches the runner --------------------------------------------------------
    def proxy_request_headers(self) -> Any:
        headers = super().proxy_request_headers()
        if "Cookie" in headers:
            kept = forwarded_cookies(
                "; ".join(headers.get_list("Cookie")),
                self.identity_provider.get_cookie_name(self),
                self.settings.get("xsrf_cookie_name", "_xsrf"),
            )
            del headers["Cookie"]
            if kept:
                headers["Cookie"] = kept
        return headers

    def get_client_uri(self, protocol: str, host: str, port: int, proxied_path: str) -> str:
        """jupyter-server-proxy's URI, less the River credentials taken from the query."""
        uri = super().get_client_uri(protocol, host, port, proxied_path)
        query = self.request.query
        base = uri[: -len(query) - 1] if query and uri.endswith(f"?{query}") else uri
        return f"{base}?{self.forward_query}" if self.forward_query else base

    def get_request_headers_override(self) -> dict[str, str]:
        return runner_auth_header(self.runner_secret)

    async def _proxy_buffered(self, host: str, port: int, proxied_path: str, body, client):  # noqa: ANN001
        """Pass the runner's answer through byte for byte, whatever its size.

        jupyter-server-proxy would hold the whole response in memory here (it streams only
        `text/event-stream`, re-chunking every 64 KiB through Tornado's HTTP client). The
        request it would send (its headers, X-Forwarded-*, the runner credential) is built
        by its own `_build_proxy_request`; then the client's connection is handed over and
        relayed to the runner's in the kernel (river_runner/splice.py), as the runner relays
        to the container.
        """
        client.close()
        request = self._build_proxy_request(host, port, proxied_path, body)
        url = urlsplit(request.url)
        target = url.path + (f"?{url.query}" if url.query else "")
        head = request_head(
            request.method,
            target,
            request.headers.get_all(),
            body or b"",
            upgrade=False,
            keep_authorization=True,
        )
        try:
            upstream = await open_connection(host, port)
        except (OSError, asyncio.TimeoutError) as exc:
            raise web.HTTPError(502, f"the runner at {host}:{port} did not answer: {exc}") from None
        downstream = take_socket(self.detach())
        try:
            await asyncio.get_running_loop().sock_sendall(upstream, head + (body or b""))
        except OSError:
            upstream.close()
            downstream.close()
            return
        await relay_sockets(downstream, upstream)

    # ---- the methods jupyter-server-proxy dispatches ------------------------------------
    async def http_get(self, *args: Any) -> None:
        if self.path_args[3] in (None, "") and self.request.method == "GET":
            query = f"?{self.request.query}" if self.request.query else ""
            self.redirect(self.request.path + "/" + query)  # relative links need the slash
            return
        await self.proxy(*self.target)

    async def _any(self, *args: Any) -> None:
        await self.proxy(*self.target)

    post = put = delete = head = patch = options = _any  # type: ignore[assignment]

    async def open(self, *args: Any) -> None:  # type: ignore[override]
        await self.proxy_open(*self.target)
