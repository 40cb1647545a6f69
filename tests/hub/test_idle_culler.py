"""The Hub's idle culler stops a River server (issue #18): jupyterhub-idle-culler, run by
the Hub as a service, calls `DELETE /hub/api/users/NAME/server` for an idle server; that is
RiverSpawner.stop, River's VPS stop with its snapshot, and the next spawn brings the home
back. A module of its own: its culler would stop the other modules' servers."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, wait_for
from tests.hub.hubfixture import Hub
from tests.hub.test_river_spawner import (
    PROBLEM,
    _made_vps,
    river_get,
    river_site,
    server_of,
    spawn,
    stop,
    through_hub,
)

try:
    import jupyterhub_idle_culler  # noqa: F401
except ImportError:  # pragma: no cover
    CULLER = "jupyterhub-idle-culler is not installed (pip install -e '.[hub]')"
else:
    CULLER = None

IDLE_SECONDS = 30  # the server must live long enough for the test to write its file
CULLER_CONFIG = f"""
c.JupyterHub.services.append({{
    "name": "idle-culler",
    "command": [{sys.executable!r}, "-m", "jupyterhub_idle_culler",
                "--timeout={IDLE_SECONDS}", "--cull-every=5"],
}})
c.JupyterHub.load_roles.append({{
    "name": "idle-culler", "services": ["idle-culler"],
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
}})
"""
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROBLEM is not None or CULLER is not None, reason=PROBLEM or CULLER or ""),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Cluster]]:
    with river_site(tmp_path_factory.mktemp("culler"), CULLER_CONFIG) as both:
        yield both


def test_the_idle_culler_stops_the_vps_with_its_snapshot(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    alice = hub.token_of("alice")
    spawn(hub, "alice", cores=1, memory="1G")
    [vps] = river_get(river, alice, "/vps").json()["vps"]
    _made_vps.add(f"river-vps/{vps['id']}")
    put = through_hub(hub, "PUT", "/user/alice/api/contents/culled.txt", alice, json={
        "type": "file", "format": "text", "content": "kept across the cull",
    })  # fmt: skip
    assert put.status_code in (200, 201), put.text

    # Nobody stops it: the culler does, through the Hub's API, once it is idle.
    wait_for(lambda: not server_of(hub, "alice"), IDLE_SECONDS + 90, what="the culler's stop")
    assert "idle-culler" in (hub.root / "hub.log").read_text()
    stopped = river_get(river, alice, f"/vps/{vps['id']}").json()["vps"]
    assert stopped["state"] == "stopped" and stopped["snapshots"], stopped

    spawn(hub, "alice")
    got = through_hub(hub, "GET", "/user/alice/api/contents/culled.txt", alice)
    assert got.status_code == 200, got.text
    assert got.json()["content"] == "kept across the cull"
    stop(hub, "alice")
