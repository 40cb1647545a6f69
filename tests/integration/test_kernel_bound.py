"""Kernel-bound tasks (issue #20): `%%river submit --bind-kernel` in a real IPython kernel
ties the task to a lease the kernel renews; when the kernel is shut down (SIGKILL, no
goodbye) renewals stop and the host kills the bound task, with the reason saying why,
within the lease plus a margin. A detached task from the same kernel keeps running. A
lease is its owner's: naming another user's is 404, and a clean client close releases it
(its bound task is killed at once)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

from river_magics import Client
from river_server.leases import KERNEL_GONE
from tests.cluster import Cluster, as_user, running_cluster, wait_for

LEASE_S = 3.0
TERMINAL = {"completed", "failed", "killed", "lost", "timeout"}


@pytest.fixture(scope="module")
def kcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("kernel-bound")
    with running_cluster(
        Path(root),
        ("kb-1", "--cpus", "0-1"),
        extra_host_args=[f"--RiverHost.kernel_lease_seconds={LEASE_S}"],
    ) as cluster:
        yield cluster


def _by_name(cluster: Cluster, name: str) -> dict | None:
    tasks = cluster.get("/river/api/tasks?all=1")["tasks"]
    return next((t for t in tasks if t["name"] == name), None)


def _run_cell(client, code: str) -> str:  # noqa: ANN001
    msg_id = client.execute(code)
    parts = []
    deadline = time.monotonic() + 60
    while True:
        message = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            parts.append(content["text"])
        elif kind == "error":
            parts.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(parts)


def test_a_dead_kernel_ends_its_bound_tasks_only(kcluster: Cluster) -> None:
    env = {**os.environ, "RIVER_URL": kcluster.url, "RIVER_TOKEN": kcluster.token}
    manager, client = start_new_kernel(kernel_name="python3", env=env)
    detached = None
    try:
        out = _run_cell(client, "%load_ext river_magics\n%river connect")
        assert "Error" not in out, out
        sleeper = "import time\ntime.sleep(300)"
        out = _run_cell(client, f"%%river submit --bind-kernel --detach --name bound\n{sleeper}")
        assert "Error" not in out, out
        out = _run_cell(client, f"%%river submit --detach --name free\n{sleeper}")
        assert "Error" not in out, out
        bound = wait_for(lambda: _by_name(kcluster, "bound"), 30, what="the bound task")
        detached = wait_for(lambda: _by_name(kcluster, "free"), 30, what="the free task")
        kcluster.wait_task(bound["id"], "running", 60)
        kcluster.wait_task(detached["id"], "running", 60)
        # Renewals keep it alive well past one lease period.
        held = time.monotonic() + 2 * LEASE_S
        wait_for(lambda: time.monotonic() > held, 3 * LEASE_S, what="two lease periods")
        assert kcluster.get(f"/river/api/tasks/{bound['id']}")["task"]["state"] == "running"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    gone = time.monotonic()
    ended = kcluster.wait_task(bound["id"], TERMINAL, LEASE_S + 15)
    assert ended["state"] == "killed", ended
    assert ended["reason"] == KERNEL_GONE, ended
    assert time.monotonic() - gone <= LEASE_S + 15
    assert kcluster.get(f"/river/api/tasks/{detached['id']}")["task"]["state"] == "running"
    kcluster.request("POST", f"/river/api/tasks/{detached['id']}/kill")


def test_leases_are_their_owners_and_a_clean_close_releases(kcluster: Cluster) -> None:
    tokens = kcluster.make_users("kim", "lou")
    lease = kcluster.request("POST", "/river/api/leases", json={}, **as_user(tokens["kim"]))
    assert lease.status_code == 201, lease.text
    lease_id = lease.json()["lease"]["id"]
    other = kcluster.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["sleep", "60"], "lease": lease_id},
        **as_user(tokens["lou"]),
    )
    assert other.status_code == 404, other.text
    assert "no lease" in other.json()["message"]

    river = Client(kcluster.url, tokens["kim"])
    handle = river.submit(["sleep", "300"], bind_kernel=True)
    kcluster.wait_task(str(handle.id), "running", 60)
    river.close()  # releases the lease at once: no lease period to wait
    ended = kcluster.wait_task(str(handle.id), TERMINAL, 5)
    assert ended["state"] == "killed" and ended["reason"] == KERNEL_GONE, ended
