"""Attacks on `/river/proxy/<id>/<port>/`, the owner's app served on River's own origin.

A user ("olive") runs a small web app as her task (process backend): it echoes what it
received and records every request that changes something. Through the proxy:

- an admin and an operator (token or browser login) who open olive's app get 403 with the
  reason, and the app sees none of their requests: its pages would run as them;
- the app never sees River's credentials: not the token in `Authorization` or `?token=`,
  not River's login cookie, not River's `_xsrf` cookie; its own cookies and its own
  `?token=` reach it;
- a cookie-authenticated POST without an XSRF token (what a page elsewhere makes a logged-in
  browser send) is refused with 403 and never reaches the app; with the token, or with
  `Authorization: token`, it goes through;
- olive's own GETs keep working throughout.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, as_user, free_port, wait_for

A = "/river/api"
PASSWORD = "olive-pass-1234"

APP = r"""
import json, sys
from tornado import ioloop, web

changes = []

class Seen(web.RequestHandler):
    def get(self):
        self.finish({"changes": changes})

class Echo(web.RequestHandler):
    def get(self, path):
        self.finish({"path": self.request.path, "query": self.request.query,
                     "headers": dict(self.request.headers)})
    def post(self, path):
        changes.append({"path": self.request.path, "headers": dict(self.request.headers)})
        self.finish({"posted": self.request.path, "headers": dict(self.request.headers)})

app = web.Application([(r"/seen", Seen), (r"(.*)", Echo)])
app.listen(int(sys.argv[1]), address="127.0.0.1")
ioloop.IOLoop.current().start()
"""


@contextlib.contextmanager
def browser_login(cluster: Cluster, name: str, password: str) -> Iterator[httpx.Client]:
    """A client holding River's login and `_xsrf` cookies, as a browser after the form."""
    with httpx.Client(base_url=cluster.url, timeout=30) as browser:
        browser.get("/login")
        xsrf = browser.cookies["_xsrf"]
        done = browser.post(
            "/login",
            data={"username": name, "password": password, "_xsrf": xsrf},
            follow_redirects=False,
        )
        assert done.status_code == 302, done.text
        yield browser


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = Cluster(tmp_path_factory.mktemp("proxy-sec"))
    cluster.start_host()
    try:
        cluster.start_runner("web")
        tokens = cluster.make_users("olive", label="proxy security")
        tokens |= cluster.make_users("oscar", role="operator", label="proxy security")
        tokens |= cluster.make_users("ada", role="admin", label="proxy security")
        for name in ("olive", "oscar", "ada"):
            set_pw = cluster.request("PATCH", f"{A}/users/{name}", json={"password": PASSWORD})
            assert set_pw.status_code == 200, set_pw.text
        port = free_port()
        olive = as_user(tokens["olive"])
        created = cluster.request(
            "POST",
            f"{A}/tasks",
            json={"command": [sys.executable, "-c", APP, str(port)], "name": "olive-app"},
            **olive,
        )
        assert created.status_code == 201, created.text
        task = created.json()["task"]
        base = f"{cluster.url}/river/proxy/{task['id']}/{port}"

        def answers() -> bool:
            return httpx.get(f"{base}/", **olive).status_code == 200

        wait_for(answers, 30, what="olive's app through the proxy")
        yield {"cluster": cluster, "task": task, "base": base, "tokens": tokens}
        cluster.request("POST", f"{A}/tasks/{task['id']}/kill")
    finally:
        cluster.close()


def changes_seen(app: dict[str, Any]) -> list[dict[str, Any]]:
    olive = as_user(app["tokens"]["olive"])
    return httpx.get(f"{app['base']}/seen", **olive).json()["changes"]


def owner_still_served(app: dict[str, Any]) -> None:
    response = httpx.get(f"{app['base']}/still", **as_user(app["tokens"]["olive"]))
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "/still"


def test_admins_and_operators_cannot_open_a_users_app(app: dict[str, Any]) -> None:
    cluster, base, tokens = app["cluster"], app["base"], app["tokens"]
    before = len(changes_seen(app))
    callers = {
        "server token (admin)": cluster.headers,
        "admin ada": as_user(tokens["ada"])["headers"],
        "operator oscar": as_user(tokens["oscar"])["headers"],
    }
    for who, headers in callers.items():
        for method in ("GET", "POST", "PUT", "DELETE"):
            response = httpx.request(method, f"{base}/page", headers=headers, content=b"x")
            assert response.status_code == 403, (who, method, response.text)
            message = response.json()["message"]
            assert "only olive" in message and "owner" in message, message
    for name in ("ada", "oscar"):
        with browser_login(cluster, name, PASSWORD) as browser:
            page = browser.get(base + "/page", headers={"Accept": "text/html"})
            assert page.status_code == 403, (name, page.text)
            assert "only olive" in page.text
    assert len(changes_seen(app)) == before
    owner_still_served(app)


def test_river_credentials_never_reach_the_app(app: dict[str, Any]) -> None:
    cluster, base, tokens = app["cluster"], app["base"], app["tokens"]
    with browser_login(cluster, "olive", PASSWORD) as browser:
        river_cookies = dict(browser.cookies)
        assert "_xsrf" in river_cookies and len(river_cookies) >= 2
        secrets = [tokens["olive"], cluster.token, *river_cookies.values()]
        # The browser's cookie, River's token in the header and in the query, and the
        # app's own cookie and token.
        cookie = "; ".join(
            ["app-session=own-cookie", *(f"{k}={v}" for k, v in river_cookies.items())]
        )
        for headers, query in (
            ({"Cookie": cookie}, f"token={tokens['olive']}&x=1&token=app-own-token"),
            ({"Cookie": cookie, "Authorization": f"token {tokens['olive']}"}, "x=1"),
            (
                {"Cookie": cookie, "Authorization": f"token {tokens['olive']}"},
                f"x=1&token={cluster.token}&token=app-own-token",
            ),
        ):
            response = httpx.get(f"{base}/look?{query}", headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            seen = response.json()
            text = json.dumps(seen)
            for secret in secrets:
                assert secret not in text, (query, seen)
            assert "Authorization" not in seen["headers"]
            assert seen["headers"]["Cookie"] == "app-session=own-cookie"
            assert "x=1" in seen["query"]
            assert seen["query"].replace("&token=app-own-token", "") == "x=1"
    owner_still_served(app)


def test_cookie_post_needs_xsrf(app: dict[str, Any]) -> None:
    """What a page on another site makes olive's logged-in browser send: refused."""
    cluster, base, tokens = app["cluster"], app["base"], app["tokens"]
    before = len(changes_seen(app))
    with browser_login(cluster, "olive", PASSWORD) as browser:
        xsrf = browser.cookies["_xsrf"]
        forged = browser.post(f"{base}/delete-everything", content=b"all=1")
        assert forged.status_code == 403, forged.text
        assert "X-XSRFToken" in forged.json()["message"]
        wrong = browser.post(
            f"{base}/delete-everything", content=b"all=1", headers={"X-XSRFToken": "2|00|00|1"}
        )
        assert wrong.status_code == 403, wrong.text
        assert len(changes_seen(app)) == before
        # The same request from River's own page (with the XSRF header) goes through...
        ok = browser.post(f"{base}/save", content=b"a=1", headers={"X-XSRFToken": xsrf})
        assert ok.status_code == 200, ok.text
        assert ok.json()["posted"] == "/save"
        # ... as does an app's page sending its own _xsrf (set at the app's longer path,
        # so the browser sends it first), and only the app's reaches the app.
        cookie = "_xsrf=app-own-xsrf; " + "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        own = httpx.post(
            f"{base}/save-own",
            content=b"a=2",
            headers={"Cookie": cookie, "X-XSRFToken": "app-own-xsrf"},
        )
        assert own.status_code == 200, own.text
        assert own.json()["headers"]["Cookie"] == "_xsrf=app-own-xsrf"
    token_post = httpx.post(f"{base}/api", content=b"b=1", **as_user(tokens["olive"]))
    assert token_post.status_code == 200, token_post.text  # token auth: exempt, as in Jupyter
    assert [c["path"] for c in changes_seen(app)][before:] == ["/save", "/save-own", "/api"]
    owner_still_served(app)
