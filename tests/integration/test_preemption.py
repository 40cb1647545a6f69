"""Priorities and preemption on a real cluster (issue #20): a high-priority task displaces
a preemptible one on a full node; the victim gets SIGTERM, is requeued (never lost) and
later completes, its log holding both runs' output around a marker line."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, running_cluster, wait_for

GRACE = 3
HOST_ARGS = [f"--RiverHost.preempt_grace={GRACE}", "--RiverHost.fair_share=False"]


def _lines(cluster: Cluster, task_id: str) -> list[str]:
    return [line["text"] for line in cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]]


def _transitions(cluster: Cluster, task_id: int) -> list[str]:
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


def _checkpointing(flag: Path) -> str:
    """First run: works until SIGTERM, then checkpoints (writes `flag`) and exits. A later
    run finds the checkpoint and finishes."""
    return (
        f"if [ -e {flag} ]; then echo resumed from checkpoint; exit 0; fi; "
        f"trap 'echo checkpointing; touch {flag}; exit 1' TERM; "
        "echo first run working; while true; do sleep 0.1; done"
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host and two-core runner for both tests (each ends with its tasks ended): a
    host start per test bought nothing."""
    root = tmp_path_factory.mktemp("preemption")
    with running_cluster(root, ("solo", "--cpus", "0,1"), extra_host_args=HOST_ARGS) as c:
        yield c


def test_high_priority_displaces_a_preemptible_task_which_requeues_and_completes(
    cluster: Cluster,
) -> None:
    # The task runs as the runner's task account: its checkpoint goes where it may write.
    shared = Path(tempfile.mkdtemp(prefix="river-preempt-"))
    shared.chmod(0o1777)
    flag = shared / "checkpoint"
    try:
        _displace_and_requeue(cluster, flag)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def _displace_and_requeue(cluster: Cluster, flag: Path) -> None:
    victim = cluster.submit(command=["sh", "-c", _checkpointing(flag)], cores=2, preemptible=True)
    assert victim["preemptible"] is True and victim["priority"] == 0
    cluster.wait_task(victim["id"], "running", 30)
    wait_for(lambda: "first run working" in _lines(cluster, victim["id"]), 20)

    urgent = cluster.submit(command=["sh", "-c", "echo urgent done"], cores=2, priority=5)
    assert urgent["priority"] == 5
    done = cluster.wait_task(urgent["id"], "completed", 40)
    assert "urgent done" in _lines(cluster, urgent["id"])

    final = cluster.wait_task(victim["id"], {"completed", "failed", "killed", "lost"}, 60)
    assert final["state"] == "completed", final
    assert final["requeues"] == 1
    # The urgent task started only once the victim had stopped (no shared cores).
    assert done["started_at"] >= flag.stat().st_mtime - 0.5
    lines = _lines(cluster, victim["id"])
    marker = next(line for line in lines if line.startswith("[river] displaced by task"))
    assert urgent["id"] in marker and "priority 5 over 0" in marker, marker
    first = lines.index("first run working")
    assert lines.index("checkpointing") > first
    assert lines.index(marker) > lines.index("checkpointing")
    assert lines.index("resumed from checkpoint") > lines.index(marker)

    details = " | ".join(_transitions(cluster, int(victim["id"])))
    assert f"being displaced by task {urgent['id']}" in details, details
    assert "requeued" in details and f"after {GRACE}s" in details, details


def test_non_preemptible_work_is_not_displaced_and_priority_is_bounded(cluster: Cluster) -> None:
    # Both take the whole two-core node: the urgent one can only run by displacing.
    steady = cluster.submit(command=["sh", "-c", "echo steady; sleep 60"], cores=2)
    cluster.wait_task(steady["id"], "running", 30)
    urgent = cluster.submit(command=["true"], cores=2, priority=100)

    def reason() -> str | None:
        task = cluster.task(urgent["id"])
        why = task.get("wait_reason") or ""
        return why if why and why != "waiting for the scheduler" else None

    why = wait_for(reason, 20)
    assert "displacing" not in why, why
    assert cluster.task(steady["id"])["state"] == "running"
    cluster.ok("POST", f"/river/api/tasks/{urgent['id']}/kill")
    cluster.ok("POST", f"/river/api/tasks/{steady['id']}/kill")

    token = cluster.make_users("pia")["pia"]
    answer = cluster.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["true"], "priority": 50},
        headers={"Authorization": f"token {token}"},
    )
    assert answer.status_code == 400, answer.text
    assert "maximum for the user role, 10" in answer.json()["message"]
