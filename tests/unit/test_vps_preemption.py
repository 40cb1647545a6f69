"""Preemptible VPSes in the preemption choice (issue #20): a preemptible container VPS is
a candidate like a preemptible task, a non-preemptible one (or a VM, or one being
stopped) never; displacing one asks for a snapshot, not a signal, and its requeue runs
it from that snapshot on the node that holds it."""

from __future__ import annotations

from typing import Any

from river_runner.spec import parse_request
from river_server import db, preemption
from river_server.scheduler import NodeView


def node(name: str, cpus: int = 2) -> NodeView:
    return NodeView(name, list(range(cpus)), 0, [], [], True)


def vps_task(task_id: int, preemptible: bool, on: str = "a", **record: Any) -> db.Task:
    spec: dict[str, Any] = {
        "vps": {"id": str(1000 + task_id), "snapshots": [], **record},
        "image": "busybox",
    }
    if preemptible:
        spec["preemptible"] = True
    return db.Task(
        id=task_id,
        kind="vps",
        owner="vic",
        state="running",
        spec=spec,
        request={"cores": 2, "memory": 0, "gpus": 0, "gpu_indices": [], "target": None},
        node=on,
        cpus=[0, 1],
        memory=0,
        gpus=[],
        priority=0,
        started_at=1.0,
        job_id=None,
    )


def waiter(task_id: int = 99, priority: int = 5) -> db.Task:
    return db.Task(id=task_id, owner="urgent", state="queued", spec={}, priority=priority)


def choose(active: list[db.Task], nodes: str = "a") -> list[tuple[str, list[int], str]]:
    """(node, victim ids, why) of each displacement a 2-core priority-5 waiter gets."""
    moves = preemption.plan(
        [(waiter(), parse_request({"cores": 2}))], active, [node(n) for n in nodes], [], {}
    )
    return [(m.node, [v.id for v in m.victims], m.why) for m in moves]


def test_a_preemptible_vps_is_a_victim_a_non_preemptible_one_never() -> None:
    # Two full nodes, each held by one VPS: only the preemptible one is displaced.
    both = [vps_task(1, preemptible=False, on="a"), vps_task(2, preemptible=True, on="b")]
    assert choose(both, nodes="ab") == [("b", [2], "priority 5 over 0")]
    assert choose([vps_task(1, preemptible=False)]) == []


def test_a_vm_or_a_vps_being_stopped_or_displaced_is_not_offered() -> None:
    displaced = vps_task(4, True, on="d")
    displaced.spec = {**displaced.spec, "preempting": {"by": "7"}}
    active = [
        vps_task(1, True, on="a", vm={"disk": 2**31}),
        vps_task(2, True, on="b", stopped=True),
        vps_task(3, True, on="c"),
        displaced,
    ]
    assert choose(active, nodes="abcd") == [("c", [3], "priority 5 over 0")]


def test_displacing_a_vps_asks_for_a_snapshot_a_task_for_a_signal() -> None:
    assert preemption.checkpoint(vps_task(1, True)) == preemption.SNAPSHOT
    task = db.Task(id=2, state="running", spec={"preemptible": True}, node="a")
    assert preemption.checkpoint(task) == preemption.SIGNAL


def test_a_displaced_vps_is_requeued_to_run_from_its_snapshot_on_its_node() -> None:
    vps = vps_task(
        1,
        True,
        snapshots=["river-vps/1001:1", "river-vps/1001:2"],
        snapshot_node="a",
        apps=[{"port": 8888}],
        idle_since=5.0,
    )
    vps.spec = {**vps.spec, "preempting": {"by": "99", "owner": "urgent", "why": "priority"}}
    note = preemption.requeue_note(vps)
    assert note.startswith("displaced by task 99 of urgent (priority)")
    assert note.endswith("requeued to restart from snapshot river-vps/1001:2")
    fields = preemption.requeue_fields(vps, last_seq=4)
    assert "preempting" not in fields["spec"]
    assert fields["spec"]["image"] == "river-vps/1001:2"
    assert fields["request"]["target"] == "a"  # the snapshot lives on that node
    record = fields["spec"]["vps"]
    assert record["id"] == "1001" and record["apps"] == [] and record["idle_since"] is None
    assert (fields["node"], fields["cpus"], fields["requeues"]) == (None, [], 1)
