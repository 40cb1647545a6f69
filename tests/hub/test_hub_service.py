"""River as a JupyterHub service (issue #18, docs/jupyterhub.md), against a real Hub and its
real configurable-http-proxy: Hub OAuth logins in Chromium, Hub API tokens at River's API,
roles from the Hub, refusals of names River must keep, and single-user servers that get
River as their own user."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from river_server.hub_spawn import RIVER_OFF_ARG
from tests.cluster import Cluster, wait_for
from tests.hub.hubfixture import HUB_PASSWORD, Hub, environ_of, hub_problem
from tests.hub_site import CACHE_SECONDS, hub_service_site

__all__ = ["hub_service_site"]  # the shared site's fixture, used here

PROBLEM = hub_problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]

CHROMIUM = os.environ.get("RIVER_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def site(hub_service_site: tuple[Hub, Cluster]) -> tuple[Hub, Cluster]:
    """A Hub with River as its service, and the River host that trusts it (shared with
    tests/security/test_hub_attacks.py: tests/hub_site.py)."""
    return hub_service_site


def me(river: Cluster, token: str) -> httpx.Response:
    return httpx.get(
        f"{river.url}/river/api/me", headers={"Authorization": f"token {token}"}, timeout=30
    )


def test_a_hub_token_acts_as_its_user_and_sees_only_their_tasks(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    alice, bob = hub.token_of("alice"), hub.token_of("bob")
    assert me(river, alice).json()["user"]["name"] == "alice"
    assert me(river, alice).json()["user"]["role"] == "user"
    assert me(river, bob).json()["user"]["name"] == "bob"

    as_alice = {"Authorization": f"token {alice}"}
    response = httpx.post(
        f"{river.url}/river/api/tasks",
        headers=as_alice,
        json={"command": ["true"]},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    task = response.json()["task"]
    assert task["owner"] == "alice"
    path = f"{river.url}/river/api/tasks/{task['id']}"
    assert "spec" in httpx.get(path, headers=as_alice, timeout=30).json()["task"]
    # Bob (a user) sees the queue without the spec, and alice's task is 404 to touch.
    as_bob = {"Authorization": f"token {bob}"}
    assert "spec" not in httpx.get(path, headers=as_bob, timeout=30).json()["task"]
    assert httpx.get(f"{path}/logs", headers=as_bob, timeout=30).status_code == 404
    assert httpx.post(f"{path}/kill", headers=as_bob, json={}, timeout=30).status_code == 404
    assert httpx.get(f"{path}/logs", headers=as_alice, timeout=30).status_code == 200
    # A Hub account has no password at River: its password is the Hub's business.
    refused = river.request("PATCH", "/river/api/users/alice", json={"password": "x" * 12})
    assert refused.status_code == 409 and "JupyterHub account" in refused.text


def test_a_hub_token_without_river_access_is_not_accepted(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    token = hub.token_of("bob", scopes=["read:users!user"])
    assert me(river, token).status_code == 403
    assert me(river, "not-a-token-anywhere").status_code == 403


def test_roles_come_from_the_hub_and_follow_its_groups(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    assert me(river, hub.token_of("hubadmin")).json()["user"]["role"] == "admin"
    carol = hub.token_of("carol")
    assert me(river, carol).json()["user"]["role"] == "operator"

    hub.ok("DELETE", "/groups/gpu-ops/users", json={"users": ["carol"]})
    try:
        # Within the cache time the Hub is asked again and the role is lowered.
        wait_for(
            lambda: me(river, carol).json()["user"]["role"] == "user",
            CACHE_SECONDS + 15,
            what="carol's River role to drop to user",
        )
    finally:
        hub.ok("POST", "/groups/gpu-ops/users", json={"users": ["carol"]})


def test_an_expired_hub_token_stops_working_at_river(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    token = hub.token_of("eve", expires_in=4)
    assert me(river, token).status_code == 200
    # No valid credential: River's user routes answer 403, as for any unknown token
    # (docs/security.md, "Who is who").
    wait_for(
        lambda: me(river, token).status_code == 403,
        4 + CACHE_SECONDS + 20,
        what="the expired Hub token to be refused at River",
    )


def test_a_hub_user_never_takes_over_a_local_account(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    river.make_users("ada")  # a local River account, made before the Hub user shows up
    response = me(river, hub.token_of("ada"))
    assert response.status_code == 403, response.text
    assert "local account" in response.json()["message"]


def test_each_browser_logs_in_through_the_hub_as_its_own_user(
    site: tuple[Hub, Cluster], tmp_path: Path
) -> None:
    hub, river = site
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM}; run .ci/setup-browser.sh")
    from playwright.sync_api import sync_playwright

    others = {hub.river_token, hub.tester_token, river.token}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], timeout=60_000
        )
        try:
            seen: dict[str, dict[str, Any]] = {}
            for name in ("alice", "bob"):
                context = browser.new_context()
                context.set_default_timeout(30_000)
                page = context.new_page()
                # River's own login page offers the Hub; the Hub asks for its password.
                page.goto(f"{river.url}/login?next=%2Friver%2Fapi%2Fme")
                page.click("#hub_login")
                page.fill("#username_input", name)
                page.fill("#password_input", HUB_PASSWORD)
                page.click("#login_submit")
                page.wait_for_url(f"{river.url}/river/api/me", timeout=60_000)
                body = page.inner_text("body")
                seen[name] = httpx.Response(200, text=body).json()["user"]
                page.screenshot(path=str(tmp_path / f"{name}.png"))
                cookies = {c["name"]: c["value"] for c in context.cookies(river.url)}
                assert cookies, "River set no login cookie"
                html = page.content() + " ".join(cookies.values())
                assert not any(secret in html for secret in others)
                # The session is River's own: a second request needs no Hub round trip.
                page.goto(f"{river.url}/river/api/me")
                assert name in page.inner_text("body")
                context.close()
        finally:
            browser.close()
    assert seen["alice"]["name"] == "alice" and seen["bob"]["name"] == "bob"


def test_each_single_user_server_gets_river_as_its_own_user(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    names = ("alice", "bob")
    try:
        for name in names:
            hub.ok("POST", f"/users/{name}/server")
        for name in names:
            wait_for(
                lambda n=name: hub.ok("GET", f"/users/{n}")["servers"].get("", {}).get("ready"),
                150,
                what=f"{name}'s single-user server",
            )
        # The real environment of each real server process the Hub started.
        by_user = {}
        for pid in hub.server_pids():
            env = environ_of(pid)
            by_user[env["JUPYTERHUB_USER"]] = env
            # River's host extension is off with no flag in the Hub's config (the venv's
            # config files enable it for every Jupyter server): configure_spawner's doing.
            assert RIVER_OFF_ARG in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        assert set(by_user) == set(names)
        for name in names:
            as_user = {"Authorization": f"token {hub.token_of(name)}"}
            server = f"{hub.url}/user/{name}"
            assert httpx.get(f"{server}/api/status", headers=as_user, timeout=30).status_code == 200
            # No River host inside a user's server: its /river/api/ is either absent or River's
            # lab bridge forwarding to the real River as this user (a host of its own would
            # not know the user: 401/403).
            inner = httpx.get(f"{server}/river/api/me", headers=as_user, timeout=30)
            assert inner.status_code in (200, 404), inner.text
            if inner.status_code == 200:
                assert inner.json()["user"]["name"] == name
        tokens = set()
        for name, env in by_user.items():
            assert env["RIVER_URL"] == river.url
            assert env["RIVER_TOKEN"] == env["JUPYTERHUB_API_TOKEN"]  # its own server token
            tokens.add(env["RIVER_TOKEN"])
            answer = me(river, env["RIVER_TOKEN"])
            assert answer.status_code == 200, answer.text
            assert answer.json()["user"]["name"] == name
            assert hub.river_token not in env.values() and hub.tester_token not in env.values()
        assert len(tokens) == 2  # no user got another's token
    finally:
        for name in names:
            hub.api("DELETE", f"/users/{name}/server")
        wait_for(lambda: not hub.server_pids(), 60, what="the single-user servers to stop")
