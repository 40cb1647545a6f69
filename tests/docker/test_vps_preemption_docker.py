"""A preemptible container VPS displaced by urgent work (issue #20), on real dockerd: a
high-priority task that needs the VPS's cores makes the host snapshot the VPS and put it
back in the queue with the reason (who displaced it and why); the task runs to its end;
the VPS then runs again from that snapshot as the same VPS (same id, task, owner) with
the file written into its home before it was displaced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, snapshot_vps_cluster

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

NODE = f"pvps-{uuid.uuid4().hex[:6]}"
API = "/river/api/vps"


@pytest.fixture(scope="module")
def pcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("pvps"),
        heartbeat_interval=0.5,
        extra_host_args=["--RiverHost.fair_share=False"],
    )
    with snapshot_vps_cluster(cluster, docker_client, NODE) as started:
        yield started


def get(cluster: Cluster, vps_id: str) -> dict[str, Any]:
    return cluster.get(f"{API}/{vps_id}")["vps"]


def wait_state(cluster: Cluster, vps_id: str, state: str, timeout: float = 60) -> dict:
    def check() -> dict[str, Any] | None:
        vps = get(cluster, vps_id)
        return vps if vps["state"] == state else None

    return wait_for(check, timeout, what=f"VPS {vps_id} to be {state}")


def run_in(cluster: Cluster, vps_id: str, script: str) -> dict[str, Any]:
    answer = cluster.request(
        "POST", f"{API}/{vps_id}/exec", json={"command": ["sh", "-c", script], "detach": False}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def transitions(cluster: Cluster, task_id: int) -> list[str]:
    """The recorded transition details of a task, read from the host's database."""
    from sqlalchemy import select

    from river_server import db

    engine = db.make_engine(cluster.db_url)
    try:
        with db.make_sessionmaker(engine)() as session:
            rows = session.scalars(
                select(db.TaskTransition).where(db.TaskTransition.task_id == task_id)
            )
            return [row.detail or "" for row in rows]
    finally:
        engine.dispose()


def test_a_preemptible_vps_is_snapshotted_requeued_and_back_with_its_files(
    pcluster: Cluster,
) -> None:
    answer = pcluster.request(
        "POST",
        API,
        json={"image": BUSYBOX_IMAGE, "name": "spare", "cores": 2, "preemptible": True},
    )
    assert answer.status_code == 201, answer.text
    vps = answer.json()["vps"]
    pcluster.created_vps.append(vps["id"])  # type: ignore[attr-defined]
    assert vps["preemptible"] is True, vps
    wait_state(pcluster, vps["id"], "running")
    assert run_in(pcluster, vps["id"], "echo kept-across-preemption > /root/note")["exit_code"] == 0

    # Both cores are the VPS's: the urgent task can only run by displacing it.
    urgent = pcluster.submit(
        command=["sh", "-c", "echo urgent work done; sleep 3"],
        image=BUSYBOX_IMAGE,
        cores=2,
        priority=5,
    )
    queued = wait_state(pcluster, vps["id"], "queued")
    assert queued["id"] == vps["id"] and queued["task_id"] == vps["task_id"], queued
    assert queued["snapshots"], queued  # snapshotted before it gave its cores back
    assert queued["reason"] == (
        f"displaced by task {urgent['id']} of admin (priority 5 over 0); "
        f"requeued to restart from snapshot {queued['snapshots'][-1]}"
    ), queued
    details = transitions(pcluster, int(vps["task_id"]))
    assert any(
        d.startswith(f"being displaced by task {urgent['id']}") and "snapshot, then stop" in d
        for d in details
    ), details

    def ended() -> dict[str, Any] | None:
        task = pcluster.task(urgent["id"])
        return task if task["state"] in ("completed", "failed", "killed", "lost") else None

    done = wait_for(ended, 60, what="the urgent task to end")
    assert done["state"] == "completed", done

    again = wait_state(pcluster, vps["id"], "running")
    assert (again["id"], again["task_id"], again["owner"]) == (
        vps["id"],
        vps["task_id"],
        vps["owner"],
    )
    assert again["running_image"] == queued["snapshots"][-1]
    assert again["preemptible"] is True  # still preemptible: it may be displaced again
    assert again["reason"] is None
    note = run_in(pcluster, vps["id"], "cat /root/note")
    assert note["output"].strip() == "kept-across-preemption", note
    assert pcluster.request("DELETE", f"{API}/{vps['id']}").status_code == 200
