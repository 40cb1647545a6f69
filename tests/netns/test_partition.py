"""A runner cut off from the host (its underlay link down) past the offline timeout, then
healed: no task runs twice, and host and runner agree again without manual steps."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.cluster import _kill_leftover_tasks
from tests.netns.conftest import OverlayCluster
from tests.netns.topology import Topology, run_ip, wait_for


@pytest.fixture
def partitioned(tmp_path: Path) -> Iterator[tuple[OverlayCluster, str]]:
    topology = Topology().start()
    cluster = OverlayCluster(topology, tmp_path, topology.machine("host", 1))
    try:
        cluster.start_host()
        cluster.start_runner("r1", topology.machine("runner1", 2))
        cluster.wait_online("r1")
        yield cluster, "p2"  # the runner's port on the switch
    finally:
        if cluster.host_process is not None:
            cluster.stop_host(signal.SIGKILL)
        topology.close()
        _kill_leftover_tasks(tmp_path)


def test_partitioned_runner_reconciles_without_running_twice(
    partitioned: tuple[OverlayCluster, str], tmp_path: Path
) -> None:
    cluster, port = partitioned
    api, switch = cluster.api, cluster.topology.switch
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    ledger.chmod(0o1777)  # tasks run as the runner's task account (nobody), not as root
    script = (
        "import os, time\n"
        "open(os.path.join(os.environ['LEDGER'], os.environ['RIVER_TASK_ID']), 'a').write('ran\\n')\n"
        "print('pid', os.getpid(), flush=True)\n"
        "time.sleep(float(os.environ['NAP']))\n"
    )

    def submit(nap: float) -> str:
        body = {"kind": "python", "script": script, "env": {"LEDGER": str(ledger), "NAP": str(nap)}}
        response = api.request("POST", "/river/api/tasks", json=body)
        assert response.status_code == 201, response.text
        return response.json()["task"]["id"]

    def task(task_id: str) -> dict:
        return api.get(f"/river/api/tasks/{task_id}")["task"]

    long_id = submit(60)
    wait_for(lambda: task(long_id)["state"] == "running", 30, "the long task to run")
    pid = wait_for(
        lambda: next(
            (
                int(line["text"].split()[1])
                for line in api.get(f"/river/api/tasks/{long_id}/logs")["lines"]
            ),
            None,
        ),
        20,
        "the task's pid line",
    )

    # Cut the runner off. Past the offline timeout the host gives up on its task.
    run_ip("-n", switch, "link", "set", port, "down")
    lost = wait_for(
        lambda: task(long_id)["state"] == "lost" and task(long_id), 20, "the task to be lost"
    )
    assert "offline" in lost["reason"]
    # Work submitted meanwhile waits for a node instead of failing.
    queued_id = submit(0)
    assert task(queued_id)["state"] == "queued"
    assert psutil.pid_exists(pid), "the partition alone must not kill the task"

    run_ip("-n", switch, "link", "set", port, "up")
    cluster.wait_online("r1", timeout=30)
    # The runner reports the task; the host says it is over, so the runner stops it.
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        20,
        "the orphaned task to be stopped",
    )
    assert task(long_id)["state"] == "lost"  # terminal states are final
    wait_for(lambda: task(queued_id)["state"] == "completed", 30, "the queued task to run")
    for task_id in (long_id, queued_id):
        assert (ledger / task_id).read_text().count("ran") == 1, f"task {task_id} ran twice"
