"""JupyterHub spawn through River, against starting the same container directly (issue #18).

River path: the Hub's `POST /hub/api/users/NAME/server` with RiverSpawner, timed until the
user's server answers its own API through the Hub's proxy (`GET /user/NAME/api` with the
user's token: 200). That covers the Hub, River's VPS creation and placement, the docker
runner's container start, `jupyterhub-singleuser` starting and the two proxies.
Then, for the same user, stop (a VPS stop with its snapshot) and spawn again: the restart
path, timed the same way.

Floor, in the same run with the rounds interleaved: the docker SDK starts a container of
the same image running a Jupyter server (`jupyter-server`, no Hub to check in with) and we
poll its API on the container's address until it answers.

    PYTHONPATH=. .venv/bin/python bench/spawn.py -n 3

Needs a Docker daemon, the river-test-vps image (.ci/build-images.sh), JupyterHub and
configurable-http-proxy (.ci/setup-hub.sh). Prints medians; docs/performance.md has a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import wait_for  # noqa: E402
from tests.hub.test_river_spawner import (  # noqa: E402
    IMAGE,
    _made_vps,
    river_get,
    river_site,
    server_of,
    stop,
)

FLOOR_COMMAND = [
    "jupyter-server", "--allow-root", "--ip=0.0.0.0", "--port=8888",
    "--IdentityProvider.token=", "--ServerApp.open_browser=False",
]  # fmt: skip


def answers(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def hub_spawn(hub, name: str, token: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the spawn request to the user's server answering through the Hub."""
    started = time.perf_counter()
    response = hub.api("POST", f"/users/{name}/server", json={"cores": 1, "memory": "1G"})
    assert response.status_code in (201, 202), response.text
    wait_for(lambda: answers(f"{hub.url}/user/{name}/api", token), 300, what="server answers")
    seconds = time.perf_counter() - started
    wait_for(lambda: server_of(hub, name).get("ready"), 60, what="the Hub sees it ready")
    return seconds


def direct_start(client: docker.DockerClient) -> float:
    """Seconds from `containers.run` to the same image's Jupyter server answering."""
    started = time.perf_counter()
    container = client.containers.run(
        IMAGE, FLOOR_COMMAND, detach=True, labels={"river.bench": "spawn"}
    )
    try:
        container.reload()
        address = container.attrs["NetworkSettings"]["IPAddress"]
        wait_for(lambda: answers(f"http://{address}:8888/api"), 120, what="direct server")
        return time.perf_counter() - started
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env()
    first: list[float] = []
    again: list[float] = []
    floor: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="river-bench-spawn-") as root,
        river_site(Path(root)) as (hub, river),
    ):
        for i in range(args.rounds):
            name = f"bench{i}"
            hub.add_users(name)
            token = hub.token_of(name)
            floor.append(direct_start(client))
            first.append(hub_spawn(hub, name, token))
            for vps in river_get(river, token, "/vps").json()["vps"]:
                _made_vps.add(f"river-vps/{vps['id']}")  # its snapshots go with the site
            stop(hub, name)
            again.append(hub_spawn(hub, name, token))
            stop(hub, name)
            print(
                f"round {i + 1}: direct {floor[-1]:.2f} s, Hub spawn {first[-1]:.2f} s, "
                f"Hub spawn after stop {again[-1]:.2f} s",
                flush=True,
            )
    direct = statistics.median(floor)
    print("\n| path | median s | x direct |\n|---|---|---|")
    print(f"| docker SDK run + Jupyter server answering (floor) | {direct:.2f} | 1.00 |")
    for label, values in (("Hub spawn (new VPS)", first), ("Hub spawn after stop", again)):
        median = statistics.median(values)
        print(f"| {label} | {median:.2f} | {median / direct:.2f} |")


if __name__ == "__main__":
    main()
