"""Every route of the River extension, called as five callers, answers the expected code.

Callers: no credentials, a viewer, another user, the owner of the thing the route touches,
and an admin (the server token). The route list comes from the extension itself
(`RiverHost.initialize_handlers`), so a route added without a row here fails
`test_every_route_has_a_row`.

To add a route: add a `Row` to ROUTES with the route's regex exactly as registered in
river_server/app.py, a concrete path (placeholders below), and the code each caller gets.
Placeholders: {task} the owner's long-lived queued task; {fresh_task} a new queued task of
the owner's, made for each call; {owner}; {fresh_user}; {owner_token} a new token of the
owner's per call; {fresh_invite}; {group}; {fresh_group}; {env} an environment that does
not exist; {blob} a blob of {task}. The owner also holds the data-plane blob OWNER_DATA.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado import web

from river_runner import digest as blob_digest
from river_server.app import RiverHost
from river_server.proxy import PROXY_ROUTE
from tests.cluster import Cluster

A = "/river/api"
CALLERS = ("anon", "viewer", "other", "owner", "admin")
OWNER_PASSWORD = "owner-password-1"
Code = int | frozenset
OWNER_DATA = b"owner-data-plane-bytes"
OWNER_DATA_DIGEST = blob_digest.of_bytes(OWNER_DATA)
NEW_DATA = b"anyone-may-upload-these"
NEW_DATA_DIGEST = blob_digest.of_bytes(NEW_DATA)


def E(anon: Code, viewer: Code, other: Code, owner: Code, admin: Code) -> dict[str, Code]:  # noqa: N802
    return dict(zip(CALLERS, (anon, viewer, other, owner, admin), strict=True))


def either(*codes: int) -> frozenset:
    return frozenset(codes)


# Environments drive the host's Docker daemon: without one they answer 503.
ENV_OK = either(200, 503)
ENV_MISSING = either(404, 503)
ENV_BAD = either(400, 503)

# Anonymous callers: Jupyter answers 403 for API routes (and for unauthenticated POSTs, its
# XSRF check answers 403 first); runner routes answer 401 to anything but a runner secret.
NO = 403
RUNNER = E(401, 401, 401, 401, 401)
EVERYONE = E(NO, 200, 200, 200, 200)
ADMIN_ONLY = E(NO, 403, 403, 403, 200)


@dataclass
class Row:
    method: str
    pattern: str  # the route regex as registered by RiverHost
    path: str  # concrete path, with placeholders
    expect: dict[str, Code]
    body: Callable[[Context], Any] | dict | bytes | None = None


ROUTES: list[Row] = [
    # ---- cluster state and tasks
    Row("GET", rf"{A}/nodes", f"{A}/nodes", EVERYONE),
    Row("GET", rf"{A}/share", f"{A}/share", EVERYONE),
    # Metrics and usage history (river_server/history.py): this host has no runner, so a
    # node's history is 404 to every logged-in caller (viewers read a real one in
    # tests/integration/test_history.py); usage is everyone's, filtered by role.
    Row(
        "GET",
        rf"{A}/nodes/([^/]+)/history",
        f"{A}/nodes/no-such-node/history",
        E(NO, 404, 404, 404, 404),
    ),
    Row("GET", rf"{A}/usage/history", f"{A}/usage/history", EVERYONE),
    Row("POST", rf"{A}/leases", f"{A}/leases", E(NO, 403, 201, 201, 201)),
    Row(
        "POST",
        rf"{A}/leases/([^/]+)/(renew|release)",
        f"{A}/leases/1/renew",
        E(NO, 403, 404, 404, 404),
    ),
    Row(
        "POST",
        rf"{A}/leases/([^/]+)/(renew|release)",
        f"{A}/leases/1/release",
        E(NO, 403, 404, 404, 404),
    ),
    Row("GET", rf"{A}/tasks", f"{A}/tasks?all=1", EVERYONE),
    Row("POST", rf"{A}/tasks", f"{A}/tasks", E(NO, 403, 201, 201, 201), {"command": ["true"]}),
    Row("GET", rf"{A}/tasks/([^/]+)", f"{A}/tasks/{{task}}", EVERYONE),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/(kill|pause|resume)",
        f"{A}/tasks/{{fresh_task}}/kill",
        E(NO, 404, 404, 200, 200),
    ),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/(kill|pause|resume)",
        f"{A}/tasks/{{fresh_task}}/pause",
        E(NO, 404, 404, 409, 409),
    ),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/(kill|pause|resume)",
        f"{A}/tasks/{{fresh_task}}/resume",
        E(NO, 404, 404, 409, 409),
    ),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/(approve|reject)",
        f"{A}/tasks/{{fresh_task}}/approve",
        E(NO, 403, 403, 403, 409),
        {"reason": "ok"},
    ),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/(approve|reject)",
        f"{A}/tasks/{{fresh_task}}/reject",
        E(NO, 403, 403, 403, 409),
        {},
    ),
    # WebSockets (tests/docker/test_forward_attach.py opens them): a plain GET from the
    # owner is 400 "this route is a WebSocket"; admins are not the owner: 403.
    Row(
        "GET",
        rf"{A}/tasks/([^/]+)/attach",
        f"{A}/tasks/{{task}}/attach",
        E(NO, 404, 404, 409, 403),
    ),
    Row("GET", rf"{A}/tasks/([^/]+)/logs", f"{A}/tasks/{{task}}/logs", E(NO, 404, 404, 200, 200)),
    Row(
        "GET",
        rf"{A}/tasks/([^/]+)/transitions",
        f"{A}/tasks/{{task}}/transitions",
        E(NO, 404, 404, 200, 200),
    ),
    Row("GET", rf"{A}/tasks/([^/]+)/blobs", f"{A}/tasks/{{task}}/blobs", E(NO, 404, 404, 200, 200)),
    Row(
        "GET",
        rf"{A}/tasks/([^/]+)/blobs/([^/]+)",
        f"{A}/tasks/{{task}}/blobs/{{blob}}",
        E(NO, 404, 404, 200, 200),
    ),
    Row(
        "PUT",
        rf"{A}/tasks/([^/]+)/blobs/([^/]+)",
        f"{A}/tasks/{{task}}/blobs/new.bin",
        E(NO, 403, 404, 201, 201),
        b"data",
    ),
    Row(
        "GET", rf"{A}/tasks/([^/]+)/pulled", f"{A}/tasks/{{task}}/pulled", E(NO, 404, 404, 404, 404)
    ),
    Row("GET", rf"{A}/events", f"{A}/events?task={{task}}", EVERYONE),
    # put/get (a queued task: the owner hears 409; only the owner, admins included, else 404)
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/files/put",
        f"{A}/tasks/{{task}}/files/put",
        E(NO, 403, 404, 409, 404),
        {"path": "x", "digest": OWNER_DATA_DIGEST},
    ),
    Row(
        "POST",
        rf"{A}/tasks/([^/]+)/files/get",
        f"{A}/tasks/{{task}}/files/get",
        E(NO, 403, 404, 409, 404),
        {"path": "x"},
    ),
    # ---- the data plane: blobs by digest, readable only by those who sent the bytes
    Row(
        "POST",
        rf"{A}/data",
        f"{A}/data",
        E(NO, 403, 200, 200, 200),
        {"blobs": [{"digest": OWNER_DATA_DIGEST, "size": len(OWNER_DATA)}]},
    ),
    Row("GET", rf"{A}/data/([^/]+)", f"{A}/data/{OWNER_DATA_DIGEST}", E(NO, 404, 404, 200, 404)),
    Row(
        "PUT",
        rf"{A}/data/([^/]+)",
        f"{A}/data/{NEW_DATA_DIGEST}",
        E(NO, 403, 201, 201, 201),
        NEW_DATA,
    ),
    # ---- VPSes (lifecycle and ownership with a real daemon: tests/docker/test_vps.py; this
    # host has no docker node, so only refusals and misses are checked here)
    Row("GET", rf"{A}/vps", f"{A}/vps", EVERYONE),
    Row("POST", rf"{A}/vps", f"{A}/vps", E(NO, 403, 400, 400, 400), {"backend": "qemu"}),
    Row("GET", rf"{A}/vps/([^/]+)", f"{A}/vps/1", E(NO, 404, 404, 404, 404)),
    Row("DELETE", rf"{A}/vps/([^/]+)", f"{A}/vps/1", E(NO, 404, 404, 404, 404)),
    Row("POST", rf"{A}/vps/([^/]+)/terminal", f"{A}/vps/1/terminal", E(NO, 404, 404, 404, 404)),
    Row(
        "POST",
        rf"{A}/vps/([^/]+)/exec",
        f"{A}/vps/1/exec",
        E(NO, 404, 404, 404, 404),
        {"command": ["true"]},
    ),
    Row(
        "GET",
        rf"{A}/vps/([^/]+)/forward/([^/]+)",
        f"{A}/vps/1/forward/22",
        E(NO, 404, 404, 404, 404),
    ),
    Row(
        "POST",
        rf"{A}/vps/([^/]+)/apps",
        f"{A}/vps/1/apps",
        E(NO, 404, 404, 404, 404),
        {"app": "jupyter"},
    ),
    Row("GET", rf"{A}/vps/([^/]+)/snapshots", f"{A}/vps/1/snapshots", E(NO, 404, 404, 404, 404)),
    Row(
        "DELETE",
        rf"{A}/vps/([^/]+)/snapshots/([^/]+)",
        f"{A}/vps/1/snapshots/1",
        E(NO, 404, 404, 404, 404),
    ),
    *[
        Row(
            "POST",
            rf"{A}/vps/([^/]+)/(stop|restart|pause|resume|snapshot)",
            f"{A}/vps/1/{action}",
            E(NO, 404, 404, 404, 404),
        )
        for action in ("stop", "restart", "pause", "resume", "snapshot")
    ],
    # ---- environments (their own ownership rules are tested with Docker)
    Row("GET", rf"{A}/environments", f"{A}/environments", E(NO, *[ENV_OK] * 4)),
    Row(
        "POST",
        rf"{A}/environments",
        f"{A}/environments",
        E(NO, 403, ENV_BAD, ENV_BAD, ENV_BAD),
        {"name": "Not A Valid Name!", "image": "river-test-busybox"},
    ),
    Row(
        "GET",
        rf"{A}/environments/([^/]+)",
        f"{A}/environments/{{env}}",
        E(NO, *[ENV_MISSING] * 4),
    ),
    Row(
        "DELETE",
        rf"{A}/environments/([^/]+)",
        f"{A}/environments/{{env}}",
        E(NO, 403, ENV_MISSING, ENV_MISSING, ENV_MISSING),
    ),
    Row(
        "POST",
        rf"{A}/environments/([^/]+)/(export|exec)",
        f"{A}/environments/{{env}}/export",
        E(NO, 403, ENV_MISSING, ENV_MISSING, ENV_MISSING),
    ),
    Row(
        "POST",
        rf"{A}/environments/([^/]+)/(export|exec)",
        f"{A}/environments/{{env}}/exec",
        E(NO, 403, ENV_MISSING, ENV_MISSING, ENV_MISSING),
        {"command": ["true"]},
    ),
    # ---- overlay network (off on this host: reservations answer 409; see test_overlay*)
    Row("GET", rf"{A}/overlay", f"{A}/overlay", EVERYONE),
    Row(
        "DELETE",
        rf"{A}/overlay/allocations/([^/]+)",
        f"{A}/overlay/allocations/no-such-node",
        E(NO, 403, 403, 403, 404),
    ),
    Row("GET", rf"{A}/overlay/reservations", f"{A}/overlay/reservations", EVERYONE),
    Row(
        "POST",
        rf"{A}/overlay/reservations",
        f"{A}/overlay/reservations",
        E(NO, 403, 409, 409, 409),
        {},
    ),
    Row(
        "POST",
        rf"{A}/overlay/reservations/release",
        f"{A}/overlay/reservations/release",
        E(NO, 409, 409, 409, 409),
        {"token": "rip_not-a-reservation"},
    ),
    Row(
        "DELETE",
        rf"{A}/overlay/reservations/([^/]+)",
        f"{A}/overlay/reservations/1",
        E(NO, 409, 409, 409, 409),
    ),
    # ---- accounts
    Row("GET", rf"{A}/me", f"{A}/me", EVERYONE),
    Row("POST", rf"{A}/login", f"{A}/login", E(400, 400, 400, 400, 400), {}),
    Row("GET", rf"{A}/users", f"{A}/users", ADMIN_ONLY),
    Row(
        "POST",
        rf"{A}/users",
        f"{A}/users",
        E(NO, 403, 403, 403, 201),
        lambda ctx: {"name": ctx.fresh_name(), "role": "viewer"},
    ),
    Row("GET", rf"{A}/users/([^/]+)", f"{A}/users/{{owner}}", E(NO, 403, 403, 200, 200)),
    Row(
        "PATCH",
        rf"{A}/users/([^/]+)",
        f"{A}/users/{{owner}}",
        E(NO, 403, 403, 200, 200),
        {"password": OWNER_PASSWORD, "current_password": OWNER_PASSWORD},
    ),
    Row("DELETE", rf"{A}/users/([^/]+)", f"{A}/users/{{fresh_user}}", ADMIN_ONLY),
    Row("GET", rf"{A}/tokens", f"{A}/tokens", EVERYONE),
    Row("POST", rf"{A}/tokens", f"{A}/tokens", E(NO, 201, 201, 201, 201), {"label": "t"}),
    Row("DELETE", rf"{A}/tokens/([^/]+)", f"{A}/tokens/{{owner_token}}", E(NO, 404, 404, 200, 200)),
    Row("GET", rf"{A}/invitations", f"{A}/invitations", ADMIN_ONLY),
    Row(
        "POST",
        rf"{A}/invitations",
        f"{A}/invitations",
        E(NO, 403, 403, 403, 201),
        {"role": "user"},
    ),
    Row(
        "POST",
        rf"{A}/invitations/redeem",
        f"{A}/invitations/redeem",
        E(400, 400, 400, 400, 400),
        {},
    ),
    Row("DELETE", rf"{A}/invitations/([^/]+)", f"{A}/invitations/{{fresh_invite}}", ADMIN_ONLY),
    # The sign-up page an invitation link opens (river_server/join_page.py): public; a POST
    # without the form's XSRF field is refused (403) unless a token vouches for it, and then
    # a form with no code is a 400.
    Row("GET", r"/river/join", "/river/join?code=x", E(200, 200, 200, 200, 200)),
    Row("POST", r"/river/join", "/river/join", E(403, 400, 400, 400, 400)),
    Row("GET", rf"{A}/groups", f"{A}/groups", ADMIN_ONLY),
    Row(
        "POST",
        rf"{A}/groups",
        f"{A}/groups",
        E(NO, 403, 403, 403, 201),
        lambda ctx: {"name": ctx.fresh_name()},
    ),
    Row("GET", rf"{A}/groups/([^/]+)", f"{A}/groups/{{group}}", ADMIN_ONLY),
    Row("PATCH", rf"{A}/groups/([^/]+)", f"{A}/groups/{{group}}", ADMIN_ONLY, {"max_cores": 64}),
    Row("DELETE", rf"{A}/groups/([^/]+)", f"{A}/groups/{{fresh_group}}", ADMIN_ONLY),
    Row(
        "PUT",
        rf"{A}/groups/([^/]+)/members/([^/]+)",
        f"{A}/groups/{{group}}/members/{{owner}}",
        ADMIN_ONLY,
    ),
    Row(
        "DELETE",
        rf"{A}/groups/([^/]+)/members/([^/]+)",
        f"{A}/groups/{{group}}/members/{{owner}}",
        ADMIN_ONLY,
    ),
    Row("GET", rf"{A}/openapi\.json", f"{A}/openapi.json", E(200, 200, 200, 200, 200)),
    # ---- runner routes: runner credentials only, never user tokens
    Row("POST", rf"{A}/runner/register", f"{A}/runner/register", RUNNER, {"name": "x"}),
    Row("POST", rf"{A}/runner/heartbeat", f"{A}/runner/heartbeat", RUNNER, {}),
    Row("POST", rf"{A}/runner/events", f"{A}/runner/events", RUNNER, {"messages": []}),
    Row(
        "GET",
        rf"{A}/runner/data/([^/]+)",
        f"{A}/runner/data/{OWNER_DATA_DIGEST}?task={{task}}",
        RUNNER,
    ),
    Row(
        "PUT",
        rf"{A}/runner/tasks/([^/]+)/pulled",
        f"{A}/runner/tasks/{{task}}/pulled",
        RUNNER,
        b"x",
    ),
    Row(
        "PUT",
        rf"{A}/runner/tasks/([^/]+)/files",
        f"{A}/runner/tasks/{{task}}/files",
        RUNNER,
        b"x",
    ),
    # ---- proxied ports: a queued task has nothing to proxy to (owner 409); an admin may not
    # open another user's app (403: its pages would run with the admin's session); others 404
    Row("GET", PROXY_ROUTE, "/river/proxy/{task}/8888/", E(NO, 404, 404, 409, 403)),
    *(
        Row(method, PROXY_ROUTE, "/river/proxy/{task}/8888/x", E(NO, 404, 404, 409, 403), b"")
        for method in ("POST", "PUT", "PATCH")
    ),
    Row("DELETE", PROXY_ROUTE, "/river/proxy/{task}/8888/x", E(NO, 404, 404, 409, 403)),
]

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def app_routes() -> set[tuple[str, str]]:
    """(METHOD, pattern) for every route the extension registers, from the app itself."""
    host = RiverHost()
    host.initialize_handlers()
    routes = set()
    for spec in host.handlers:
        pattern, handler = spec[0], spec[1]
        for method in HTTP_METHODS:
            if getattr(handler, method) is not getattr(web.RequestHandler, method):
                routes.add((method.upper(), pattern))
    return routes


def test_every_route_has_a_row() -> None:
    covered = {(row.method, row.pattern) for row in ROUTES}
    missing = sorted(app_routes() - covered)
    assert not missing, (
        "routes without a row in ROUTES (tests/integration/test_route_access.py): "
        + ", ".join(f"{m} {p}" for m, p in missing)
        + ". Add a Row for each, with the code every caller must get."
    )
    stale = sorted(covered - app_routes())
    assert not stale, f"rows for routes the app no longer has: {stale}"


# ---- the live cluster -----------------------------------------------------------------------


@dataclass
class Context:
    cluster: Cluster
    tokens: dict[str, str | None] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    counter: Iterator[int] = field(default_factory=itertools.count)
    # One client for all calls: a new httpx client per request costs more than the request.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def call(
        self, caller: str, method: str, path: str, body: Any = None, **kw: Any
    ) -> httpx.Response:
        token = self.tokens[caller]
        headers = {"Authorization": f"token {token}"} if token else {}
        if isinstance(body, bytes):
            kw["content"] = body
        elif body is not None:
            kw["json"] = body
        self.http.cookies.clear()  # each call carries only its caller's credentials
        return self.http.request(method, f"{self.cluster.url}{path}", headers=headers, **kw)

    def ok(self, caller: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self.call(caller, method, path, body)
        assert response.status_code < 300, (method, path, response.text)
        return response.json()

    def fresh_name(self) -> str:
        return f"u{next(self.counter)}-{uuid.uuid4().hex[:6]}"

    def placeholder(self, name: str) -> str:
        if name in self.values:
            return self.values[name]
        if name == "fresh_task":
            return self.ok("owner", "POST", f"{A}/tasks", {"command": ["true"]})["task"]["id"]
        if name == "fresh_user":
            return self.ok("admin", "POST", f"{A}/users", {"name": self.fresh_name()})["user"][
                "name"
            ]
        if name == "owner_token":
            return self.ok("owner", "POST", f"{A}/tokens", {"label": "victim"})["info"]["id"]
        if name == "fresh_invite":
            return self.ok("admin", "POST", f"{A}/invitations", {})["invitation"]["id"]
        if name == "fresh_group":
            return self.ok("admin", "POST", f"{A}/groups", {"name": self.fresh_name()})["group"][
                "name"
            ]
        raise KeyError(f"unknown placeholder {{{name}}}")


class _Lazy(dict):
    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def __missing__(self, key: str) -> str:
        return self.ctx.placeholder(key)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("access")))
    cluster.start_host()
    try:
        context = Context(cluster)
        context.tokens = {"anon": None, "admin": cluster.token}
        for name, role in (("viewer", "viewer"), ("other", "user"), ("owner", "user")):
            body: dict[str, Any] = {"name": f"t-{name}", "role": role}
            if name == "owner":
                body["password"] = OWNER_PASSWORD
            context.ok("admin", "POST", f"{A}/users", body)
            made = context.ok("admin", "POST", f"{A}/tokens", {"user": f"t-{name}"})
            context.tokens[name] = made["token"]
        task = context.ok(
            "owner",
            "POST",
            f"{A}/tasks",
            {"command": ["true"], "env": {"OWNER_SECRET": "s3cr3t-value"}},
        )["task"]
        context.ok("owner", "PUT", f"{A}/tasks/{task['id']}/blobs/result.bin", b"owner-bytes")
        context.ok("owner", "PUT", f"{A}/data/{OWNER_DATA_DIGEST}", OWNER_DATA)
        context.ok("admin", "POST", f"{A}/groups", {"name": "t-group"})
        context.values = {
            "task": task["id"],
            "owner": "t-owner",
            "group": "t-group",
            "env": "pytest-no-such-env",
            "blob": "result.bin",
        }
        yield context
        context.http.close()
    finally:
        cluster.close()


def _status(ctx: Context, caller: str, row: Row) -> int:
    path = row.path.format_map(_Lazy(ctx))
    body = row.body(ctx) if callable(row.body) else row.body
    if row.pattern == rf"{A}/events":  # a stream: only its status matters here
        token = ctx.tokens[caller]
        headers = {"Authorization": f"token {token}"} if token else {}
        ctx.http.cookies.clear()
        with ctx.http.stream("GET", f"{ctx.cluster.url}{path}", headers=headers) as response:
            return response.status_code
    return ctx.call(caller, row.method, path, body).status_code


def test_every_route_answers_each_caller_as_expected(ctx: Context) -> None:
    wrong = []
    for row in ROUTES:
        for caller in CALLERS:
            expected = row.expect[caller]
            got = _status(ctx, caller, row)
            allowed = expected if isinstance(expected, frozenset) else {expected}
            if got not in allowed:
                wrong.append(f"{row.method} {row.path} as {caller}: {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_others_never_see_the_spec_env_or_output(ctx: Context) -> None:
    task_id = ctx.values["task"]
    for caller in ("viewer", "other"):
        task = ctx.ok(caller, "GET", f"{A}/tasks/{task_id}")["task"]
        assert "spec" not in task and task["owner"] == "t-owner"
        listing = ctx.call(caller, "GET", f"{A}/tasks?all=1").text
        assert task_id in listing and "s3cr3t-value" not in listing
    for caller in ("owner", "admin"):
        spec = ctx.ok(caller, "GET", f"{A}/tasks/{task_id}")["task"]["spec"]
        assert spec["env"]["OWNER_SECRET"] == "s3cr3t-value"
