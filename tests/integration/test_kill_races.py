"""Kills that race the task's own end and its launch (issue #14).

A kill must answer 200 or 409, never 5xx, whatever the task is doing, and every killed or
ended task must reach a terminal state with no process left behind on its runner.
"""

from __future__ import annotations

from pathlib import Path

from river_server.up_tasks import alive
from tests.cluster import Cluster, wait_for

TERMINAL = {"completed", "failed", "killed", "killed_oom", "lost"}
QUICK = {"command": ["sh", "-c", "echo hi"], "cores": 1}
HOLDER = {"command": ["sleep", "60"], "cores": 1}


def _kill(cluster: Cluster, task_id: str) -> tuple[int, str]:
    response = cluster.request("POST", f"/river/api/tasks/{task_id}/kill")
    return response.status_code, response.text


def _task_pids(cluster: Cluster) -> list[int]:
    """The supervisors and task process groups the runners started (their pid files)."""
    root = cluster.root / "runners"
    pids = []
    for name in ("supervisor.pid", "child.pid"):
        for path in Path(root).glob(f"*/tasks/*/{name}"):
            try:
                pids.append(int(path.read_text()))
            except (OSError, ValueError):
                continue
    return pids


def _assert_all_over(cluster: Cluster, ids: list[str]) -> None:
    def all_terminal() -> bool:
        return all(cluster.task(task_id)["state"] in TERMINAL for task_id in ids)

    wait_for(all_terminal, 30, what="every task to reach a terminal state")
    wait_for(
        lambda: not [pid for pid in _task_pids(cluster) if alive(pid)],
        15,
        what="no task process left on the runner",
    )


def test_quick_submit_then_kill_pairs_never_5xx_and_leave_nothing(solo_cluster: Cluster) -> None:
    # Both tests share conftest's one-core `solo_cluster`: each ends with every one of its
    # tasks terminal and no task process left, so the other starts from an idle runner.
    cluster = solo_cluster
    answers: list[tuple[int, str]] = []
    ids: list[str] = []
    for _ in range(60):
        task = cluster.submit(**QUICK)
        ids.append(task["id"])
        answers.append(_kill(cluster, task["id"]))
    # Kills aimed at a task that has just ended on its runner: the host may still
    # think it runs when the runner says it does not.
    for _ in range(30):
        task = cluster.submit(**QUICK)
        ids.append(task["id"])
        wait_for(
            lambda t=task: cluster.task(t["id"])["state"] not in ("queued", "assigning"),
            15,
            what="the quick task to start",
        )
        answers.append(_kill(cluster, task["id"]))
    bad = [a for a in answers if a[0] not in (200, 409)]
    assert not bad, bad
    for status, text in answers:
        if status == 409:
            assert "already" in text, text
    _assert_all_over(cluster, ids)


def test_kills_aimed_at_the_assigning_window_leave_nothing_running(solo_cluster: Cluster) -> None:
    """A task waits behind a holder on the one core; killing the holder places it at once
    (assigning), and it is killed in that moment, while its launch is on the way."""
    cluster = solo_cluster
    ids: list[str] = []
    answers: list[tuple[int, str]] = []
    holder = cluster.submit(**HOLDER)
    ids.append(holder["id"])
    cluster.wait_task(holder["id"], "running")
    for _ in range(25):
        target = cluster.submit(command=["sleep", "60"], cores=1)
        ids.append(target["id"])
        answers.append(_kill(cluster, holder["id"]))
        answers.append(_kill(cluster, target["id"]))
        holder = cluster.submit(**HOLDER)
        ids.append(holder["id"])
        wait_for(
            lambda h=holder: cluster.task(h["id"])["state"] == "running",
            15,
            what="the next holder to run (the killed task freed the core)",
        )
    answers.append(_kill(cluster, holder["id"]))
    bad = [a for a in answers if a[0] not in (200, 409)]
    assert not bad, bad
    _assert_all_over(cluster, ids)
    states = {cluster.task(task_id)["state"] for task_id in ids}
    assert states <= {"killed", "completed", "failed"}, states
