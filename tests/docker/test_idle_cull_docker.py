"""Idle culling on the docker backend (issue #20): a VPS whose CPU stayed under the
threshold for c.RiverHost.idle_cull_window is stopped with a snapshot through the normal
stop path (its reason says why) and `restart` brings it back with its files; a busy VPS
(a CPU loop) and an operator's no_cull VPS are left running in the same window; no_cull
asked for by a user is 403 naming the role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, snapshot_vps_cluster

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

NODE = f"cull-{uuid.uuid4().hex[:6]}"
API = "/river/api/vps"
WINDOW = 3


@pytest.fixture(scope="module")
def ccluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("cull"),
        heartbeat_interval=0.5,
        extra_host_args=[f"--RiverHost.idle_cull_window={WINDOW}s"],
    )
    with snapshot_vps_cluster(cluster, docker_client, NODE) as started:
        yield started


def create(cluster: Cluster, token: str | None = None, **body: Any) -> dict[str, Any]:
    kwargs = as_user(token) if token else {}
    answer = cluster.request("POST", API, json={"image": BUSYBOX_IMAGE, **body}, **kwargs)
    assert answer.status_code == 201, answer.text
    vps = answer.json()["vps"]
    cluster.created_vps.append(vps["id"])  # type: ignore[attr-defined]
    return vps


def get(cluster: Cluster, vps_id: str) -> dict[str, Any]:
    return cluster.get(f"{API}/{vps_id}")["vps"]


def wait_state(cluster: Cluster, vps_id: str, state: str, timeout: float = 60) -> dict:
    def check() -> dict[str, Any] | None:
        vps = get(cluster, vps_id)
        return vps if vps["state"] == state else None

    return wait_for(check, timeout, what=f"VPS {vps_id} to be {state}")


def run_in(cluster: Cluster, vps_id: str, script: str, detach: bool = False) -> dict:
    answer = cluster.request(
        "POST", f"{API}/{vps_id}/exec", json={"command": ["sh", "-c", script], "detach": detach}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_no_cull_needs_the_operator_role(ccluster: Cluster) -> None:
    token = ccluster.make_users("uma")["uma"]
    answer = ccluster.request("POST", API, json={"no_cull": True}, **as_user(token))
    assert answer.status_code == 403, answer.text
    assert "operator role" in answer.json()["message"]


def test_a_vps_keeps_its_priority(ccluster: Cluster) -> None:
    # (A preemptible VPS: tests/docker/test_vps_preemption_docker.py.)
    vps = create(ccluster, name="urgent", cores=0, priority=3)
    task = ccluster.get(f"/river/api/tasks/{vps['task_id']}")["task"]
    assert task["priority"] == 3, task
    wait_state(ccluster, vps["id"], "running")
    assert ccluster.request("DELETE", f"{API}/{vps['id']}").status_code == 200


def test_an_idle_vps_is_culled_and_restarts_from_its_snapshot(ccluster: Cluster) -> None:
    # The busy one first: its CPU loop starts as soon as it runs, well inside the window.
    busy = create(ccluster, name="busy", cores=1)
    wait_state(ccluster, busy["id"], "running")
    run_in(ccluster, busy["id"], "while :; do :; done", detach=True)
    kept = create(ccluster, name="kept", cores=0, no_cull=True)  # an admin may (0: unpinned)
    assert kept["no_cull"] is True
    idle = create(ccluster, name="idle", cores=1)
    wait_state(ccluster, idle["id"], "running")
    assert run_in(ccluster, idle["id"], "echo kept-across-cull > /note")["exit_code"] == 0

    stopped = wait_state(ccluster, idle["id"], "stopped", timeout=WINDOW + 60)
    assert stopped["snapshots"], stopped  # the normal stop path: snapshot first
    assert stopped["reason"].startswith(f"idle for {WINDOW}s (CPU under 5%)"), stopped
    # The same window has passed for the others: still running.
    assert get(ccluster, busy["id"])["state"] == "running"
    assert get(ccluster, kept["id"])["state"] == "running"

    answer = ccluster.request("POST", f"{API}/{idle['id']}/restart")
    assert answer.status_code == 200, answer.text
    again = wait_state(ccluster, idle["id"], "running")
    assert again["running_image"] == stopped["snapshots"][-1]
    assert again["reason"] is None
    assert run_in(ccluster, idle["id"], "cat /note")["output"].strip() == "kept-across-cull"
