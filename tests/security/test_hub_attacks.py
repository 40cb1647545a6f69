"""Attacks on River through JupyterHub identities, against a real Hub (tests/hub/hubfixture.py).

A Hub user is trusted by River only as far as the Hub vouches for them, and only for an
account River made for the Hub. Tried here, each through River's public API:
- a Hub token the user made without River's access scope (a token for something else);
- a Hub user named `admin`, River's own local admin account: a Hub admin can create any
  user name at the Hub, so this is how a Hub admin (or a Hub with open sign-up) would
  become River's admin;
- a Hub user named like a deleted (retired) River account, whose tasks and VPSes are
  still recorded under that name;
- a Hub user removed from the operator group keeping the role past the cache time.
Each must be refused with a message that says why, and gain nothing: no task, no listing.
"""

from __future__ import annotations

import httpx
import pytest

from tests.cluster import Cluster, wait_for
from tests.hub.hubfixture import Hub, hub_problem
from tests.hub_site import CACHE_SECONDS, hub_service_site

__all__ = ["hub_service_site"]  # the shared site's fixture, used here

PROBLEM = hub_problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]


@pytest.fixture(scope="module")
def site(hub_service_site: tuple[Hub, Cluster]) -> tuple[Hub, Cluster]:
    """The Hub + River site of tests/hub_site.py (shared with tests/hub/test_hub_service.py),
    with a task of River's admin for the listings the attacks must not reach."""
    hub, river = hub_service_site
    river.ok("POST", "/river/api/tasks", json={"command": ["true"]})  # admin's own task
    return hub, river


def _call(river: Cluster, method: str, path: str, token: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method,
        f"{river.url}{path}",
        headers={"Authorization": f"token {token}"},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )


def _gains_nothing(river: Cluster, token: str) -> None:
    """No listing of tasks or users, no task submitted, and no account made at River."""
    before = len(river.get("/river/api/tasks", params={"all": "true"})["tasks"])
    for method, path, body in (
        ("GET", "/river/api/me", None),
        ("GET", "/river/api/tasks", None),
        ("GET", "/river/api/users", None),
        ("POST", "/river/api/tasks", {"command": ["true"]}),
    ):
        answer = (
            _call(river, method, path, token, json=body)
            if body
            else _call(river, method, path, token)
        )
        assert answer.status_code in (401, 403), (method, path, answer.status_code, answer.text)
    assert len(river.get("/river/api/tasks", params={"all": "true"})["tasks"]) == before


def test_a_hub_token_without_rivers_scope_is_refused(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    token = hub.token_of("mallory", scopes=["read:users!user"])
    answer = _call(river, "GET", "/river/api/me", token)
    assert answer.status_code == 403, answer.text
    _gains_nothing(river, token)
    names = {u["name"] for u in river.get("/river/api/users")["users"]}
    assert "mallory" not in names  # a refused token makes no account either


def test_a_hub_user_named_like_rivers_local_admin_is_refused(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    token = hub.token_of("admin")
    answer = _call(river, "GET", "/river/api/me", token)
    assert answer.status_code == 403, answer.text
    assert "local account" in answer.json()["message"], answer.text
    _gains_nothing(river, token)
    (admin,) = [u for u in river.get("/river/api/users")["users"] if u["name"] == "admin"]
    assert admin["role"] == "admin"  # the local account is untouched


def test_a_hub_user_named_like_a_retired_account_is_refused(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    river.make_users("olduser")
    deleted = river.request("DELETE", "/river/api/users/olduser")
    assert deleted.status_code < 300, deleted.text
    token = hub.token_of("olduser")
    answer = _call(river, "GET", "/river/api/me", token)
    assert answer.status_code == 403, answer.text
    assert "olduser" in answer.json()["message"], answer.text
    _gains_nothing(river, token)
    names = {u["name"] for u in river.get("/river/api/users")["users"]}
    assert "olduser" not in names


def test_a_hub_user_removed_from_the_operator_group_loses_the_role(
    site: tuple[Hub, Cluster],
) -> None:
    hub, river = site
    token = hub.token_of("oscar")
    assert _call(river, "GET", "/river/api/me", token).json()["user"]["role"] == "operator"
    hub.ok("DELETE", "/groups/ops/users", json={"users": ["oscar"]})
    wait_for(
        lambda: _call(river, "GET", "/river/api/me", token).json()["user"]["role"] == "user",
        CACHE_SECONDS + 15,
        what="oscar's River role to drop to user within the cache time",
    )
