"""River's JupyterHub-servers listener (c.RiverHost.hub_servers_port) serves no River route.

It is the Hub proxy's target for RiverSpawner servers: code their users control runs on
whatever origin reaches it, so it must never answer River's UI, API, login or proxy, nor
hand out River's cookies, whoever calls (the admin's token and cookie included). Walked
from the host's own live route list (tests/security/route_lister.py), so a route any
extension adds later is checked too. `/user/<name>/` itself answers only for a running Hub
server VPS (tests/hub/test_river_spawner.py); here, with none, a clear 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, free_port
from tests.security.test_route_walk import live_routes, route_sample_path

__all__ = ["live_routes"]  # the route-list fixture, on this module's host

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("hubservers")), app="lab")
    cluster.hub_servers_port = free_port()  # type: ignore[attr-defined]
    cluster.extra_host_args = [f"--RiverHost.hub_servers_port={cluster.hub_servers_port}"]  # type: ignore[attr-defined]
    cluster.start_host(timeout=120)
    try:
        yield cluster
    finally:
        cluster.close()


def _servers(host: Cluster) -> str:
    return f"http://127.0.0.1:{host.hub_servers_port}"  # type: ignore[attr-defined]


def test_the_servers_listener_answers_no_river_route(
    host: Cluster, live_routes: dict[str, Any]
) -> None:
    routes, base_url = live_routes["routes"], live_routes["base_url"]
    assert any(r["access"] == "RIVER" for r in routes)  # the whole server's list
    admin = {"Authorization": f"token {host.token}"}
    # The admin's browser session on River's origin (cookies are per host, not per port).
    with httpx.Client(timeout=10) as http:
        http.get(f"{host.url}/lab?token={host.token}")  # sets the login (and XSRF) cookie
        cookies = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    assert cookies
    wrong: list[str] = []
    checked = 0
    with httpx.Client(timeout=10, follow_redirects=False) as http:
        # The same request on River's own port reaches River (the walk is not vacuous).
        me = http.get(f"{host.url}/river/api/me", headers=admin)
        assert me.status_code == 200, me.text
        for index in range(len(routes)):
            path = route_sample_path(index, routes, base_url)
            if path is None or not path.startswith("/") or path.startswith("/user/"):
                continue
            for method in METHODS:
                for headers in (admin, {"Cookie": cookies}, {}):
                    answer = http.request(method, f"{_servers(host)}{path}", headers=headers)
                    checked += 1
                    if answer.status_code != 404 or "set-cookie" in answer.headers:
                        wrong.append(f"{method} {path}: {answer.status_code} {answer.headers}")
    assert checked > 100
    assert not wrong, "\n".join(wrong[:20])


def test_user_paths_without_a_server_answer_503_and_nothing_of_river(host: Cluster) -> None:
    admin = {"Authorization": f"token {host.token}"}
    with httpx.Client(timeout=10) as http:
        for method in METHODS:
            answer = http.request(method, f"{_servers(host)}/user/alice/api/status", headers=admin)
            assert answer.status_code == 503, (method, answer.text)
            assert "set-cookie" not in answer.headers
            if method != "HEAD":
                assert "no JupyterHub server of alice" in answer.json()["message"]
        # River's own origin has no /user/ route at all.
        assert http.get(f"{host.url}/user/alice/api/status", headers=admin).status_code == 404
