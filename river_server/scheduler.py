"""Placement engine: which queued tasks start where, decided from a snapshot of the cluster.

Pure on purpose (no I/O, no database, no clock, no asyncio): the dispatcher hands in a
snapshot and gets back a plan, so the policy can be tested exhaustively and benchmarked
without a running host.

Policy, in order of precedence:

* FIFO: tasks are considered oldest first, so an earlier task gets resources before a
  later one that wants the same ones.
* Backfill: a task that does not fit does not stop later, smaller tasks from starting.
* Anti-starvation: once a blocked task has waited longer than the backfill window, the
  nodes it could ever use are reserved for it; later tasks may only start elsewhere.
* Best fit: among nodes that fit, pick the one left with the fewest free cores, then the
  fewest free GPUs, then by name, so big nodes (and GPU nodes) stay free for big jobs.
* Gangs (multi-node jobs): a job of N members is placed all-or-nothing, one member per
  distinct node, each node chosen best fit; while N nodes do not fit at once it takes
  nothing. Its anti-starvation is the single-task rule: after the backfill window every
  node that could ever hold a member is withheld from later tasks.

Speed matters (10,000 queued tasks over 200 nodes per pass), so free resources are built
once per plan, available nodes are bucketed by (free cores, free GPUs) so the best fit is
the first hit of an ordered scan, and shapes that failed are remembered: resources only
shrink during a plan, so anything at least as big as a failed request fails too.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from river_runner.spec import Placement, ResourceRequest, format_memory

__all__ = [
    "Held",
    "NodeView",
    "Preemption",
    "QueuedTask",
    "Running",
    "SchedulePlan",
    "Scheduler",
    "choose_victims",
    "gang_infeasible_reason",
    "infeasible_reason",
    "may_displace",
]


@dataclass
class NodeView:
    """A registered node as the scheduler sees it (totals, not what is free)."""

    name: str
    cpus: list[int]
    memory: int
    gpus: list[int]
    numa: list[list[int]]
    online: bool = True


@dataclass
class Held:
    """Resources held by a placed, non-terminal task (assigning, running or paused)."""

    node: str
    cpus: list[int]
    memory: int
    gpus: list[int]


@dataclass
class Running(Held):
    """A placed task that may be displaced (preemption): its resources and its standing."""

    id: int = 0
    priority: int = 0
    owner: str = ""
    started_at: float = 0.0


@dataclass
class Preemption:
    """Which running tasks to displace, all on `node`, so a waiting task fits there."""

    node: str
    victims: list[int]


@dataclass
class QueuedTask:
    """A task waiting for resources; `submitted_at` (unix seconds) drives anti-starvation."""

    id: int
    request: ResourceRequest
    submitted_at: float
    owner: str = ""
    # A gang: the member task ids by rank (each asks for `request` on its own node). The
    # plan then places all of them or none, and `waiting` explains each member.
    members: tuple[int, ...] = ()


@dataclass
class SchedulePlan:
    """What one pass decided: concrete placements, and why every other task waits."""

    placements: dict[int, Placement] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)


# ---- static capacity -------------------------------------------------------------------


@dataclass(frozen=True)
class _Capacity:
    """A node's totals, derived once so feasibility checks are cheap and uniform."""

    name: str
    cores: int
    numa_sizes: tuple[int, ...]
    memory: float
    gpus: frozenset[int]


def _domains(view: NodeView) -> list[tuple[int | None, list[int]]]:
    """CPU ids per NUMA node, sorted; CPUs listed in no NUMA node form an unnumbered one.

    A node that reports no NUMA layout is one NUMA node (0) holding every CPU.
    """
    cpuset = set(view.cpus)
    if not view.numa:
        return [(0, sorted(cpuset))]
    seen: set[int] = set()
    out: list[tuple[int | None, list[int]]] = []
    for number, ids in enumerate(view.numa):
        mine = sorted(c for c in set(ids) if c in cpuset and c not in seen)
        seen.update(mine)
        out.append((number, mine))
    rest = sorted(cpuset - seen)
    if rest:
        out.append((None, rest))
    return out


def _capacity(view: NodeView, domains: list[tuple[int | None, list[int]]]) -> _Capacity:
    return _Capacity(
        name=view.name,
        cores=len(set(view.cpus)),
        numa_sizes=tuple(len(ids) for number, ids in domains if number is not None),
        memory=view.memory if view.memory > 0 else math.inf,
        gpus=frozenset(view.gpus),
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _mem(size: float) -> str:
    return "0B" if size <= 0 else format_memory(int(size))


def _gpu_list(gpus: list[int] | tuple[int, ...]) -> str:
    word = "GPU" if len(gpus) == 1 else "GPUs"
    return f"{word} {', '.join(str(g) for g in gpus)}"


def _target_numa(request: ResourceRequest) -> int | None:
    return request.target.numa if request.target else None


def _node_refusal(request: ResourceRequest, cap: _Capacity) -> str | None:
    """Why this node can never run the request (ignoring the target's node name), else None."""
    name = cap.name
    numa = _target_numa(request)
    if numa is not None:
        count = len(cap.numa_sizes)
        if numa >= count:
            return (
                f"node '{name}' has no NUMA node {numa} "
                f"(it has {_plural(count, 'NUMA node')}, numbered from 0)"
            )
        size = cap.numa_sizes[numa]
        if request.cores > size:
            return (
                f"NUMA node {numa} of node '{name}' has only {_plural(size, 'core')}; "
                f"{request.cores} requested"
            )
    elif request.cores > cap.cores:
        return f"node '{name}' has only {_plural(cap.cores, 'core')}; {request.cores} requested"
    if request.memory > cap.memory:
        return f"node '{name}' has only {_mem(cap.memory)} memory; {_mem(request.memory)} requested"
    missing = [g for g in request.gpu_indices if g not in cap.gpus]
    if missing:
        present = ", ".join(str(g) for g in sorted(cap.gpus)) or "none"
        return f"node '{name}' has no {_gpu_list(missing)} (its GPUs: {present})"
    if request.gpu_count > len(cap.gpus):
        return (
            f"node '{name}' has only {_plural(len(cap.gpus), 'GPU')}; {request.gpu_count} requested"
        )
    return None


def _infeasible(request: ResourceRequest, caps: list[_Capacity]) -> str | None:
    if not caps:
        return None
    if request.target is not None:
        wanted = request.target.node
        cap = next((c for c in caps if c.name == wanted), None)
        if cap is None:
            names = ", ".join(sorted(c.name for c in caps))
            return f"unknown node '{wanted}'; registered nodes: {names}"
        return _node_refusal(request, cap)
    if any(_node_refusal(request, cap) is None for cap in caps):
        return None
    most_cores = max(c.cores for c in caps)
    if request.cores > most_cores:
        return f"no registered node has {request.cores} cores (largest: {most_cores})"
    most_memory = max(c.memory for c in caps)
    if request.memory > most_memory:
        return (
            f"no registered node has {_mem(request.memory)} memory (largest: {_mem(most_memory)})"
        )
    most_gpus = max(len(c.gpus) for c in caps)
    if request.gpu_count > most_gpus:
        return f"no registered node has {request.gpu_count} GPUs (most: {most_gpus})"
    return f"no registered node has {_describe(request)} together"


def _describe(request: ResourceRequest) -> str:
    """'4 cores, 8.0G memory and 1 GPU', naming only what was asked for."""
    parts = [_plural(request.cores, "core")]
    if request.memory:
        parts.append(f"{_mem(request.memory)} memory")
    if request.gpu_count:
        parts.append(_plural(request.gpu_count, "GPU"))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def infeasible_reason(request: ResourceRequest, nodes: list[NodeView]) -> str | None:
    """Why this request can never fit on any registered node (online or not), else None.

    Lets the host refuse a submission up front instead of queueing it forever. With no
    nodes registered nothing can be ruled out: nodes may join later.
    """
    return _infeasible(request, [_capacity(v, _domains(v)) for v in nodes])


def gang_infeasible_reason(
    request: ResourceRequest, size: int, nodes: list[NodeView]
) -> str | None:
    """Why a job of `size` members (one per node) can never be placed, else None. As for
    single tasks, nothing is ruled out before any node has registered."""
    if request.target is not None:
        return "a multi-node job cannot target one node; leave out the target"
    if not nodes:
        return None
    caps = [_capacity(v, _domains(v)) for v in nodes]
    able = sum(1 for c in caps if _node_refusal(request, c) is None)
    if able < size:
        why = _infeasible(request, caps)
        detail = f" ({why})" if why else ""
        return (
            f"a job of {size} nodes needs {size} distinct nodes that can each hold "
            f"{_describe(request)}; {able} of the {len(caps)} registered can{detail}"
        )
    return None


# ---- free resources during one plan ------------------------------------------------------


class _NodeState:
    """What is still free on one online node while a plan is being built."""

    __slots__ = ("idx", "cap", "domains", "free_cores", "free_memory", "free_gpus", "available")

    def __init__(
        self,
        idx: int,
        view: NodeView,
        domains: list[tuple[int | None, list[int]]],
        held: list[Held],
    ) -> None:
        used_cpus: set[int] = set()
        used_gpus: set[int] = set()
        used_memory = 0
        for h in held:
            used_cpus.update(h.cpus)
            used_gpus.update(h.gpus)
            used_memory += h.memory
        self.idx = idx
        self.cap = _capacity(view, domains)
        self.domains = [(n, [c for c in ids if c not in used_cpus]) for n, ids in domains]
        self.free_cores = sum(len(ids) for _, ids in self.domains)
        self.free_memory: float = self.cap.memory - used_memory
        self.free_gpus = sorted(set(view.gpus) - used_gpus)
        self.available = True

    def domain(self, numa: int) -> list[int] | None:
        for number, ids in self.domains:
            if number == numa:
                return ids
        return None

    def key(self) -> tuple[int, int]:
        return (self.free_cores, len(self.free_gpus))


def _fits(state: _NodeState, request: ResourceRequest) -> bool:
    """Whether the request fits in what is free on this node right now."""
    numa = _target_numa(request)
    if numa is not None:
        ids = state.domain(numa)
        if ids is None or len(ids) < request.cores:
            return False
    elif request.cores > state.free_cores:
        return False
    if request.memory > state.free_memory:
        return False
    if request.gpu_indices:
        return all(g in state.free_gpus for g in request.gpu_indices)
    return request.gpus <= len(state.free_gpus)


def _take_cpus(state: _NodeState, cores: int, numa: int | None) -> tuple[list[int], int | None]:
    """Pick concrete CPUs: the requested NUMA node, else the tightest one that holds them
    all (packing keeps memory local), else spread over the fullest NUMA nodes first."""
    if cores == 0:
        return [], numa
    if numa is not None:
        ids = state.domain(numa)
        assert ids is not None
        taken = ids[:cores]
        del ids[:cores]
        return taken, numa
    best: tuple[int | None, list[int]] | None = None
    for domain in state.domains:
        size = len(domain[1])
        if size >= cores and (best is None or size < len(best[1])):
            best = domain
    if best is not None:
        taken = best[1][:cores]
        del best[1][:cores]
        return taken, best[0]
    taken = []
    for _, ids in sorted(state.domains, key=lambda d: -len(d[1])):
        count = min(cores - len(taken), len(ids))
        taken.extend(ids[:count])
        del ids[:count]
        if len(taken) == cores:
            break
    return sorted(taken), None


def _take(state: _NodeState, request: ResourceRequest) -> Placement:
    """Carve the request out of the node's free resources and describe what was taken."""
    cpus, numa = _take_cpus(state, request.cores, _target_numa(request))
    if request.gpu_indices:
        gpus = list(request.gpu_indices)
        for g in gpus:
            state.free_gpus.remove(g)
    else:
        gpus = state.free_gpus[: request.gpus]
        del state.free_gpus[: request.gpus]
    state.free_cores -= len(cpus)
    state.free_memory -= request.memory
    return Placement(node=state.cap.name, cpus=cpus, memory=request.memory, gpus=gpus, numa=numa)


class _Index:
    """Available nodes bucketed by (free cores, free GPUs), each bucket in name order.

    Scanning buckets in key order from (cores, gpus) upward visits nodes exactly in
    best-fit order, so the first node that also has the memory is the answer.
    """

    def __init__(self, states: list[_NodeState]) -> None:
        self.states = states
        self.keys: list[tuple[int, int]] = []
        self.buckets: dict[tuple[int, int], list[int]] = {}

    def add(self, state: _NodeState) -> None:
        key = state.key()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = []
            insort(self.keys, key)
        insort(bucket, state.idx)

    def remove(self, state: _NodeState) -> None:
        key = state.key()
        bucket = self.buckets[key]
        del bucket[bisect_left(bucket, state.idx)]
        if not bucket:
            del self.buckets[key]
            del self.keys[bisect_left(self.keys, key)]

    def best(self, cores: int, gpus: int, memory: int) -> _NodeState | None:
        keys, buckets, states = self.keys, self.buckets, self.states
        for i in range(bisect_left(keys, (cores, gpus)), len(keys)):
            key = keys[i]
            if key[1] < gpus:
                continue
            for idx in buckets[key]:
                state = states[idx]
                if state.free_memory >= memory:
                    return state
        return None


@dataclass
class _KindSummary:
    """Most free cores, memory and GPUs on any online node of one kind (same totals)."""

    online: bool = False
    cores: int = 0
    memory: float = -math.inf
    gpus: int = 0


# ---- one planning pass --------------------------------------------------------------------


class _Pass:
    """The mutable state of one plan() call, kept out of Scheduler so plans never leak."""

    def __init__(self, nodes: list[NodeView], held: list[Held], window: float, now: float) -> None:
        self.window = window
        self.now = now
        held_by_node: dict[str, list[Held]] = defaultdict(list)
        for h in held:
            held_by_node[h.node].append(h)
        self.caps: list[_Capacity] = []
        self.states: list[_NodeState] = []
        for view in sorted(nodes, key=lambda v: v.name):
            domains = _domains(view)
            self.caps.append(_capacity(view, domains))
            if view.online:
                state = _NodeState(len(self.states), view, domains, held_by_node[view.name])
                self.states.append(state)
        self.by_name = {s.cap.name: s for s in self.states}
        self.caps_by_name = {c.name: c for c in self.caps}
        self._kind_cache: dict[tuple[int, float, int], _KindSummary] | None = None
        self.index = _Index(self.states)
        for state in self.states:
            self.index.add(state)
        self.failed: list[tuple[int, int, int]] = []
        self.reserved_by: dict[str, QueuedTask] = {}
        self.reserved = _Index(self.states)  # nothing is placed on these, so it stays exact
        self.blockers: set[int] = set()
        self.plan = SchedulePlan()
        self.unplaced: list[QueuedTask] = []

    # -- placing --
    def consider(self, task: QueuedTask) -> None:
        if task.members:
            self._consider_gang(task)
            return
        request = task.request
        state = self._find(request)
        if state is not None:
            self.index.remove(state)
            self.plan.placements[task.id] = _take(state, request)
            self.index.add(state)
            return
        self.unplaced.append(task)
        if self.now - task.submitted_at > self.window:
            self._reserve_for(task)

    def _consider_gang(self, task: QueuedTask) -> None:
        """All members on distinct nodes now, or none (holding nothing)."""
        request = task.request
        chosen: list[_NodeState] = []
        for key in self.index.keys:  # best-fit order: fewest free cores, then GPUs
            if key[0] < request.cores or key[1] < request.gpus:
                continue
            for idx in self.index.buckets[key]:
                state = self.states[idx]
                if _fits(state, request):
                    chosen.append(state)
                    if len(chosen) == len(task.members):
                        break
            if len(chosen) == len(task.members):
                break
        if len(chosen) == len(task.members):
            for member, state in zip(task.members, chosen, strict=True):
                self.index.remove(state)
                self.plan.placements[member] = _take(state, request)
                self.index.add(state)
            return
        self.unplaced.append(task)
        if self.now - task.submitted_at > self.window:
            self._reserve_for(task)

    def _find(self, request: ResourceRequest) -> _NodeState | None:
        if request.target is not None:
            state = self.by_name.get(request.target.node)
            if state is not None and state.available and _fits(state, request):
                return state
            return None
        cores, memory, gpus = request.cores, request.memory, request.gpus
        for f_cores, f_memory, f_gpus in self.failed:
            if cores >= f_cores and memory >= f_memory and gpus >= f_gpus:
                return None
        state = self.index.best(cores, gpus, memory)
        if state is None:
            self._remember_failure((cores, memory, gpus))
        return state

    def _remember_failure(self, shape: tuple[int, int, int]) -> None:
        """Keep only the smallest failed shapes: each one rules out everything bigger."""
        self.failed = [
            f
            for f in self.failed
            if not (f[0] >= shape[0] and f[1] >= shape[1] and f[2] >= shape[2])
        ]
        self.failed.append(shape)

    def _reserve_for(self, task: QueuedTask) -> None:
        """Starving task: withdraw every node it could ever use from later tasks."""
        if not self.index.keys:
            return
        request = task.request
        if request.target is not None:
            state = self.by_name.get(request.target.node)
            candidates = [state] if state is not None else []
        else:
            candidates = self.states
        for state in candidates:
            if state.available and _node_refusal(request, state.cap) is None:
                self.index.remove(state)
                self.reserved.add(state)
                state.available = False
                self.reserved_by[state.cap.name] = task
                self.blockers.add(task.id)

    # -- explaining --
    def finish(self) -> SchedulePlan:
        held_back: dict[tuple, str | None] = {}
        short: dict[tuple, str] = {}
        for task in self.unplaced:
            if task.members:
                self._explain_gang(task)
                continue
            request = task.request
            key = (request.cores, request.memory, request.gpus, request.target)
            text: str | None = None
            if self.reserved_by:
                # A starving task's own reservation never holds it back, so it has no
                # cache entry to share with other tasks of the same shape.
                if task.id in self.blockers:
                    text = self._held_back(request, task.id)
                else:
                    if key not in held_back:
                        held_back[key] = self._held_back(request)
                    text = held_back[key]
            if text is None:
                if key not in short:
                    short[key] = self._short(request)
                text = short[key]
            if task.id in self.blockers:
                text += "; later tasks are held back so it can start"
            self.plan.waiting[task.id] = text
        return self.plan

    def _explain_gang(self, task: QueuedTask) -> None:
        """'2 of 3 nodes with 4 free GPUs', for every member of a waiting gang."""
        request, size = task.request, len(task.members)
        able = sum(1 for c in self.caps if _node_refusal(request, c) is None)
        if able < size:
            text = (
                f"only {able} of {size} nodes could ever hold a member with "
                f"{_describe(request)}; waiting for more nodes to register"
            )
        else:
            free = sum(1 for s in self.states if s.available and _fits(s, request))
            text = (
                f"{free} of {size} nodes with {_describe(request)} free; "
                f"the job starts when all {size} are free at once"
            )
            held = sum(
                1
                for name, blocker in self.reserved_by.items()
                if blocker.id != task.id and _fits(self.by_name[name], request)
            )
            if held:
                text += f" ({held} more held back for an older starving task)"
        if task.id in self.blockers:
            text += "; later tasks are held back so it can start"
        for member in task.members:
            self.plan.waiting[member] = text

    def _held_back(self, request: ResourceRequest, own_id: int | None = None) -> str | None:
        """'held back behind task N' when only an older starving task's reservation stops it."""
        if request.target is not None:
            names = [request.target.node] if request.target.node in self.reserved_by else []
        elif own_id is None:
            state = self.reserved.best(request.cores, request.gpus, request.memory)
            names = [state.cap.name] if state is not None else []
        else:
            names = list(self.reserved_by)
        for name in names:
            blocker = self.reserved_by[name]
            if blocker.id != own_id and _fits(self.by_name[name], request):
                since = datetime.fromtimestamp(blocker.submitted_at, tz=timezone.utc)
                return (
                    f"held back behind task {blocker.id} "
                    f"(waiting since {since:%Y-%m-%d %H:%M:%S} UTC, "
                    f"longer than the {self.window:g}s backfill window)"
                )
        return None

    def _short(self, request: ResourceRequest) -> str:
        """What is missing, measured against what is free once this plan is applied."""
        if not self.caps:
            return "no online nodes (no node has registered yet)"
        if request.target is not None:
            cap = self.caps_by_name.get(request.target.node)
            never = _infeasible(request, self.caps) if cap is None else _node_refusal(request, cap)
            return never if never is not None else self._short_on_node(request)
        # Untargeted: compare against per-kind summaries, not every node, because a long
        # queue of distinct blocked shapes would otherwise cost O(shapes x nodes).
        able = [
            entry
            for (cores, memory, gpus), entry in self._kinds().items()
            if request.cores <= cores and request.memory <= memory and request.gpus <= gpus
        ]
        if not able:
            return _infeasible(request, self.caps) or "no registered node can ever fit it"
        if not self.states:
            return "no online nodes"
        online = [entry for entry in able if entry.online]
        if not online:
            waiting_for = sorted(c.name for c in self.caps if _node_refusal(request, c) is None)
            return (
                f"no online node can ever fit {_describe(request)}; "
                f"waiting for {', '.join(waiting_for)} to come online"
            )
        most_cores = max(e.cores for e in online)
        if request.cores > most_cores:
            return (
                f"waiting for {_plural(request.cores, 'free core')} "
                f"(most free on an online node: {most_cores})"
            )
        most_memory = max(e.memory for e in online)
        if request.memory > most_memory:
            return (
                f"waiting for {_mem(request.memory)} free memory "
                f"(most free on an online node: {_mem(most_memory)})"
            )
        most_gpus = max(e.gpus for e in online)
        if request.gpus > most_gpus:
            return (
                f"waiting for {_plural(request.gpus, 'free GPU')} "
                f"(most free on an online node: {most_gpus})"
            )
        return f"waiting for one online node with {_describe(request)} free at the same time"

    def _kinds(self) -> dict[tuple[int, float, int], _KindSummary]:
        """Most free per node kind (same totals), built once after every placement is made."""
        if self._kind_cache is None:
            kinds: dict[tuple[int, float, int], _KindSummary] = {}
            for cap in self.caps:
                kinds.setdefault((cap.cores, cap.memory, len(cap.gpus)), _KindSummary())
            for state in self.states:
                cap = state.cap
                entry = kinds[(cap.cores, cap.memory, len(cap.gpus))]
                entry.online = True
                entry.cores = max(entry.cores, state.free_cores)
                entry.memory = max(entry.memory, state.free_memory)
                entry.gpus = max(entry.gpus, len(state.free_gpus))
            self._kind_cache = kinds
        return self._kind_cache

    def _short_on_node(self, request: ResourceRequest) -> str:
        assert request.target is not None
        name = request.target.node
        state = self.by_name.get(name)
        if state is None:
            return f"node '{name}' is offline"
        busy = [g for g in request.gpu_indices if g not in state.free_gpus]
        if busy:
            return f"waiting for {_gpu_list(busy)} on node '{name}' (in use)"
        numa = request.target.numa
        if numa is not None:
            free = len(state.domain(numa) or [])
            if request.cores > free:
                return (
                    f"waiting for {_plural(request.cores, 'free core')} in NUMA node {numa} "
                    f"of node '{name}' (free there: {free})"
                )
        elif request.cores > state.free_cores:
            return (
                f"waiting for {_plural(request.cores, 'free core')} on node '{name}' "
                f"(free: {state.free_cores})"
            )
        if request.memory > state.free_memory:
            return (
                f"waiting for {_mem(request.memory)} free memory on node '{name}' "
                f"(free: {_mem(state.free_memory)})"
            )
        if request.gpus > len(state.free_gpus):
            return (
                f"waiting for {_plural(request.gpus, 'free GPU')} on node '{name}' "
                f"(free: {len(state.free_gpus)})"
            )
        return f"waiting for {_describe(request)} on node '{name}'"


class Scheduler:
    """FIFO with backfill and best fit; see the module docstring for the policy."""

    def __init__(self, backfill_window: float = 300.0) -> None:
        self.backfill_window = backfill_window

    def plan(
        self,
        queued: list[QueuedTask],
        nodes: list[NodeView],
        held: list[Held],
        now: float,
    ) -> SchedulePlan:
        """Place what fits now, oldest first; explain why each other task waits.

        `queued` must be oldest first. Nothing is mutated: the caller applies the plan.
        """
        run = _Pass(nodes, held, self.backfill_window, now)
        for task in queued:
            run.consider(task)
        return run.finish()


# ---- preemption ----------------------------------------------------------------------------

UNDER_SHARE_FACTOR = 0.5  # a waiter is under-share when its owner's charge is at most half


def may_displace(
    waiter_priority: int, waiter_charge: float, victim_priority: int, victim_charge: float
) -> bool:
    """Whether a waiting task may displace a running preemptible one: a higher priority,
    or the same priority and an owner who has used at most half what the victim's owner
    has (under-share). The factor keeps two users from displacing each other in turn."""
    if waiter_priority != victim_priority:
        return waiter_priority > victim_priority
    return waiter_charge <= victim_charge * UNDER_SHARE_FACTOR and victim_charge > 0


def choose_victims(
    request: ResourceRequest,
    nodes: list[NodeView],
    held: list[Held],
    candidates: list[Running],
) -> Preemption | None:
    """The fewest displaceable tasks on one node whose resources let `request` fit there.

    `held`: what every other placed task holds (never displaced); `candidates`: the
    running tasks the caller already judged displaceable (preemptible, lower priority or
    over-share; may_displace). The rule (docs/scheduling.md): on each node, take
    candidates lowest priority first, then largest first (so fewest are needed), then
    youngest (least work lost) until the request fits; then spare every victim it fits
    without (never more than needed). Among nodes: fewest victims, then fewest cores and
    GPUs displaced, then node name. None: no node fits even with every candidate gone.
    """
    if not candidates:
        return None
    held_by: dict[str, list[Held]] = defaultdict(list)
    for h in held:
        held_by[h.node].append(h)
    cands_by: dict[str, list[Running]] = defaultdict(list)
    for c in candidates:
        cands_by[c.node].append(c)
    best: tuple[tuple[int, int, int, str], Preemption] | None = None
    for view in nodes:
        mine = cands_by.get(view.name)
        if not view.online or not mine:
            continue
        if request.target is not None and request.target.node != view.name:
            continue
        domains = _domains(view)
        if _node_refusal(request, _capacity(view, domains)) is not None:
            continue
        base = held_by.get(view.name, [])

        def fits(
            victims: list[Running],
            view: NodeView = view,
            domains: list[tuple[int | None, list[int]]] = domains,
            base: list[Held] = base,
            mine: list[Running] = mine,
        ) -> bool:
            gone = {id(v) for v in victims}
            rest = base + [c for c in mine if id(c) not in gone]
            return _fits(_NodeState(0, view, domains, rest), request)

        order = sorted(
            mine, key=lambda c: (c.priority, -len(c.cpus), -len(c.gpus), -c.started_at, c.id)
        )
        chosen: list[Running] = []
        for c in order:
            chosen.append(c)
            if fits(chosen):
                break
        else:
            continue
        for c in list(reversed(chosen)):
            trial = [x for x in chosen if x is not c]
            if fits(trial):
                chosen = trial
        if not chosen:  # it fits as things are: nothing to displace here
            continue
        score = (
            len(chosen),
            sum(len(c.cpus) for c in chosen),
            sum(len(c.gpus) for c in chosen),
            view.name,
        )
        if best is None or score < best[0]:
            best = (score, Preemption(view.name, sorted(c.id for c in chosen)))
    return best[1] if best else None
