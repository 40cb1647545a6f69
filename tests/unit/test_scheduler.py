"""Placement engine: FIFO, backfill, best fit, anti-starvation and the reasons tasks wait."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from river_runner.spec import ResourceRequest, parse_request
from river_server.scheduler import (
    Held,
    NodeView,
    QueuedTask,
    SchedulePlan,
    Scheduler,
    infeasible_reason,
)

GIB = 1024**3
NOW = 1_700_000_000.0


def node(
    name: str,
    cpus: int = 4,
    memory: int = 0,
    gpus: int = 0,
    numa: int = 0,
    online: bool = True,
) -> NodeView:
    """A node with CPUs 0..cpus-1 split evenly over `numa` NUMA nodes (0 = none reported)."""
    ids = list(range(cpus))
    layout = [ids[i * cpus // numa : (i + 1) * cpus // numa] for i in range(numa)] if numa else []
    return NodeView(name, ids, memory, list(range(gpus)), layout, online)


def req(**body: object) -> ResourceRequest:
    return parse_request(body)


def tasks(*requests: ResourceRequest, age: float = 10.0) -> list[QueuedTask]:
    """Queued tasks with ids 1.., oldest first, the first submitted `age` seconds ago."""
    return [QueuedTask(i + 1, r, NOW - age + i * 0.001) for i, r in enumerate(requests)]


def plan(
    queued: list[QueuedTask],
    nodes: list[NodeView],
    held: list[Held] | None = None,
    window: float = 300.0,
) -> SchedulePlan:
    return Scheduler(backfill_window=window).plan(queued, nodes, held or [], NOW)


# ---- FIFO and queueing ---------------------------------------------------------------


def test_fifo_order_earlier_task_wins() -> None:
    result = plan(tasks(req(cores=2), req(cores=2)), [node("a", cpus=2)])
    assert list(result.placements) == [1]
    assert result.placements[1].cpus == [0, 1]
    assert "2 free cores" in result.waiting[2]


def test_queueing_when_full() -> None:
    result = plan(tasks(*[req(cores=1)] * 6), [node("a", cpus=2)])
    assert sorted(result.placements) == [1, 2]
    assert sorted(result.waiting) == [3, 4, 5, 6]
    for reason in result.waiting.values():
        assert "core" in reason
    assert result.waiting[3] == "waiting for 1 free core (most free on an online node: 0)"
    cpus = [c for p in result.placements.values() for c in p.cpus]
    assert sorted(cpus) == [0, 1]


def test_every_queued_task_is_placed_or_explained() -> None:
    queued = tasks(req(cores=3), req(cores=1), req(cores=1), req(gpus=1))
    result = plan(queued, [node("a", cpus=4)])
    assert set(result.placements) | set(result.waiting) == {1, 2, 3, 4}
    assert not set(result.placements) & set(result.waiting)


def test_zero_cores_means_no_pinning_and_fits_a_full_node() -> None:
    result = plan(tasks(req(cores=2), req(cores=0)), [node("a", cpus=2)])
    assert result.placements[2].cpus == []
    assert result.placements[2].node == "a"


# ---- held resources, memory and GPUs -------------------------------------------------


def test_held_resources_are_respected() -> None:
    held = [Held("a", cpus=[0, 1], memory=6 * GIB, gpus=[0])]
    queued = tasks(req(cores=2, gpus=1, memory="2G"), req(cores=1), req(memory="4G", cores=0))
    result = plan(queued, [node("a", cpus=4, memory=8 * GIB, gpus=2)], held)
    first = result.placements[1]
    assert first.cpus == [2, 3]
    assert first.gpus == [1]
    assert first.memory == 2 * GIB
    assert "core" in result.waiting[2]
    assert "memory" in result.waiting[3]


def test_held_on_unknown_node_is_ignored() -> None:
    result = plan(tasks(req(cores=2)), [node("a", cpus=2)], [Held("gone", [0, 1], 0, [])])
    assert result.placements[1].cpus == [0, 1]


def test_unknown_node_memory_never_limits() -> None:
    result = plan(tasks(req(memory="1T", cores=1)), [node("a", memory=0)])
    assert result.placements[1].memory == 1024**4


def test_memory_shortage_is_explained() -> None:
    queued = tasks(req(memory="6G"), req(memory="6G"))
    result = plan(queued, [node("a", memory=8 * GIB)])
    assert list(result.placements) == [1]
    assert "6.0G free memory" in result.waiting[2]


def test_explicit_gpu_index_conflict() -> None:
    queued = tasks(req(target="a::0"), req(target="a::0"))
    result = plan(queued, [node("a", gpus=1)])
    assert result.placements[1].gpus == [0]
    assert list(result.waiting) == [2]
    assert "GPU 0" in result.waiting[2]


def test_explicit_gpu_indices_are_granted_exactly() -> None:
    result = plan(tasks(req(target="a::1,3")), [node("a", gpus=4)])
    assert result.placements[1].gpus == [1, 3]


def test_gpu_count_takes_lowest_free_indices() -> None:
    held = [Held("a", [], 0, [0, 2])]
    result = plan(tasks(req(gpus=2), req(gpus=1)), [node("a", gpus=4)], held)
    assert result.placements[1].gpus == [1, 3]
    assert "1 free GPU" in result.waiting[2]


# ---- NUMA ------------------------------------------------------------------------------


def test_numa_target_takes_cpus_from_that_numa_node() -> None:
    result = plan(tasks(req(cores=2, target="a:1")), [node("a", cpus=4, numa=2)])
    assert result.placements[1].cpus == [2, 3]
    assert result.placements[1].numa == 1


def test_numa_target_waits_when_its_numa_node_is_full() -> None:
    held = [Held("a", [2], 0, [])]
    result = plan(tasks(req(cores=2, target="a:1")), [node("a", cpus=4, numa=2)], held)
    assert result.placements == {}
    assert "NUMA node 1" in result.waiting[1]
    assert "free there: 1" in result.waiting[1]


def test_packs_into_the_tightest_single_numa_node() -> None:
    held = [Held("a", [0], 0, [])]  # NUMA 0 has 1 free, NUMA 1 has 2 free
    nodes = [node("a", cpus=4, numa=2)]
    one = plan(tasks(req(cores=1)), nodes, held).placements[1]
    assert (one.cpus, one.numa) == ([1], 0)
    two = plan(tasks(req(cores=2)), nodes, held).placements[1]
    assert (two.cpus, two.numa) == ([2, 3], 1)


def test_spreads_over_numa_nodes_when_none_holds_the_request() -> None:
    held = [Held("a", [0], 0, [])]
    placement = plan(tasks(req(cores=3)), [node("a", cpus=4, numa=2)], held).placements[1]
    assert placement.cpus == [1, 2, 3]
    assert placement.numa is None


def test_no_numa_layout_is_one_numa_node() -> None:
    placement = plan(tasks(req(cores=2, target="a:0")), [node("a", cpus=4)]).placements[1]
    assert placement.numa == 0
    assert placement.cpus == [0, 1]


# ---- best fit ------------------------------------------------------------------------------


def test_best_fit_leaves_big_nodes_free() -> None:
    nodes = [node("big", cpus=16), node("small", cpus=2)]
    result = plan(tasks(req(cores=2), req(cores=16)), nodes)
    assert result.placements[1].node == "small"
    assert result.placements[2].node == "big"


def test_best_fit_counts_held_cores() -> None:
    nodes = [node("a", cpus=8), node("b", cpus=8)]
    held = [Held("b", [0, 1, 2, 3, 4], 0, [])]
    assert plan(tasks(req(cores=2)), nodes, held).placements[1].node == "b"


def test_gpu_less_tasks_prefer_nodes_without_free_gpus() -> None:
    nodes = [node("a-gpu", cpus=4, gpus=2), node("b-cpu", cpus=4)]
    result = plan(tasks(req(cores=1), req(gpus=2)), nodes)
    assert result.placements[1].node == "b-cpu"
    assert result.placements[2].node == "a-gpu"


def test_ties_break_by_name() -> None:
    nodes = [node("c"), node("a"), node("b")]
    assert plan(tasks(req(cores=1)), nodes).placements[1].node == "a"


def test_target_node_restricts_placement() -> None:
    nodes = [node("a", cpus=2), node("b", cpus=8)]
    assert plan(tasks(req(cores=1, target="b")), nodes).placements[1].node == "b"


# ---- backfill and anti-starvation ----------------------------------------------------------


def test_backfill_before_the_window() -> None:
    held = [Held("a", [0], 0, [])]
    result = plan(tasks(req(cores=2), req(cores=1), age=10), [node("a", cpus=2)], held)
    assert list(result.placements) == [2]
    assert "2 free cores" in result.waiting[1]


def test_backfill_stops_after_the_window() -> None:
    held = [Held("a", [0], 0, [])]
    result = plan(tasks(req(cores=2), req(cores=1), age=1000), [node("a", cpus=2)], held)
    assert result.placements == {}
    assert result.waiting[2].startswith("held back behind task 1 (waiting since ")
    assert "later tasks are held back" in result.waiting[1]


def test_starving_task_only_reserves_nodes_it_could_use() -> None:
    nodes = [node("a", cpus=2), node("b", cpus=2)]
    held = [Held("a", [0], 0, [])]
    queued = tasks(req(cores=2, target="a"), req(cores=1), req(cores=1), req(cores=1), age=1000)
    result = plan(queued, nodes, held)
    assert sorted(result.placements) == [2, 3]
    assert {p.node for p in result.placements.values()} == {"b"}
    assert result.waiting[4].startswith("held back behind task 1")


def test_starving_task_that_can_never_fit_blocks_nothing() -> None:
    nodes = [node("a", cpus=2)]
    result = plan(tasks(req(cores=8), req(cores=1), age=1000), nodes)
    assert list(result.placements) == [2]
    assert "8 cores" in result.waiting[1]


def test_task_behind_a_starving_one_that_would_not_fit_anyway_gets_its_own_reason() -> None:
    held = [Held("a", [0], 0, [])]
    result = plan(tasks(req(cores=2), req(cores=1, gpus=1), age=1000), [node("a", cpus=2)], held)
    assert "GPU" in result.waiting[2]


# ---- offline nodes ---------------------------------------------------------------------------


def test_offline_nodes_are_skipped() -> None:
    nodes = [node("a", cpus=8, online=False), node("b", cpus=2)]
    result = plan(tasks(req(cores=1), req(cores=4)), nodes)
    assert result.placements[1].node == "b"
    assert "waiting for" in result.waiting[2]


def test_no_online_nodes() -> None:
    result = plan(tasks(req(cores=1)), [node("a", online=False)])
    assert "no online nodes" in result.waiting[1]
    assert "no online nodes" in plan(tasks(req(cores=1)), []).waiting[1]


def test_offline_target_node() -> None:
    nodes = [node("a", online=False), node("b")]
    result = plan(tasks(req(target="a")), nodes)
    assert result.waiting[1] == "node 'a' is offline"


def test_only_offline_nodes_are_big_enough() -> None:
    nodes = [node("big", cpus=16, online=False), node("small", cpus=2)]
    reason = plan(tasks(req(cores=8)), nodes).waiting[1]
    assert "big" in reason and "come online" in reason


# ---- infeasible requests -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"target": "x"}, "unknown node 'x'; registered nodes: a, g"),
        ({"cores": 64}, "no registered node has 64 cores (largest: 8)"),
        ({"memory": "1T"}, "memory"),
        ({"gpus": 5}, "no registered node has 5 GPUs (most: 2)"),
        ({"target": "g::3"}, "no GPU 3"),
        ({"target": "a::0"}, "node 'a' has no GPU 0 (its GPUs: none)"),
        ({"target": "g:2"}, "no NUMA node 2"),
        ({"target": "g:1", "cores": 5}, "NUMA node 1 of node 'g' has only 4 cores"),
        ({"target": "a", "cores": 5}, "node 'a' has only 4 cores"),
        ({"target": "g", "gpus": 3}, "node 'g' has only 2 GPUs"),
        ({"cores": 8, "gpus": 1, "memory": "10G"}, "together"),
    ],
)
def test_infeasible_reasons(body: dict[str, object], fragment: str) -> None:
    nodes = [
        node("a", cpus=4, memory=64 * GIB),
        node("g", cpus=8, memory=8 * GIB, gpus=2, numa=2, online=False),
    ]
    reason = infeasible_reason(req(**body), nodes)
    assert reason is not None and fragment in reason


@pytest.mark.parametrize(
    "body",
    [{}, {"cores": 8}, {"gpus": 2}, {"target": "g:1::1", "cores": 4}, {"memory": "64G"}],
)
def test_feasible_requests_have_no_reason(body: dict[str, object]) -> None:
    nodes = [
        node("a", cpus=4, memory=64 * GIB),
        node("g", cpus=8, memory=8 * GIB, gpus=2, numa=2, online=False),
    ]
    assert infeasible_reason(req(**body), nodes) is None


def test_no_nodes_means_nothing_is_infeasible() -> None:
    assert infeasible_reason(req(cores=1000, target="x"), []) is None


def test_unknown_memory_never_makes_a_request_infeasible() -> None:
    assert infeasible_reason(req(memory="100T"), [node("a", memory=0)]) is None


# ---- failure cache ---------------------------------------------------------------------


def test_blocked_shapes_do_not_block_smaller_requests() -> None:
    queued = tasks(req(cores=4), *[req(cores=3)] * 5, req(cores=1), req(cores=3, gpus=1))
    held = [Held("a", [0, 1], 0, [])]
    result = plan(queued, [node("a", cpus=4, gpus=1)], held)
    assert list(result.placements) == [7]
    assert len(result.waiting) == 7
    assert "3 free cores (most free on an online node: 1)" in result.waiting[2]


# ---- randomized invariants -----------------------------------------------------------------


def _random_request(rng: random.Random, names: list[str]) -> ResourceRequest:
    body: dict[str, object] = {
        "cores": rng.choice([0, 1, 1, 2, 4, 8]),
        "memory": rng.choice([0, 0, GIB, 4 * GIB, 16 * GIB]),
    }
    roll = rng.random()
    if roll < 0.15:
        body["target"] = f"{rng.choice(names)}::{rng.randrange(4)}"
    elif roll < 0.3:
        body["target"] = f"{rng.choice(names)}:{rng.randrange(2)}"
        body["gpus"] = rng.choice([0, 1])
    elif roll < 0.4:
        body["target"] = rng.choice(names)
    else:
        body["gpus"] = rng.choice([0, 0, 0, 1, 2])
    return parse_request(body)


@pytest.mark.parametrize("seed", range(25))
def test_random_plans_never_double_book(seed: int) -> None:
    rng = random.Random(seed)
    nodes = [
        node(f"n{i}", cpus=rng.choice([4, 8, 16]), memory=rng.choice([0, 32 * GIB]), gpus=4, numa=2)
        for i in range(rng.randint(1, 6))
    ]
    for view in nodes:
        view.online = rng.random() > 0.2
    names = [v.name for v in nodes]
    held: list[Held] = []
    for view in nodes:
        cpus = rng.sample(view.cpus, rng.randint(0, len(view.cpus) // 2))
        gpus = rng.sample(view.gpus, rng.randint(0, 2))
        held.append(Held(view.name, cpus, rng.choice([0, GIB]), gpus))
    queued = [
        QueuedTask(i, _random_request(rng, names), NOW - rng.uniform(0, 600))
        for i in range(rng.randint(1, 80))
    ]
    queued.sort(key=lambda t: t.submitted_at)
    result = plan(queued, nodes, held)

    assert set(result.placements) | set(result.waiting) == {t.id for t in queued}
    assert not set(result.placements) & set(result.waiting)
    by_name = {v.name: v for v in nodes}
    requests = {t.id: t.request for t in queued}
    cpus_taken: dict[str, list[int]] = defaultdict(list)
    gpus_taken: dict[str, list[int]] = defaultdict(list)
    memory_taken: dict[str, int] = defaultdict(int)
    for h in held:
        cpus_taken[h.node] += h.cpus
        gpus_taken[h.node] += h.gpus
        memory_taken[h.node] += h.memory
    for task_id, p in result.placements.items():
        r = requests[task_id]
        view = by_name[p.node]
        assert view.online
        assert len(p.cpus) == r.cores
        assert len(p.gpus) == r.gpu_count
        assert p.memory == r.memory
        assert set(p.cpus) <= set(view.cpus)
        assert set(p.gpus) <= set(view.gpus)
        if r.gpu_indices:
            assert p.gpus == list(r.gpu_indices)
        if r.target is not None:
            assert p.node == r.target.node
            if r.target.numa is not None:
                assert set(p.cpus) <= set(view.numa[r.target.numa])
        cpus_taken[p.node] += p.cpus
        gpus_taken[p.node] += p.gpus
        memory_taken[p.node] += p.memory
    for name, cpus in cpus_taken.items():
        assert len(cpus) == len(set(cpus)), f"CPU handed out twice on {name}"
    for name, gpus in gpus_taken.items():
        assert len(gpus) == len(set(gpus)), f"GPU handed out twice on {name}"
    for name, used in memory_taken.items():
        total = by_name[name].memory
        if total:
            held_memory = sum(h.memory for h in held if h.node == name)
            assert used <= max(total, held_memory)
    for reason in result.waiting.values():
        assert reason


@pytest.mark.parametrize("seed", range(15))
def test_random_plans_match_a_naive_best_fit(seed: int) -> None:
    """The bucket index and failure cache must pick what a plain scan of every node picks."""
    rng = random.Random(1000 + seed)
    nodes = [
        node(
            f"n{i}",
            cpus=rng.choice([2, 4, 8]),
            memory=rng.choice([0, 8 * GIB]),
            gpus=rng.choice([0, 2, 4]),
            numa=2,
        )
        for i in range(rng.randint(2, 8))
    ]
    nodes[-1].online = False
    names = [v.name for v in nodes]
    queued = [QueuedTask(i, _random_request(rng, names), NOW) for i in range(120)]
    result = plan(queued, nodes, window=float("inf"))

    free_cpus = {v.name: set(v.cpus) for v in nodes}
    free_gpus = {v.name: set(v.gpus) for v in nodes}
    free_memory = {v.name: v.memory or float("inf") for v in nodes}

    def fits(view: NodeView, r: ResourceRequest) -> bool:
        cpus = free_cpus[view.name]
        if r.target is not None and r.target.numa is not None:
            if r.target.numa >= len(view.numa):
                return False
            cpus = cpus & set(view.numa[r.target.numa])
        if r.gpu_indices and not set(r.gpu_indices) <= free_gpus[view.name]:
            return False
        return (
            len(cpus) >= r.cores
            and free_memory[view.name] >= r.memory
            and len(free_gpus[view.name]) >= r.gpu_count
        )

    for task in queued:
        r = task.request
        candidates = [
            v
            for v in nodes
            if v.online and (r.target is None or r.target.node == v.name) and fits(v, r)
        ]
        if not candidates:
            assert task.id in result.waiting
            continue
        best = min(
            candidates,
            key=lambda v: (len(free_cpus[v.name]), len(free_gpus[v.name]), v.name),
        )
        p = result.placements[task.id]
        assert p.node == best.name
        free_cpus[p.node] -= set(p.cpus)
        free_gpus[p.node] -= set(p.gpus)
        free_memory[p.node] -= p.memory
