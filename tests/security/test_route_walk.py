"""Every route of the whole Jupyter server, called as every kind of non-admin (issue #13).

Jupyter's own routes and those of every server extension (JupyterLab's extension manager,
plugins, settings, workspaces, build, LSP, terminals, kernels, contents, ...) used to
answer any logged-in user, viewers included, because many handlers never consult the
authorizer. River now decides for every handler at one place (river_server/route_policy.py).

The route list is the live one: `tests/security/route_lister.py` builds a ServerApp from the
running host's own command line and environment (every extension loaded) and lists its
rules in routing order. Expectations come from `route_policy.POLICY` joined with that list,
so a route any extension adds without a row is expected to be refused, and the test checks
that it is. Each route is called with every method its handler implements, as anonymous, a
viewer, a user and another user (calling a resource named by the route that is not theirs);
the admin is checked to pass the policy with a method the handler does not implement (405
after the policy), so nothing is run on the admin's behalf.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from river_server.route_policy import DENIED_HEADER
from tests.cluster import REPO, Cluster

A = "/river/api"
IDENTITIES = ("anon", "viewer", "user", "other")
PROBE_METHODS = ("PATCH", "PUT", "DELETE", "POST", "OPTIONS", "HEAD")
# Values tried for each group of a route's regex, first that fits (route_sample_path).
GROUP_VALUES = ("x", "1", "00000000-0000-0000-0000-000000000000", "/x", "x/y", "")
# Handlers whose own error path never answers (jupyterlab_server's LicensesHandler.finish
# takes another signature, so tornado's 405 for it fails and the request hangs).
ADMIN_PROBE_HANGS = {"jupyterlab_server.licenses_handler.LicensesHandler"}
# Routes no generated path reaches because an earlier route takes every such path.
SHADOWED = {r"/(robots\.txt|favicon\.ico)"}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("routewalk")), app="lab")
    cluster.start_host(timeout=120)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def tokens(host: Cluster) -> dict[str, str | None]:
    made: dict[str, str | None] = {"anon": None, "admin": host.token}
    for name, role in (("viewer", "viewer"), ("user", "user"), ("other", "user")):
        response = host.request("POST", f"{A}/users", json={"name": f"w-{name}", "role": role})
        assert response.status_code == 201, response.text
        response = host.request("POST", f"{A}/tokens", json={"user": f"w-{name}"})
        made[name] = response.json()["token"]
    return made


@pytest.fixture(scope="module")
def live_routes(host: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The host's routes, from a ServerApp built with its exact argv and environment."""
    assert host.host_process is not None
    pid = host.host_process.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    args = [a.decode() for a in argv]
    # `python -m jupyter lab ARGS` execs the `jupyter-lab` script: ARGS follow it
    start = next(i for i, a in enumerate(args) if a == "lab" or a.endswith("jupyter-lab"))
    # The lister keeps its own data and database (traitlets refuses a repeated option, and
    # the host holds its SQLite database: a second River on it is refused).
    own = ("--RiverHost.data_dir=", "--RiverHost.db_url=")
    args = [a for a in args[start + 1 :] if not a.startswith(own)]
    env = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        if "=" in item
    )
    scratch = tmp_path_factory.mktemp("lister")  # its own River data; the host keeps its DB
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.security.route_lister",
            *args,
            f"--RiverHost.data_dir={scratch}",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("ROUTES=")), None)
    assert line, f"route lister failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return json.loads(line.removeprefix("ROUTES="))


# ---- sample paths from route regexes --------------------------------------------------------


def _split_groups(pattern: str) -> list[tuple[str, str]]:
    """('lit', text) and ('group', inner regex incl. quantifier) pieces, top level only."""
    pieces: list[tuple[str, str]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            pieces.append(("lit", pattern[i : i + 2]))
            i += 2
        elif c == "(":
            depth, j = 0, i
            while True:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
                if depth == 0:
                    break
            quant = pattern[j] if j < len(pattern) and pattern[j] in "?*+" else ""
            pieces.append(("group", pattern[i:j] + quant))
            i = j + len(quant)
        else:
            pieces.append(("lit", c))
            i += 1
    return pieces


def _alternatives(group: str) -> list[str]:
    """The words of a group that is an alternation of words, e.g. (?P<m>lab|doc)."""
    inner = re.sub(r"^\((\?P<\w+>|\?:)?", "", group.rstrip("?*+")).removesuffix(")")
    return [word.replace("\\", "") for word in inner.split("|")]


def _literal(pieces: list[tuple[str, str]]) -> list[list[str]]:
    """Alternatives for each piece: groups get GROUP_VALUES, regex bits a stand-in."""
    options: list[list[str]] = []
    k = 0
    while k < len(pieces):
        kind, text = pieces[k]
        nxt = pieces[k + 1][1] if k + 1 < len(pieces) else ""
        if kind == "group":
            values = [*GROUP_VALUES, *_alternatives(text)]
            options.append([v for v in values if re.fullmatch(text, v)] or [""])
        elif text == "." and nxt in ("*", "+"):
            options.append(["x"])
            k += 1
        elif nxt == "?":
            options.append(["", text.lstrip("\\")])
            k += 1
        elif text.startswith("\\"):
            options.append([text[1:]])
        else:
            options.append([text])
        k += 1
    return options


def route_sample_path(index: int, routes: list[dict[str, Any]], base_url: str) -> str | None:
    """A path that the router sends to routes[index] (first matching rule wins), or None."""
    route = routes[index]
    pattern = route["pattern"]
    if pattern is None:
        return None
    options = _literal(_split_groups(pattern))
    candidates = [""]
    for choice in options:
        candidates = [c + o for c in candidates for o in choice][:64]
    for tail in candidates:
        path = base_url.rstrip("/") + tail if tail.startswith("/") else tail
        first = next(
            (i for i, r in enumerate(routes) if r["regex"] and re.match(r["regex"], path)), None
        )
        if first == index:
            return path
    return None


# ---- expectations ---------------------------------------------------------------------------


def allowed(route: dict[str, Any], method: str, who: str) -> bool:
    access = route["access"]
    if access == "RIVER":
        return True
    if method not in route["allowed"]:
        return False
    return access == "PUBLIC" or (access == "LOGGED_IN" and who != "anon")


def call(http: httpx.Client, url: str, method: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    http.cookies.clear()
    with http.stream(method, url, headers=headers) as response:  # streams: status only
        response.read() if response.headers.get(DENIED_HEADER) else None
        return response


def refused_by_policy(response: httpx.Response, who: str, method: str) -> bool:
    if who == "anon" and method in ("GET", "HEAD") and response.status_code == 302:
        return "/login" in response.headers.get("Location", "")
    if response.status_code != 403 or response.headers.get(DENIED_HEADER) != "denied":
        return False
    if method == "HEAD":
        return True  # no body to read the message from
    message = response.json()["message"]
    return "log in" in message if who == "anon" else "docs/security.md" in message


def test_every_route_of_the_whole_server_is_default_deny(
    host: Cluster, tokens: dict[str, str | None], live_routes: dict[str, Any]
) -> None:
    routes, base_url = live_routes["routes"], live_routes["base_url"]
    names = {r["handler"] for r in routes}
    # the list is the whole server's, not only River's
    assert "jupyterlab.handlers.extension_manager_handler.ExtensionHandler" in names
    assert "jupyter_server.services.kernels.handlers.MainKernelHandler" in names
    assert any(r["access"] == "RIVER" for r in routes)
    wrong: list[str] = []
    unreachable: set[str] = set()
    checked = 0
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        for index, route in enumerate(routes):
            if not route["implemented"]:
                continue  # e.g. the 404 fallback: no method to call
            path = route_sample_path(index, routes, base_url)
            if path is None:
                unreachable.add(route["pattern"])
                continue
            url = f"{host.url}{path}"
            if route["access"] == "RIVER":
                # River's own routes check roles themselves (tests/integration/
                # test_route_access.py calls each); here: the policy lets them through.
                methods = [next((m for m in PROBE_METHODS if m not in route["implemented"]), "GET")]
            else:
                methods = route["implemented"]
            for method in methods:
                for who in IDENTITIES:
                    try:
                        response = call(http, url, method, tokens[who])
                    except httpx.TimeoutException:
                        wrong.append(f"{method} {path} as {who}: no answer")
                        continue
                    checked += 1
                    passed = response.headers.get(DENIED_HEADER) is None and not (
                        who == "anon"
                        and response.status_code == 302
                        and route["access"] != "RIVER"
                        and not allowed(route, method, who)
                    )
                    if allowed(route, method, who):
                        if not passed:
                            wrong.append(
                                f"{method} {path} as {who}: refused ({response.status_code})"
                            )
                    elif not refused_by_policy(response, who, method):
                        wrong.append(
                            f"{method} {path} ({route['handler']}) as {who}: "
                            f"{response.status_code}, expected the route policy's refusal"
                        )
            # the admin passes the policy: probe with a method the handler does not implement
            probe = next((m for m in PROBE_METHODS if m not in route["implemented"]), None)
            if probe and route["handler"] not in ADMIN_PROBE_HANGS:
                try:
                    response = call(http, url, probe, tokens["admin"])
                except httpx.TimeoutException:
                    wrong.append(f"{probe} {path} as admin: no answer")
                    continue
                if response.headers.get(DENIED_HEADER):
                    wrong.append(f"{probe} {path} as admin: refused by the route policy")
    assert unreachable <= SHADOWED, (
        f"no sample path reaches {sorted(unreachable - SHADOWED)}: extend GROUP_VALUES or SHADOWED"
    )
    assert checked > 100
    assert not wrong, "\n".join(wrong)
    # the host keeps serving
    assert host.request("GET", f"{A}/nodes").status_code == 200


def test_a_route_without_a_rule_is_refused(
    host: Cluster, tokens: dict[str, str | None], live_routes: dict[str, Any]
) -> None:
    """Routes of Jupyter and its extensions that have no row are the admins' only; rows
    that no live route matches would be dead policy."""
    from river_server.route_policy import POLICY

    routes = live_routes["routes"]
    unruled = [r for r in routes if r["access"] is None and r["implemented"]]
    handlers = {r["handler"] for r in unruled}
    for dangerous in (
        "jupyterlab.handlers.build_handler.BuildHandler",
        "jupyter_server.services.shutdown.ShutdownHandler",
        "jupyter_server.services.contents.handlers.ContentsHandler",
        "jupyter_lsp.handlers.LanguageServerWebSocketHandler",
        "jupyter_server.services.config.handlers.ConfigHandler",
    ):
        assert dangerous in handlers, dangerous
    live = {(r["pattern"], r["handler"]) for r in routes}
    dead = [
        (rule.pattern, rule.handler) for rule in POLICY if (rule.pattern, rule.handler) not in live
    ]
    assert not dead, f"policy rows with no such route on the server: {dead}"


def _settings_file(host: Cluster) -> Path:
    return host.root / "jupyter-config" / "lab" / "user-settings"


def test_viewer_and_user_cannot_install_extensions_or_change_the_lab(
    host: Cluster, tokens: dict[str, str | None]
) -> None:
    plugin = "@jupyterlab/apputils-extension:themes"
    settings_url = f"{host.url}/lab/api/settings/{plugin}"
    before_settings = httpx.get(settings_url, headers={"Authorization": f"token {host.token}"})
    assert before_settings.status_code == 200
    workspaces_before = sorted(p.name for p in host.root.rglob("*.jupyterlab-workspace"))
    settings_before = sorted(str(p) for p in _settings_file(host).rglob("*"))
    attacks: list[tuple[str, str, Any]] = [
        ("POST", "/lab/api/extensions", {"cmd": "install", "extension_name": "evil-ext"}),
        ("POST", "/lab/api/extensions", {"cmd": "uninstall", "extension_name": "jupyterlab"}),
        ("PUT", "/lab/api/workspaces/x", {"data": {}, "metadata": {"id": "x"}}),
        ("DELETE", "/lab/api/workspaces/x", None),
        ("PUT", f"/lab/api/settings/{plugin}", {"raw": '{"theme": "JupyterLab Dark"}'}),
        ("POST", "/lab/api/build", {}),
        ("DELETE", "/lab/api/build", None),
        (
            "POST",
            "/lab/api/plugins",
            {"cmd": "disable", "plugin_name": "@jupyterlab/apputils-extension"},
        ),
        (
            "PUT",
            "/lab/api/plugins",
            {"cmd": "disable", "plugin_name": "@jupyterlab/apputils-extension"},
        ),
        ("PATCH", "/api/me", {"display_name": "admin"}),
        ("POST", "/api/shutdown", None),
    ]
    for who in ("viewer", "user"):
        for method, path, body in attacks:
            response = httpx.request(
                method,
                f"{host.url}{path}",
                headers={"Authorization": f"token {tokens[who]}"},
                json=body,
                timeout=30,
            )
            assert response.status_code == 403, (
                who,
                method,
                path,
                response.status_code,
                response.text,
            )
            assert response.headers.get(DENIED_HEADER) == "denied"
            message = response.json()["message"]
            assert path in message and "admins" in message and "docs/security.md" in message
    # nothing changed
    after = httpx.get(settings_url, headers={"Authorization": f"token {host.token}"})
    assert after.json()["raw"] == before_settings.json()["raw"]
    assert sorted(str(p) for p in _settings_file(host).rglob("*")) == settings_before
    assert sorted(p.name for p in host.root.rglob("*.jupyterlab-workspace")) == workspaces_before
    # what the lab needs to render stays readable, and the manager is read-only
    for who in ("viewer", "user"):
        auth = {"Authorization": f"token {tokens[who]}"}
        for path in (f"/lab/api/settings/{plugin}", "/lab/api/workspaces/default", "/api/me"):
            assert httpx.get(f"{host.url}{path}", headers=auth).status_code == 200, (who, path)
        page = httpx.get(f"{host.url}/lab", headers=auth)
        assert page.status_code == 200 and "jupyter-config-data" in page.text
    listing = httpx.get(
        f"{host.url}/lab/api/extensions", headers={"Authorization": f"token {host.token}"}
    )
    assert listing.status_code == 200
    manager = re.search(r'"extensionManager":\s*\{[^}]*"can_install":\s*(true|false)', page.text)
    assert manager and manager.group(1) == "false", "the lab must start with the read-only manager"
    assert host.request("GET", f"{A}/nodes").status_code == 200
