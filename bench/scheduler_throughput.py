"""How fast does one scheduling pass place a big queue? Run: python bench/scheduler_throughput.py

The target is 10,000 queued tasks over 200 nodes at >= 2,000 placements/s in pure Python.
A floor is measured in the same run (round-robin assignment with no checks at all) so the
ratio shows what the policy itself costs on this machine, independent of its speed.

Each case runs twice: plain FIFO with backfill, and with fair share on (`+ fair share`):
the pass then also decays 50 users' usage and orders the queue by it, as the dispatcher
does (river_server/fairshare.py); the floor for that is >= 100,000 placements/s at 200
nodes. `--no-fair-share` prints the plain lines only.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from river_runner.spec import Placement, ResourceRequest, Target  # noqa: E402
from river_server.dispatcher import priority_order  # noqa: E402
from river_server.fairshare import Usage, charges, order  # noqa: E402
from river_server.scheduler import Held, NodeView, QueuedTask, Scheduler  # noqa: E402

GIB = 1024**3
NOW = 1_700_000_000.0
USERS = 50
HALF_LIFE = 7 * 86400.0
# Recorded usage of each user, charged at different times (so decay does real work).
USAGE = {
    f"user{u}": Usage(core_seconds=1000.0 * (u + 1), gpu_seconds=10.0 * u, at=NOW - 3600 * u)
    for u in range(USERS)
}
FAIR = {"on": True}

# (weight, cores, memory GiB, gpus): mostly small CPU jobs, some GPU and wide jobs. About
# 1.14 cores a task on average, so on an empty 200 x 64-core cluster most of them fit.
SHAPES = [
    (78.0, 1, 2, 0),
    (10.0, 0, 1, 0),
    (6.0, 2, 4, 0),
    (3.0, 4, 16, 0),
    (2.0, 1, 8, 1),
    (0.8, 8, 32, 2),
    (0.2, 16, 64, 0),
]


def make_nodes(count: int, cpus: int, gpus: int) -> list[NodeView]:
    """Identical nodes with two NUMA nodes each."""
    half = cpus // 2
    return [
        NodeView(
            name=f"node{i:03d}",
            cpus=list(range(cpus)),
            memory=512 * GIB,
            gpus=list(range(gpus)),
            numa=[list(range(half)), list(range(half, cpus))],
        )
        for i in range(count)
    ]


def make_queue(count: int, nodes: list[NodeView], rng: random.Random) -> list[QueuedTask]:
    """Mixed shapes; about 3% pinned to a node, NUMA node or explicit GPU."""
    weights = [s[0] for s in SHAPES]
    queue = []
    for i in range(count):
        _, cores, memory, gpus = rng.choices(SHAPES, weights)[0]
        target = None
        roll = rng.random()
        if roll < 0.01:
            target = Target(rng.choice(nodes).name, numa=rng.randrange(2))
        elif roll < 0.02:
            target = Target(rng.choice(nodes).name, gpus=(rng.randrange(8),))
            gpus = 0
        elif roll < 0.03:
            target = Target(rng.choice(nodes).name)
        request = ResourceRequest(cores=cores, memory=memory * GIB, gpus=gpus, target=target)
        # Submitted over the last minute: inside the backfill window.
        owner = f"user{rng.randrange(USERS)}"
        queue.append(QueuedTask(i, request, NOW - 60 + i * 60 / count, owner))
    return queue


def floor(queue: list[QueuedTask], nodes: list[NodeView]) -> float:
    """Seconds to hand out placements round-robin with no checks: the cost of the loop alone."""
    start = time.perf_counter()
    placements: dict[int, Placement] = {}
    count = len(nodes)
    for i, task in enumerate(queue):
        r = task.request
        placements[task.id] = Placement(
            node=nodes[i % count].name, cpus=list(range(r.cores)), memory=r.memory, gpus=[]
        )
    return time.perf_counter() - start


def run(label: str, queue: list[QueuedTask], nodes: list[NodeView], held: list[Held]) -> None:
    measure(label, queue, nodes, held, fair=False)
    if FAIR["on"]:
        measure(label + " + fair share", queue, nodes, held, fair=True)


def measure(
    label: str, queue: list[QueuedTask], nodes: list[NodeView], held: list[Held], fair: bool
) -> None:
    scheduler = Scheduler(backfill_window=300.0)
    best = float("inf")
    plan = None
    for _ in range(3):
        start = time.perf_counter()
        ordered = queue
        if fair:  # what the dispatcher adds to a pass: decay every user, order the queue
            ordered = order(queue, charges(USAGE, NOW, HALF_LIFE, 10.0))
        plan = scheduler.plan(ordered, nodes, held, NOW)
        best = min(best, time.perf_counter() - start)
    assert plan is not None
    assert len(plan.placements) + len(plan.waiting) == len(queue)
    base = min(floor(queue, nodes) for _ in range(3))
    placed = len(plan.placements)
    print(
        f"{label:<47} placed {placed:>6} waiting {len(plan.waiting):>6}  "
        f"{best:7.3f}s  {placed / best:>9,.0f} placements/s  "
        f"{len(queue) / best:>9,.0f} tasks/s  floor {base:.4f}s  ratio {best / base:5.1f}x"
    )


@dataclass(frozen=True)
class Waiting:
    """What the dispatcher orders: a queued row's priority and owner, and its task."""

    priority: int
    owner: str
    task: QueuedTask


def measure_priorities(
    label: str, queue: list[QueuedTask], nodes: list[NodeView], held: list[Held]
) -> None:
    """A pass with priorities set (a tenth of the queue at 1..10): the dispatcher's
    priority_order (priority, then fair share, then FIFO) before the plan."""
    rng = random.Random(7)
    rows = [Waiting(rng.randint(1, 10) if rng.random() < 0.1 else 0, t.owner, t) for t in queue]
    scheduler = Scheduler(backfill_window=300.0)
    best, plan = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        ordered = [r.task for r in priority_order(rows, charges(USAGE, NOW, HALF_LIFE, 10.0))]
        plan = scheduler.plan(ordered, nodes, held, NOW)
        best = min(best, time.perf_counter() - start)
    assert plan is not None
    placed = len(plan.placements)
    print(
        f"{label:<47} placed {placed:>6} waiting {len(plan.waiting):>6}  "
        f"{best:7.3f}s  {placed / best:>9,.0f} placements/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=64)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-fair-share", action="store_true", help="only the plain FIFO-with-backfill lines"
    )
    args = parser.parse_args()
    FAIR["on"] = not args.no_fair_share
    rng = random.Random(args.seed)
    nodes = make_nodes(args.nodes, args.cpus, args.gpus)
    queue = make_queue(args.tasks, nodes, rng)
    print(
        f"{args.tasks} queued tasks, {args.nodes} nodes x {args.cpus} cpus, "
        f"{args.gpus} GPUs, 512G, 2 NUMA (best of 3)"
    )
    run("empty cluster (most fit)", queue, nodes, [])
    # A quarter of every node already busy: fewer fit, so the blocked path is exercised.
    held = [Held(n.name, n.cpus[: args.cpus // 4], 128 * GIB, n.gpus[:2]) for n in nodes]
    run("25% busy cluster", queue, nodes, held)
    # Twice the queue: half cannot fit; measures explaining thousands of waiting tasks.
    run("oversubscribed (2x queue)", make_queue(args.tasks * 2, nodes, rng), nodes, held)
    # Wide jobs first: every whole-node task blocks, the small ones behind them backfill.
    wide = [
        QueuedTask(-i - 1, ResourceRequest(cores=args.cpus, memory=GIB), NOW - 60)
        for i in range(50)
    ]
    run("50 blocked wide jobs first", wide + queue, nodes, held)
    # Everything old: starving tasks reserve nodes and hold later ones back.
    old = [QueuedTask(t.id, t.request, t.submitted_at - 10_000, t.owner) for t in queue]
    run("starving queue (window expired)", old, nodes, held)
    # Worst case for the explanations: thousands of distinct shapes, almost none fit.
    full = [Held(n.name, n.cpus[4:], 500 * GIB, n.gpus[1:]) for n in nodes]
    distinct = [
        QueuedTask(
            i,
            ResourceRequest(
                cores=rng.randint(1, args.cpus),
                memory=rng.randint(1, 400) * GIB // 7,
                gpus=rng.randint(0, 3),
            ),
            NOW - 60,
        )
        for i in range(args.tasks)
    ]
    run("distinct blocked shapes, full", distinct, nodes, full)
    if FAIR["on"]:
        measure_priorities("empty cluster + priorities + fair share", queue, nodes, [])
        measure_priorities("25% busy cluster + priorities + fair share", queue, nodes, held)


if __name__ == "__main__":
    main()
