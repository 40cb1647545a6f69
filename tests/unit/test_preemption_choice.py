"""Preemption choice and priority ordering (issue #20): which victims, never a
non-preemptible one, the minimum set; priority first, then fair share, then FIFO."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from river_runner.spec import parse_request
from river_server.dispatcher import priority_order
from river_server.priorities import Priorities, PriorityRefused
from river_server.scheduler import Held, NodeView, Running, choose_victims, may_displace


def node(name: str, cpus: int = 4, gpus: int = 0, online: bool = True) -> NodeView:
    return NodeView(name, list(range(cpus)), 0, list(range(gpus)), [], online)


def run(task_id: int, node_name: str, cpus: list[int], priority: int = 0, gpus=(), started=0.0):
    return Running(
        node_name, cpus, 0, list(gpus), id=task_id, priority=priority, started_at=started
    )


def test_one_victim_frees_enough_on_a_full_node() -> None:
    nodes = [node("a", 4)]
    victims = [run(1, "a", [0, 1]), run(2, "a", [2, 3])]
    choice = choose_victims(parse_request({"cores": 2}), nodes, [], victims)
    assert choice is not None and choice.node == "a"
    assert len(choice.victims) == 1  # never more than needed


def test_non_preemptible_work_is_never_a_victim() -> None:
    # The node is full with one preemptible and one non-preemptible 2-core task: a
    # 4-core request cannot be met without the non-preemptible one, so no preemption.
    nodes = [node("a", 4)]
    held = [Held("a", [0, 1], 0, [])]  # not preemptible: passed as held, never a candidate
    choice = choose_victims(parse_request({"cores": 4}), nodes, held, [run(2, "a", [2, 3])])
    assert choice is None


def test_fewest_victims_node_wins_and_the_minimum_set_is_kept() -> None:
    # Node a would need two 1-core victims, node b one 2-core victim: b is chosen.
    nodes = [node("a", 2), node("b", 2)]
    cands = [run(1, "a", [0]), run(2, "a", [1]), run(3, "b", [0, 1])]
    choice = choose_victims(parse_request({"cores": 2}), nodes, [], cands)
    assert choice is not None
    assert (choice.node, choice.victims) == ("b", [3])


def test_lowest_priority_victim_first_and_extra_victims_spared() -> None:
    # Four 1-core tasks on a 4-core node; 2 cores wanted: the two lowest-priority go.
    nodes = [node("a", 4)]
    cands = [run(1, "a", [0], 5), run(2, "a", [1], -1), run(3, "a", [2], 0), run(4, "a", [3], 9)]
    choice = choose_victims(parse_request({"cores": 2}), nodes, [], cands)
    assert choice is not None and choice.victims == [2, 3]


def test_a_larger_victim_taken_first_makes_smaller_ones_spared() -> None:
    # Same priority: the 3-core task alone frees enough; the 1-core one is spared.
    nodes = [node("a", 4)]
    cands = [run(1, "a", [0]), run(2, "a", [1, 2, 3])]
    choice = choose_victims(parse_request({"cores": 3}), nodes, [], cands)
    assert choice is not None and choice.victims == [2]


def test_gpu_request_displaces_the_gpu_holder_not_the_cpu_one() -> None:
    nodes = [node("g", 4, gpus=1)]
    cands = [run(1, "g", [0, 1]), run(2, "g", [2], gpus=[0])]
    choice = choose_victims(parse_request({"cores": 1, "gpus": 1}), nodes, [], cands)
    assert choice is not None and choice.victims == [2]


def test_offline_node_and_target_elsewhere_are_skipped() -> None:
    nodes = [node("a", 2, online=False), node("b", 2)]
    cands = [run(1, "a", [0, 1]), run(2, "b", [0, 1])]
    assert choose_victims(parse_request({"cores": 2, "target": "a"}), nodes, [], cands) is None
    choice = choose_victims(parse_request({"cores": 2}), nodes, [], cands)
    assert choice is not None and choice.victims == [2]


def test_who_may_displace_whom() -> None:
    assert may_displace(5, 100.0, 0, 0.0)  # higher priority always
    assert not may_displace(0, 0.0, 5, 1000.0)  # never a higher-priority task
    assert may_displace(0, 10.0, 0, 100.0)  # same priority, under half the usage
    assert not may_displace(0, 60.0, 0, 100.0)  # same priority, not under-share enough
    assert not may_displace(0, 0.0, 0, 0.0)  # nobody has usage: nobody is over-share


def test_priority_first_then_fair_share_then_fifo() -> None:
    tasks = [
        SimpleNamespace(id=1, owner="heavy", priority=0),
        SimpleNamespace(id=2, owner="light", priority=0),
        SimpleNamespace(id=3, owner="heavy", priority=5),
        SimpleNamespace(id=4, owner="heavy", priority=0),
        SimpleNamespace(id=5, owner="light", priority=5),
    ]
    charges = {"heavy": 100.0, "light": 1.0}
    ordered = priority_order(tasks, charges)
    assert [t.id for t in ordered] == [5, 3, 2, 1, 4]


def test_priority_bounded_by_role() -> None:
    limits = Priorities({"user": 10, "operator": 100}).checked()
    assert limits.resolve(None, "user") == 0
    assert limits.resolve(-50, "user") == -50
    assert limits.resolve(100, "admin") == 100  # inherits the operator's maximum
    with pytest.raises(PriorityRefused, match="at most 10"):
        limits.resolve(11, "user")
