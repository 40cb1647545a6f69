"""Gang placement: all members on distinct nodes or none, why a gang waits, and the
backfill window rule extended to gangs (river_server/scheduler.py)."""

from __future__ import annotations

from river_server.scheduler import Held, QueuedTask, gang_infeasible_reason
from tests.unit.test_scheduler import NOW, node, plan, req


def gang(job_id: int, size: int, age: float = 10.0, **body: object) -> QueuedTask:
    """A job whose members are ids job_id+1 .. job_id+size (rank order)."""
    members = tuple(job_id + 1 + rank for rank in range(size))
    return QueuedTask(job_id, req(**body), NOW - age, members=members)


def test_gang_places_one_member_per_distinct_node() -> None:
    result = plan([gang(10, 3, cores=2, gpus=1)], [node(n, cpus=4, gpus=2) for n in "abc"])
    assert set(result.placements) == {11, 12, 13}
    assert sorted(p.node for p in result.placements.values()) == ["a", "b", "c"]
    assert all(len(p.cpus) == 2 and len(p.gpus) == 1 for p in result.placements.values())
    assert result.waiting == {}


def test_gang_that_does_not_fit_takes_nothing_and_says_how_many_nodes_fit() -> None:
    nodes = [node("a", gpus=4), node("b", gpus=4), node("c", gpus=4)]
    held = [Held("c", [], 0, [0])]  # one GPU of c is busy
    result = plan([gang(10, 3, cores=1, gpus=4)], nodes, held)
    assert result.placements == {}
    reason = result.waiting[11]
    assert reason.startswith("2 of 3 nodes with 1 core and 4 GPUs free")
    assert result.waiting[12] == result.waiting[13] == reason


def test_gang_members_never_share_a_node() -> None:
    result = plan([gang(10, 2, cores=1)], [node("big", cpus=64)])
    assert result.placements == {}
    assert "only 1 of 2 nodes could ever hold a member" in result.waiting[11]


def test_smaller_tasks_backfill_around_a_young_gang() -> None:
    nodes = [node("a", cpus=4), node("b", cpus=4)]
    held = [Held("b", [0, 1, 2], 0, [])]
    small = QueuedTask(20, req(cores=2), NOW - 5)
    result = plan([gang(10, 2, cores=4), small], nodes, held)
    assert 11 not in result.placements
    assert result.placements[20].node == "a"


def test_starving_gang_holds_back_smaller_tasks() -> None:
    nodes = [node("a", cpus=4), node("b", cpus=4)]
    held = [Held("b", [0, 1, 2], 0, [])]
    small = QueuedTask(20, req(cores=2), NOW - 5)
    result = plan([gang(10, 2, age=400, cores=4), small], nodes, held, window=300)
    assert result.placements == {}
    assert "later tasks are held back so it can start" in result.waiting[11]
    assert "held back behind task 10" in result.waiting[20]


def test_gang_starts_whole_once_capacity_frees() -> None:
    nodes = [node("a", cpus=4), node("b", cpus=4)]
    waiting = plan([gang(10, 2, age=400, cores=4)], nodes, [Held("b", [0], 0, [])])
    assert waiting.placements == {}
    freed = plan([gang(10, 2, age=400, cores=4)], nodes, [])
    assert {p.node for p in freed.placements.values()} == {"a", "b"}


def test_gang_infeasible_reason() -> None:
    nodes = [node("a", gpus=4), node("b", gpus=2), node("c", gpus=4)]
    assert gang_infeasible_reason(req(cores=1, gpus=4), 2, nodes) is None
    why = gang_infeasible_reason(req(cores=1, gpus=4), 3, nodes)
    assert why is not None and "2 of the 3 registered can" in why
    assert "target" in (gang_infeasible_reason(req(target="a"), 2, nodes) or "")
    assert gang_infeasible_reason(req(cores=1), 5, []) is None
