"""Time limits on the docker backend (issue #20): a container task at its limit ends
`timeout` (docker stop: SIGTERM, SIGKILL after the grace); a VPS at its limit is stopped by
the host through the normal stop path, so its filesystem is kept as a snapshot."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, remove_containers

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

NODE = f"limits-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def lcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("limits"),
        heartbeat_interval=1.0,
        extra_host_args=["--RiverHost.time_limit_grace=2"],
    )
    cluster.start_host()
    cluster.created_vps = []  # type: ignore[attr-defined]
    try:
        cluster.start_runner(NODE, "--backend", "docker", "--cpus", "0-1")
        yield cluster
    finally:
        cluster.close()
        remove_containers(docker_client, NODE)
        for vps_id in cluster.created_vps:  # type: ignore[attr-defined]
            for image in docker_client.images.list(name=f"river-vps/{vps_id}"):
                for tag in image.tags:
                    with contextlib.suppress(docker.errors.APIError):
                        docker_client.images.remove(tag, force=True)


def test_a_container_task_at_its_limit_ends_timeout(lcluster: Cluster) -> None:
    task = lcluster.submit(
        command=["sh", "-c", "echo started; sleep 60"], image=BUSYBOX_IMAGE, time_limit="3s"
    )
    done = lcluster.wait_task(task["id"], {"timeout", "completed", "failed", "killed"}, 60)
    assert done["state"] == "timeout", done
    assert "time limit of 3s reached" in done["reason"]
    lines = lcluster.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
    assert "started" in [line["text"] for line in lines]


def test_a_vps_at_its_limit_is_stopped_with_a_snapshot(lcluster: Cluster) -> None:
    token = lcluster.make_users("lena")["lena"]
    answer = lcluster.request(
        "POST",
        "/river/api/vps",
        json={"image": BUSYBOX_IMAGE, "cores": 1, "time_limit": "4s"},
        **as_user(token),
    )
    assert answer.status_code == 201, answer.text
    vps = answer.json()["vps"]
    lcluster.created_vps.append(vps["id"])  # type: ignore[attr-defined]

    def state() -> dict[str, Any] | None:
        found = lcluster.get(f"/river/api/vps/{vps['id']}", **as_user(token))["vps"]
        return found if found["state"] == "stopped" else None

    stopped = wait_for(state, 90, what=f"VPS {vps['id']} to be stopped at its limit")
    assert stopped["snapshots"], stopped  # the normal stop path: snapshot first
    assert "time limit of 4s reached" in stopped["reason"], stopped
