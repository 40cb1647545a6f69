"""Time limits on a real cluster (issue #20): SIGTERM at the limit, SIGKILL after the grace,
and the task ends `timeout` with the limit as its reason and its output kept."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, running_cluster

GRACE = 2
HOST_ARGS = [
    f"--RiverHost.time_limit_grace={GRACE}",
    "--RiverHost.time_limit_max=user=1h",
]
# A shell that prints, then waits in short sleeps so a trapped SIGTERM runs at once.
TRAPS = "trap 'echo caught TERM; exit 0' TERM; echo started; while true; do sleep 0.1; done"
IGNORES = "trap '' TERM; echo started; while true; do sleep 0.1; done"


def _lines(cluster: Cluster, task_id: str) -> list[str]:
    return [line["text"] for line in cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host and two-core runner for both tests: the second only reads the host's
    refusals, so a second host start would buy nothing."""
    root = tmp_path_factory.mktemp("time-limits")
    with running_cluster(root, ("solo", "--cpus", "0,1"), extra_host_args=HOST_ARGS) as c:
        yield c


def _start(cluster: Cluster, script: str) -> tuple[str, float]:
    began = time.monotonic()
    task = cluster.submit(command=["sh", "-c", script], cores=1, time_limit="3s")
    assert task["time_limit"] == 3
    return task["id"], began


def _end(cluster: Cluster, started: tuple[str, float]) -> tuple[dict, float]:
    task_id, began = started
    done = cluster.wait_task(task_id, {"timeout", "completed", "failed", "killed"}, 40)
    return done, time.monotonic() - began


def test_time_limits_end_tasks_as_timeout(cluster: Cluster) -> None:
    # The three limits run side by side on the two cores, not one after another: the two
    # whose duration is bounded start at once, the plain one (no bound) queues for the
    # trapped one's core. The test waits about two limits instead of three plus the grace.
    trapped_task = _start(cluster, TRAPS)
    stubborn_task = _start(cluster, IGNORES)
    plain_task = _start(cluster, "echo before the limit; sleep 60")

    # A plain task: SIGTERM ends it at 3s; its output so far is kept.
    plain, _ = _end(cluster, plain_task)
    assert plain["state"] == "timeout", plain
    assert "time limit of 3s reached" in plain["reason"]
    assert "before the limit" in _lines(cluster, plain["id"])

    # A task that traps SIGTERM and exits cleanly within the grace: still `timeout`,
    # with its trap's output in the log.
    trapped, took = _end(cluster, trapped_task)
    assert trapped["state"] == "timeout", trapped
    assert "caught TERM" in _lines(cluster, trapped["id"])
    assert took < 3 + GRACE + 5

    # A task that ignores SIGTERM is SIGKILLed once the grace is over.
    stubborn, took = _end(cluster, stubborn_task)
    assert stubborn["state"] == "timeout", stubborn
    assert f"SIGKILL after a {GRACE}s grace" in stubborn["reason"]
    assert stubborn["finished_at"] - stubborn["started_at"] >= 3 + GRACE - 0.5
    assert took < 3 + GRACE + 10


def test_time_limit_over_the_role_maximum_is_a_400_naming_it(cluster: Cluster) -> None:
    token = cluster.make_users("tina")["tina"]
    answer = cluster.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["true"], "time_limit": "2h"},
        headers={"Authorization": f"token {token}"},
    )
    assert answer.status_code == 400, answer.text
    assert "maximum for the user role, 1h" in answer.json()["message"]
    typo = cluster.request(
        "POST", "/river/api/tasks", json={"command": ["true"], "time_limit": "2 weeks"}
    )
    assert typo.status_code == 400
    assert "90m, 2h, 1d" in typo.json()["message"]
