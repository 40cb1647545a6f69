"""A host restart in the middle of a preemption loses nothing (river_server/preemption.py).

The victim ignores SIGTERM and the first host gives it a 600 s grace, so its runner ends
it only if someone signals it again: the restart lands between the mark and the runner's
report every time, not by luck. The restarted host has a 1 s grace; when the runner
registers with it, the host drives the checkpoint again, and the victim is requeued, never
left marked and running for ever (its waiter waiting, or no other waiter able to take it).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, running_cluster, wait_for

FIRST_GRACE, RESTARTED_GRACE = 600, 1
VICTIM = "trap 'echo got TERM' TERM; echo working; while true; do sleep 0.1; done"


def _host_args(grace: float) -> list[str]:
    return [f"--RiverHost.preempt_grace={grace}", "--RiverHost.fair_share=False"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("preemption-restart")
    with running_cluster(
        root, ("solo", "--cpus", "0,1"), extra_host_args=_host_args(FIRST_GRACE)
    ) as c:
        yield c


def _lines(cluster: Cluster, task_id: str) -> list[str]:
    return [line["text"] for line in cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]]


def _transitions(cluster: Cluster, task_id: str) -> str:
    """The victim's recorded transition details, read from the host's database."""
    from sqlalchemy import select

    from river_server import db

    engine = db.make_engine(cluster.db_url)
    try:
        with db.make_sessionmaker(engine)() as session:
            rows = session.scalars(
                select(db.TaskTransition).where(db.TaskTransition.task_id == int(task_id))
            )
            return " | ".join(row.detail or "" for row in rows)
    finally:
        engine.dispose()


def _marked_victim(cluster: Cluster) -> tuple[dict, dict]:
    """A running preemptible victim that ignores SIGTERM, and a waiter that has marked it
    and signalled it once (under the first host's 600 s grace)."""
    victim = cluster.submit(command=["sh", "-c", VICTIM], cores=2, preemptible=True)
    cluster.wait_task(victim["id"], "running", 30)
    wait_for(lambda: "working" in _lines(cluster, victim["id"]), 20, what="victim working")
    waiter = cluster.submit(command=["sh", "-c", "echo urgent done"], cores=2, priority=5)
    wait_for(
        lambda: "displacing" in (cluster.task(waiter["id"]).get("wait_reason") or ""),
        20,
        what="the waiter marking the victim",
    )
    wait_for(lambda: "got TERM" in _lines(cluster, victim["id"]), 20, what="first SIGTERM")
    return victim, waiter


def _restart_host(cluster: Cluster, grace: float) -> None:
    cluster.stop_host(signal.SIGKILL)
    cluster.extra_host_args = _host_args(grace)
    cluster.start_host()
    cluster.wait_node("solo", "online", timeout=20)


def _first_host(cluster: Cluster) -> None:
    """A host with the long grace (the test before may have left the short one)."""
    if cluster.extra_host_args != _host_args(FIRST_GRACE):
        _restart_host(cluster, FIRST_GRACE)


def _end(cluster: Cluster, *task_ids: str) -> None:
    for task_id in task_ids:
        if cluster.task(task_id)["state"] in {"queued", "assigning", "running", "paused"}:
            cluster.ok("POST", f"/river/api/tasks/{task_id}/kill")
        cluster.wait_task(task_id, {"completed", "failed", "killed", "lost"}, 30)


def test_restarted_host_drives_the_checkpoint_again_for_a_waiting_waiter(
    cluster: Cluster,
) -> None:
    _first_host(cluster)
    victim, waiter = _marked_victim(cluster)
    try:
        _restart_host(cluster, RESTARTED_GRACE)
        # The restarted host signals the victim again, with its own grace, and the runner
        # kills it after that grace: the waiter gets the cores and runs.
        done = cluster.wait_task(waiter["id"], {"completed", "failed", "killed"}, 40)
        assert done["state"] == "completed", done
        assert "urgent done" in _lines(cluster, waiter["id"])
        again = wait_for(
            lambda: (t := cluster.task(victim["id"]))["requeues"] == 1 and t, 30, what="requeue"
        )
        assert again["state"] in {"queued", "assigning", "running"}, again
        lines = _lines(cluster, victim["id"])
        marker = next(line for line in lines if line.startswith("[river] displaced by task"))
        assert waiter["id"] in marker, marker
        # One SIGTERM from each host, both before the requeue.
        assert lines[: lines.index(marker)].count("got TERM") == 2, lines
    finally:
        _end(cluster, waiter["id"], victim["id"])


def test_restarted_host_requeues_a_victim_whose_waiter_is_gone(cluster: Cluster) -> None:
    """The waiter was killed before the restart: the victim is still checkpointed and
    requeued (as when a waiter is killed during the grace without a restart), so it is a
    normal task again, not marked for ever; it runs again at once, nothing waiting."""
    _first_host(cluster)
    victim, waiter = _marked_victim(cluster)
    try:
        cluster.ok("POST", f"/river/api/tasks/{waiter['id']}/kill")
        cluster.wait_task(waiter["id"], "killed", 20)
        _restart_host(cluster, RESTARTED_GRACE)
        again = wait_for(
            lambda: (t := cluster.task(victim["id"]))["requeues"] == 1 and t, 30, what="requeue"
        )
        assert again["state"] in {"queued", "assigning", "running"}, again
        details = _transitions(cluster, victim["id"])
        assert "checkpoint started again after a host restart" in details, details
        assert f"after {RESTARTED_GRACE}s" in details, details
        # Its second run starts on the free node and is an ordinary running task.
        cluster.wait_task(victim["id"], "running", 30)
        wait_for(lambda: _lines(cluster, victim["id"]).count("working") == 2, 20, what="second run")
    finally:
        _end(cluster, victim["id"])
