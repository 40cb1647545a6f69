"""Browser identity, sessions and tokens, tried as an attacker would (issue #13): a viewer
reading the admin's token out of JupyterLab's page, a login cookie outliving the token or
password it came from, parallel password guesses and invitation redemptions, taking over
a deleted user's name, and non-ASCII tokens that used to crash a request (500).

All against a live JupyterLab host (real Jupyter server process, real SQLite), over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from river_server.auth import hash_password
from tests.cluster import JOIN_TOKEN, Cluster, running_cluster

A = "/river/api"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """JupyterLab with River (the page that used to carry the server token); no runners:
    tasks stay queued, which is all these tests need."""
    with running_cluster(tmp_path_factory.mktemp("identity"), app="lab", host_timeout=120) as c:
        yield c


def admin(cluster: Cluster, method: str, path: str, **kw: Any) -> dict[str, Any]:
    return cluster.ok(method, f"{A}{path}", **kw)


def new_user(cluster: Cluster, name: str, role: str = "user", password: str = "") -> str:
    body: dict[str, Any] = {"name": name, "role": role}
    if password:
        body["password"] = password
    admin(cluster, "POST", "/users", json=body)
    return admin(cluster, "POST", "/tokens", json={"user": name})["token"]


@contextlib.contextmanager
def login(cluster: Cluster, name: str, password: str) -> Iterator[httpx.Client]:
    """A 'browser': an httpx client logged in through River's login form (cookie)."""
    with httpx.Client(base_url=cluster.url, timeout=30) as browser:
        browser.get("/login")
        response = browser.post(
            "/login",
            data={"username": name, "password": password, "_xsrf": browser.cookies["_xsrf"]},
            follow_redirects=False,
        )
        assert response.status_code == 302, response.text
        yield browser


def cookie_name(cluster: Cluster) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", f"username-127.0.0.1:{cluster.port}")


def page_config(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html
    )
    assert match, "no page config in the page"
    return json.loads(match.group(1))


def me(browser: httpx.Client) -> httpx.Response:
    return browser.get(f"{A}/me")


def still_serving(cluster: Cluster) -> None:
    assert cluster.request("GET", f"{A}/nodes").status_code == 200


# ---- 1. the admin's token in every user's JupyterLab page ----------------------------------


def test_jupyterlab_pages_carry_no_token_of_another_identity(host: Cluster) -> None:
    admin(host, "POST", "/tasks", json={"command": ["true"], "name": "admins-own"})
    new_user(host, "pageviewer", role="viewer", password="viewer-pass-1")
    new_user(host, "pageuser", password="user-pass-12")
    for name, password in (("pageviewer", "viewer-pass-1"), ("pageuser", "user-pass-12")):
        with login(host, name, password) as browser:
            pages = {
                "/lab": browser.get("/lab"),
                "/lab/tree/x.ipynb": browser.get("/lab/tree/x.ipynb"),
                # Error pages of jupyter_server used to carry data-jupyter-api-token too.
                "/no-such-page": browser.get("/no-such-page", headers={"Accept": "text/html"}),
                "/files/host.log": browser.get("/files/host.log", headers={"Accept": "text/html"}),
            }
            for path, response in pages.items():
                assert host.token not in response.text, f"{name}'s {path} carries the admin token"
                assert "data-jupyter-api-token" not in response.text, (name, path)
            assert pages["/lab"].status_code == 200
            assert page_config(pages["/lab"].text)["token"] == ""
            # What the panel does with the page: its own cookie, its own identity.
            assert me(browser).json()["user"]["name"] == name
            mine = browser.get(f"{A}/tasks").json()["tasks"]
            assert all(t["owner"] == name for t in mine)
    still_serving(host)


def test_the_admin_link_of_river_up_still_logs_the_admin_in(host: Cluster) -> None:
    """`river up` prints /lab?token=<server token>: the browser that opens it is the admin,
    through a cookie; the page itself carries no token."""
    with httpx.Client(base_url=host.url, timeout=30) as browser:
        page = browser.get(f"/lab?token={host.token}")
        assert page.status_code == 200
        assert page_config(page.text)["token"] == "" and host.token not in page.text
        assert cookie_name(host) in browser.cookies
        assert me(browser).json()["user"] == {**me(browser).json()["user"], "name": "admin"}
        # The cookie alone (no token) carries on, including the host's own Jupyter.
        assert browser.get("/api/kernels").status_code == 200


# ---- 2. sessions ----------------------------------------------------------------------------


def test_a_header_token_leaves_no_login_cookie(host: Cluster) -> None:
    token = new_user(host, "scripted")
    response = httpx.get(f"{host.url}{A}/me", headers={"Authorization": f"token {token}"})
    assert response.status_code == 200
    assert cookie_name(host) not in response.cookies, "a script's token left a login cookie"
    response = host.request("GET", "/lab")  # the server token in a header: no cookie either
    assert response.status_code == 200 and cookie_name(host) not in response.cookies


def test_a_session_from_a_token_link_ends_when_the_token_is_revoked(host: Cluster) -> None:
    token = new_user(host, "linked")
    token_id = next(t["id"] for t in admin(host, "GET", "/tokens?user=linked")["tokens"])
    with httpx.Client(base_url=host.url, timeout=30) as browser:
        assert browser.get(f"/lab?token={token}").status_code == 200
        assert me(browser).json()["user"]["name"] == "linked"
        admin(host, "DELETE", f"/tokens/{token_id}")
        refused = me(browser)
        assert refused.status_code == 403, "the cookie outlived the revoked token"
    still_serving(host)


def test_password_change_role_change_and_deletion_end_sessions(host: Cluster) -> None:
    new_user(host, "sessioned", password="first-pass-1")
    with login(host, "sessioned", "first-pass-1") as browser:
        cookie = browser.cookies[cookie_name(host)]
        assert me(browser).status_code == 200
        admin(host, "PATCH", "/users/sessioned", json={"password": "second-pass-2"})
        assert me(browser).status_code == 403, "the session outlived a password change"
    # A copy of the cookie taken before the change is no better.
    with httpx.Client(base_url=host.url, timeout=30, cookies={cookie_name(host): cookie}) as copy:
        assert me(copy).status_code == 403

    with login(host, "sessioned", "second-pass-2") as browser:
        admin(host, "PATCH", "/users/sessioned", json={"role": "viewer"})
        assert me(browser).status_code == 403, "the session outlived a role change"
    with login(host, "sessioned", "second-pass-2") as browser:
        assert me(browser).json()["user"]["role"] == "viewer"
        admin(host, "DELETE", "/users/sessioned")
        assert me(browser).status_code == 403, "the session outlived the account"
    still_serving(host)


def test_login_cookie_lasts_the_configured_lifetime_not_thirty_days(host: Cluster) -> None:
    new_user(host, "lifetime", password="lifetime-pass-1")
    with httpx.Client(base_url=host.url, timeout=30) as browser:
        browser.get("/login")
        response = browser.post(
            "/login",
            data={
                "username": "lifetime",
                "password": "lifetime-pass-1",
                "_xsrf": browser.cookies["_xsrf"],
            },
            follow_redirects=False,
        )
        header = next(
            v for v in response.headers.get_list("set-cookie") if v.startswith(cookie_name(host))
        )
    expires = re.search(r"expires=([^;]+)", header, re.IGNORECASE)
    assert expires, header
    seconds = time.mktime(
        time.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT")
    ) - time.mktime(time.gmtime())
    assert 6 * 86400 < seconds <= 7 * 86400 + 60, f"cookie lasts {seconds / 86400:.1f} days"


# ---- 3. throttle, invitations, deleted names -------------------------------------------------


def test_parallel_wrong_passwords_are_throttled_like_sequential_ones(host: Cluster) -> None:
    new_user(host, "guessed", password="the-real-pass-1")

    def guess(i: int) -> int:
        return httpx.post(
            f"{host.url}{A}/login",
            json={"username": "guessed", "password": f"wrong-guess-{i:04d}"},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(guess, range(16)))
    checked = codes.count(401)
    assert checked <= 5, f"{checked} guesses were checked at once (limit 5): {codes}"
    assert set(codes) <= {401, 429} and codes.count(429) >= 11
    blocked = httpx.post(
        f"{host.url}{A}/login",
        json={"username": "guessed", "password": "the-real-pass-1"},
        timeout=30,
    )
    assert blocked.status_code == 429 and "try again" in blocked.json()["message"]
    still_serving(host)


def test_a_wrong_invitation_code_costs_no_password_hash(host: Cluster) -> None:
    started = time.perf_counter()
    hash_password("measure-one-bcrypt")
    one_hash = time.perf_counter() - started
    times = []
    for i in range(5):
        started = time.perf_counter()
        response = httpx.post(
            f"{host.url}{A}/invitations/redeem",
            json={"code": f"rvi_wrong{i}", "name": f"nobody{i}", "password": "some-pass-12"},
            timeout=30,
        )
        times.append(time.perf_counter() - started)
        assert response.status_code == 403 and "invitation code" in response.json()["message"]
    assert statistics.median(times) < one_hash / 2, (times, one_hash)


def test_parallel_redemptions_of_a_one_use_invitation_make_one_account(host: Cluster) -> None:
    code = admin(host, "POST", "/invitations", json={"role": "user", "uses": 1})["code"]
    names = [f"racer{i}" for i in range(12)]

    def redeem(name: str) -> int:
        return httpx.post(
            f"{host.url}{A}/invitations/redeem",
            json={"code": code, "name": name, "password": "racer-pass-1"},
            timeout=60,
        ).status_code

    with ThreadPoolExecutor(len(names)) as pool:
        codes = list(pool.map(redeem, names))
    assert sorted(codes) == [201] + [403] * (len(names) - 1), codes
    users = {u["name"] for u in admin(host, "GET", "/users")["users"]}
    assert len(users & set(names)) == 1
    invitation = next(
        i for i in admin(host, "GET", "/invitations")["invitations"] if i["uses"] == 1
    )
    assert invitation["max_uses"] == 1 and not invitation["active"]


def test_a_deleted_users_name_cannot_be_taken_with_their_tasks(host: Cluster) -> None:
    old_token = new_user(host, "leaver", password="leaver-pass-1")
    task = httpx.post(
        f"{host.url}{A}/tasks",
        json={"command": ["true"], "name": "leavers-task"},
        headers={"Authorization": f"token {old_token}"},
        timeout=30,
    )
    assert task.status_code == 201, task.text
    task_id = task.json()["task"]["id"]
    deleted = admin(host, "DELETE", "/users/leaver")
    # Their unfinished work does not run on with nobody able to see or stop it.
    assert deleted["tasks_ended"] == 1 and host.task(task_id)["state"] == "killed"

    code = admin(host, "POST", "/invitations", json={"role": "user"})["code"]
    taken = httpx.post(
        f"{host.url}{A}/invitations/redeem",
        json={"code": code, "name": "leaver", "password": "taker-pass-1"},
        timeout=30,
    )
    assert taken.status_code == 409, taken.text
    assert "used before" in taken.json()["message"]
    again = host.request("POST", f"{A}/users", json={"name": "leaver"})
    assert again.status_code == 409 and "used before" in again.json()["message"]
    # The invitation was not used up by the refusal: another name works with it.
    other = httpx.post(
        f"{host.url}{A}/invitations/redeem",
        json={"code": code, "name": "newcomer", "password": "taker-pass-1"},
        timeout=30,
    )
    assert other.status_code == 201, other.text
    # Nobody is `leaver` any more: not the old token, not a password login.
    assert (
        httpx.get(
            f"{host.url}{A}/tasks/{task_id}", headers={"Authorization": f"token {old_token}"}
        ).status_code
        == 403
    )
    with httpx.Client(base_url=host.url, timeout=30) as browser:
        browser.get("/login")
        for password in ("leaver-pass-1", "taker-pass-1"):
            response = browser.post(
                "/login",
                data={
                    "username": "leaver",
                    "password": password,
                    "_xsrf": browser.cookies["_xsrf"],
                },
                follow_redirects=False,
            )
            assert response.status_code == 401
    assert host.task(task_id)["owner"] == "leaver"  # the history stays
    still_serving(host)


# ---- 4. non-ASCII tokens ------------------------------------------------------------------


def test_non_ascii_tokens_are_refused_with_401_not_500(host: Cluster) -> None:
    bad = "r\u00e9v\u00eb"
    header = {"Authorization": b"token r\xe9v\xeb\xff"}
    got = httpx.get(f"{host.url}{A}/me", headers=header, timeout=30)
    assert got.status_code == 401 and "ASCII" in got.json()["message"], got.text
    got = httpx.get(f"{host.url}{A}/me", params={"token": bad}, timeout=30)
    assert got.status_code == 401 and "ASCII" in got.json()["message"], got.text
    got = httpx.get(f"{host.url}/lab", params={"token": bad}, timeout=30)
    # JupyterLab's page handler has no error template: the status line says it.
    assert got.status_code == 401 and "ASCII" in got.reason_phrase

    with httpx.Client(base_url=host.url, timeout=30) as browser:
        browser.get("/login")
        form = browser.post(
            "/login",
            data={"username": "", "password": bad, "_xsrf": browser.cookies["_xsrf"]},
            follow_redirects=False,
        )
    assert form.status_code == 401 and "ASCII" in form.text
    assert cookie_name(host) not in form.cookies

    for route in ("register", "heartbeat", "events"):
        got = httpx.post(
            f"{host.url}{A}/runner/{route}",
            headers={"Authorization": b"river-runner " + JOIN_TOKEN.encode() + b"\xe9"},
            json={"name": "intruder", "url": "http://127.0.0.1:1", "inbound_secret": "x"},
            timeout=30,
        )
        assert got.status_code == 401 and "ASCII" in got.json()["message"], (route, got.text)
    assert all(n["name"] != "intruder" for n in admin(host, "GET", "/nodes")["nodes"])
    still_serving(host)
