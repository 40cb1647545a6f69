"""One JupyterHub + River site with River as the Hub's service, shared by the Hub service
tests (tests/hub/test_hub_service.py) and the attacks on it (tests/security/
test_hub_attacks.py).

Both used to build the same site (a real Hub and its proxy, a River host trusting it)
each; a start costs seconds, and their tests do not interfere (each acts as its own Hub
users, and the role tests each move their own user in their own group), so one site
serves both for the whole session: the first module that asks starts it, the last
teardown closes it. The site's union of users and group roles is declared here, so a
module's tests can rely on them whichever module ran first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.hub.hubfixture import Hub

CACHE_SECONDS = 2
# tests/hub/test_hub_service.py: alice, bob, carol (gpu-ops), ada, eve;
# tests/security/test_hub_attacks.py: admin, mallory, olduser, oscar (ops).
USERS = ("alice", "bob", "carol", "ada", "eve", "admin", "mallory", "olduser", "oscar")
GROUPS = {"gpu-ops": ("carol",), "ops": ("oscar",)}

_lock = threading.Lock()
_site: tuple[Hub, Cluster] | None = None
_users = 0


def start_site(root: Path) -> tuple[Hub, Cluster]:
    """A Hub with River as its service, the River host that trusts it, USERS and GROUPS;
    closed again (both processes) if any step fails."""
    (root / "river").mkdir()
    river = Cluster(root / "river")
    hub = Hub(root / "hub", river_url=river.url)
    river.extra_host_args = [
        f"--RiverHost.hub_api_url={hub.api_url}",
        f"--RiverHost.hub_public_url={hub.url}",
        f"--RiverHost.hub_cache_seconds={CACHE_SECONDS}",
        *(f"--RiverHost.hub_group_roles={group}=operator" for group in GROUPS),
    ]
    try:
        hub.start()
        os.environ["JUPYTERHUB_API_TOKEN"] = hub.river_token  # the host's only, by env
        try:
            river.start_host()
        finally:
            os.environ.pop("JUPYTERHUB_API_TOKEN", None)
        hub.add_users(*USERS)
        for group, members in GROUPS.items():
            hub.ok("POST", f"/groups/{group}")
            hub.ok("POST", f"/groups/{group}/users", json={"users": list(members)})
    except BaseException:
        close_site(hub, river)
        raise
    return hub, river


def close_site(hub: Hub, river: Cluster) -> None:
    hub.close()
    river.close()


@pytest.fixture(scope="session")
def hub_service_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Cluster]]:
    """The shared site. Imported by each module that uses it (pytest then keeps one
    fixture per module), so the site itself is counted here: started once, closed after
    the last user's teardown."""
    global _site, _users
    with _lock:
        if _site is None:
            _site = start_site(tmp_path_factory.mktemp("hubsite"))
        _users += 1
        site = _site
    try:
        yield site
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _site is not None:
                close_site(*_site)
                _site = None
