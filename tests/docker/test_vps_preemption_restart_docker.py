"""A preemptible container VPS whose host restarts in the middle of its displacement, on
real dockerd (river_server/preemption.py): the first host marks the VPS but never reaches
its runner (the runner process is frozen with SIGSTOP, so the snapshot call hangs), and is
killed; the restarted host snapshots it when the runner registers, requeues it, runs the
urgent task, and the VPS comes back from the snapshot with its files."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, wait_for
from tests.docker.conftest import BUSYBOX_IMAGE, snapshot_vps_cluster

NODE = f"rvps-{uuid.uuid4().hex[:6]}"
API = "/river/api/vps"


@pytest.fixture(scope="module")
def pcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    # 60 missed beats (30 s): the frozen runner stays online until the mark is made.
    cluster = Cluster(
        tmp_path_factory.mktemp("rvps"),
        heartbeat_interval=0.5,
        heartbeat_misses=60,
        extra_host_args=["--RiverHost.fair_share=False"],
    )
    with snapshot_vps_cluster(cluster, docker_client, NODE) as started:
        yield started


def _vps(cluster: Cluster, vps_id: str) -> dict[str, Any]:
    return cluster.get(f"{API}/{vps_id}")["vps"]


def _wait_state(cluster: Cluster, vps_id: str, state: str, timeout: float = 60) -> dict:
    def check() -> dict[str, Any] | None:
        vps = _vps(cluster, vps_id)
        return vps if vps["state"] == state else None

    return wait_for(check, timeout, what=f"VPS {vps_id} to be {state}")


def _run_in(cluster: Cluster, vps_id: str, script: str) -> dict[str, Any]:
    answer = cluster.request(
        "POST", f"{API}/{vps_id}/exec", json={"command": ["sh", "-c", script], "detach": False}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_restarted_host_snapshots_and_requeues_a_vps_marked_before_it(
    pcluster: Cluster,
) -> None:
    answer = pcluster.request(
        "POST", API, json={"image": BUSYBOX_IMAGE, "name": "spare", "cores": 2, "preemptible": True}
    )
    assert answer.status_code == 201, answer.text
    vps = answer.json()["vps"]
    pcluster.created_vps.append(vps["id"])  # type: ignore[attr-defined]
    _wait_state(pcluster, vps["id"], "running")
    assert _run_in(pcluster, vps["id"], "echo kept > /root/note")["exit_code"] == 0

    runner = pcluster.runners[NODE].process
    assert runner is not None
    os.kill(runner.pid, signal.SIGSTOP)
    try:
        urgent = pcluster.submit(
            command=["sh", "-c", "echo urgent done"], image=BUSYBOX_IMAGE, cores=2, priority=5
        )
        wait_for(
            lambda: "displacing" in (pcluster.task(urgent["id"]).get("wait_reason") or ""),
            20,
            what="the VPS marked",
        )
        pcluster.stop_host(signal.SIGKILL)
    finally:
        os.kill(runner.pid, signal.SIGCONT)
    pcluster.start_host()

    queued = _wait_state(pcluster, vps["id"], "queued", 60)
    assert queued["snapshots"], queued
    assert queued["reason"].startswith(f"displaced by task {urgent['id']} of admin"), queued
    done = pcluster.wait_task(urgent["id"], {"completed", "failed", "killed", "lost"}, 60)
    assert done["state"] == "completed", done
    again = _wait_state(pcluster, vps["id"], "running", 60)
    assert (again["id"], again["task_id"]) == (vps["id"], vps["task_id"])
    assert again["running_image"] == queued["snapshots"][-1]
    assert _run_in(pcluster, vps["id"], "cat /root/note")["output"].strip() == "kept"
    assert pcluster.request("DELETE", f"{API}/{vps['id']}").status_code == 200
