"""Preemption on the host's side: pick victims for waiting tasks, mark them, requeue them.

The choice itself is pure (river_server/scheduler.py `choose_victims`, `may_displace`);
this module turns database rows into its inputs and its answer into state. A victim is
not requeued at once: it is marked (`spec["preempting"]`) and keeps holding its resources
while its runner gives it SIGTERM and the grace (c.RiverHost.preempt_grace), so the task
that displaces it never shares cores with it. When the runner reports it ended, the task
service requeues it (`requeue` below): back to `queued`, its requeue count up, its reason
naming who displaced it and why, a marker line in its log, and the next run's log lines
numbered after the first run's (`spec["log_offset"]`), so the whole output is kept.

A preemptible container VPS is displaced the same way, with one difference in the
checkpoint (`checkpoint` below): its container is committed first (the snapshot of a
user's stop, river_server/vps.py), then killed; when the requeue comes, the same record
goes back to the queue running from that snapshot, pinned to the node that holds it
(`requeue_fields`), so it keeps its VPS and task id, owner, SSH keys, overlay address and
the files in its home. A VM VPS is not offered (its disk, not a commit, is its state).

The mark is in the database; the checkpoint's start (the signal, the snapshot) is the
dispatcher's, in memory. A host that restarts between the two finds victims marked that no
runner was told to stop: when each one's runner registers with it, the dispatcher starts the checkpoint of each such victim again
(`Dispatcher.resume`), so the victim is never left marked and running; its end requeues
it as usual. It does so whether or not the waiter still waits: a host cannot tell whether
its predecessor's SIGTERM reached the runner, and a victim whose mark were dropped after it
had would end at the grace's SIGKILL as `failed`, not requeued (docs/design-decisions.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river_runner.protocol import LOG_STREAM_RIVER, TaskState
from river_runner.spec import ResourceRequest
from river_server import db
from river_server.scheduler import Held, NodeView, Running, choose_victims, may_displace
from river_server.vps_record import newest_snapshot

MAX_WAITERS_PER_PASS = 16  # waiters examined for preemption per pass (bounds the cost)


@dataclass
class Displacement:
    """One decision: `waiter` displaces `victims` on `node`, for `why`."""

    waiter: db.Task
    node: str
    victims: list[db.Task]
    why: str


def displaceable(task: db.Task) -> bool:
    """A running, preemptible single task that is not already being displaced. Job
    members (a gang ends together) are not offered; a VPS is when it is a container that
    is not being stopped or deleted (a VM keeps its state on a disk, not in a commit)."""
    spec = task.spec or {}
    record = spec.get("vps")
    if record is not None and (
        not isinstance(record, dict)
        or record.get("vm")
        or record.get("stopped")
        or record.get("deleted")
    ):
        return False
    return (
        task.state == TaskState.RUNNING.value
        and bool(spec.get("preemptible"))
        and not spec.get("preempting")
        and task.job_id is None
        and bool(task.node)
    )


SNAPSHOT, SIGNAL = "snapshot", "signal"


def checkpoint(task: db.Task) -> str:
    """How a victim is checkpointed before it gives its resources back: a VPS is
    snapshotted (`docker commit`) and then killed, since what it holds is its files, not a
    program that can save itself on SIGTERM; a task gets SIGTERM and the grace."""
    return SNAPSHOT if (task.spec or {}).get("vps") else SIGNAL


def _why(waiter: db.Task, victim: db.Task, charges: Mapping[str, float]) -> str:
    if (waiter.priority or 0) > (victim.priority or 0):
        return f"priority {waiter.priority} over {victim.priority or 0}"
    return (
        f"fair share: {waiter.owner} has used {charges.get(waiter.owner, 0.0):.0f}, "
        f"{victim.owner} {charges.get(victim.owner, 0.0):.0f} (same priority)"
    )


def plan(
    waiting: list[tuple[db.Task, ResourceRequest]],
    active: list[db.Task],
    views: list[NodeView],
    extra_held: list[Held],
    charges: Mapping[str, float],
) -> list[Displacement]:
    """Displacements for waiters (in queue order) that the plan could not place.

    `active`: every resource-holding task; `extra_held`: placements of this pass. A
    waiter with victims already on their way out waits for them instead of taking more.
    """
    in_flight = {
        int((t.spec or {})["preempting"]["by"]) for t in active if (t.spec or {}).get("preempting")
    }
    pool = [t for t in active if displaceable(t)]
    if not pool:
        return []
    out: list[Displacement] = []
    taken: set[int] = set()
    for waiter, request in waiting[:MAX_WAITERS_PER_PASS]:
        if waiter.id in in_flight:
            continue
        wcharge = charges.get(waiter.owner, 0.0)
        cands = [
            t
            for t in pool
            if t.id not in taken
            and may_displace(
                waiter.priority or 0, wcharge, t.priority or 0, charges.get(t.owner, 0.0)
            )
        ]
        if not cands:
            continue
        cand_ids = {t.id for t in cands}
        held = [
            Held(t.node, list(t.cpus or []), int(t.memory or 0), list(t.gpus or []))
            for t in active
            if t.node and t.id not in cand_ids
        ] + extra_held
        running = [
            Running(
                t.node or "",
                list(t.cpus or []),
                int(t.memory or 0),
                list(t.gpus or []),
                id=t.id,
                priority=t.priority or 0,
                owner=t.owner,
                started_at=t.started_at or 0.0,
            )
            for t in cands
        ]
        choice = choose_victims(request, views, held, running)
        if choice is None:
            continue
        by_id = {t.id: t for t in cands}
        victims = [by_id[i] for i in choice.victims]
        taken.update(choice.victims)
        out.append(Displacement(waiter, choice.node, victims, _why(waiter, victims[0], charges)))
    return out


def mark(session: Any, move: Displacement, grace: float) -> None:
    """Record on each victim who displaces it and why (committed with the pass), so the
    report of its end requeues it instead of ending it."""
    now = time.time()
    for victim in move.victims:
        how = (
            "snapshot, then stop; it will be requeued to restart from that snapshot"
            if checkpoint(victim) == SNAPSHOT
            else f"SIGTERM, then SIGKILL after {grace:g}s; it will be requeued"
        )
        victim.spec = {
            **(victim.spec or {}),
            "preempting": {
                "by": str(move.waiter.id),
                "owner": move.waiter.owner,
                "why": move.why,
                "at": now,
            },
        }
        session.add(
            db.TaskTransition(
                task_id=victim.id,
                state=victim.state,
                at=now,
                detail=f"being displaced by task {move.waiter.id} of {move.waiter.owner} "
                f"({move.why}): {how}",
            )
        )


def requeue_note(task: db.Task) -> str:
    mark_ = (task.spec or {}).get("preempting") or {}
    note = f"displaced by task {mark_.get('by')} of {mark_.get('owner')} ({mark_.get('why')}); "
    snapshots = ((task.spec or {}).get("vps") or {}).get("snapshots") or []
    if snapshots:
        return note + f"requeued to restart from snapshot {snapshots[-1]}"
    return note + "requeued"


def requeue_fields(task: db.Task, last_seq: int) -> dict[str, Any]:
    """What changes on a displaced task going back to the queue (besides its state)."""
    spec = {k: v for k, v in (task.spec or {}).items() if k != "preempting"}
    spec["log_offset"] = last_seq + 1  # the marker line takes last_seq + 1
    fields: dict[str, Any] = {}
    if isinstance(spec.get("vps"), dict):
        spec, fields["request"] = _vps_restart(spec, dict(task.request or {}))
    return {
        **fields,
        "spec": spec,
        "requeues": (task.requeues or 0) + 1,
        "node": None,
        "cpus": [],
        "gpus": [],
        "memory": 0,
        "assigned_at": None,
        "started_at": None,
        "exit_code": None,
        "usage_charged_at": None,
    }


def _vps_restart(
    spec: dict[str, Any], request: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A displaced VPS's next run: from its newest snapshot, on the node that holds it (as
    a user's restart, river_server/vps.py); its started apps and idle clock end with it."""
    record = dict(spec["vps"])
    snapshot = newest_snapshot(record, request.get("target"))
    if snapshot:
        spec["image"], target = snapshot
        if target:
            request["target"] = target
    record["apps"] = []
    record["idle_since"] = None
    spec["vps"] = record
    return spec, request


def marker_line(task: db.Task, last_seq: int, note: str) -> dict[str, Any]:
    run = (task.requeues or 0) + 2
    return {
        "seq": last_seq + 1,
        "stream": LOG_STREAM_RIVER,
        "text": f"[river] {note}; run {run} follows",
        "ts": time.time(),
    }


def shift(lines: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
    """A later run's lines, numbered after what earlier runs wrote."""
    if not offset:
        return lines
    return [{**line, "seq": int(line["seq"]) + offset} for line in lines]
