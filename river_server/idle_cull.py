"""Idle culling: the host stops a VPS whose CPU (and GPUs) stayed idle for a window.

Idle VPSes hold cores and GPUs others queue for; stopping one with a snapshot (the normal
stop path, river_server/vps.py `stop`) gives them back, and `restart` brings it back as it
was. The figures come from the runners' heartbeats (each running task's CPU percent of one
core, river_runner/task_cpu.py; per-GPU utilisation from NVML), held in memory by the
node registry. The judgement is kept in the database: a VPS's record gets `idle_since`
when first seen idle and loses it when seen busy, so only those transitions are written
(steady beats cost no DB work), and a restarted host or a standby that took over culls at
the same moment without having watched the whole window. Only the leader acts. A VPS
created with `no_cull` (operators and admins only) is never culled; one whose figures are
unknown (node offline, first beat after start) is never judged idle. A VM VPS is judged by
its QEMU's CPU (its vCPUs are QEMU's threads) and its stop keeps its disk as a snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from river_runner.durations import format_duration
from river_runner.protocol import TaskState
from river_server import db
from river_server.dbwork import DbWork
from river_server.nodes import NodeConnections
from river_server.tasks import TaskError
from river_server.vps import VpsService

log = logging.getLogger("river.idle_cull")


@dataclass(frozen=True)
class IdlePolicy:
    """c.RiverHost.idle_cull_window (seconds; 0: off), idle_cpu_threshold and
    idle_gpu_threshold (percent; CPU of one core, GPU utilisation)."""

    window: float = 0.0
    cpu_threshold: float = 5.0
    gpu_threshold: float = 5.0

    @property
    def on(self) -> bool:
        return self.window > 0

    def reason(self, has_gpus: bool) -> str:
        """What a culled VPS shows as its reason."""
        under = f"CPU under {self.cpu_threshold:g}%"
        if has_gpus:
            under += f", GPU under {self.gpu_threshold:g}%"
        return f"idle for {format_duration(self.window)} ({under}): stopped with a snapshot"

    def busy(self, cpu: float | None, gpu_utils: list[float | None]) -> bool | None:
        """True/False when the figures say so; None when the CPU figure is unknown."""
        if any(u is not None and u >= self.gpu_threshold for u in gpu_utils):
            return True
        if cpu is None:
            return None
        return cpu >= self.cpu_threshold


@dataclass(frozen=True)
class Candidate:
    """A running VPS incarnation as the culler sees it (read off the loop)."""

    task_id: int
    node: str | None
    gpus: list[int]
    started_at: float
    idle_since: float | None


def candidates(sessions: Callable) -> list[Candidate]:
    """Running VPS incarnations that may be culled (not stopping, not opted out)."""
    with sessions() as session:
        rows = session.scalars(
            select(db.Task).where(db.Task.kind == "vps", db.Task.state == TaskState.RUNNING.value)
        ).all()
    found = []
    for task in rows:
        record = (task.spec or {}).get("vps") or {}
        if record.get("stopped") or record.get("no_cull"):
            continue
        found.append(
            Candidate(
                task.id,
                task.node,
                [int(g) for g in task.gpus or []],
                float(task.started_at or 0.0),
                record.get("idle_since"),
            )
        )
    return found


def set_idle_since(sessions: Callable, task_id: int, value: float | None) -> None:
    """Record (or clear) when the incarnation was first seen idle."""
    with sessions() as session:
        task = session.get(db.Task, task_id)
        if task is None or task.state != TaskState.RUNNING.value:
            return
        spec = dict(task.spec)
        spec["vps"] = {**spec["vps"], "idle_since": value}
        task.spec = spec
        flag_modified(task, "spec")
        session.commit()


def _gpu_utils(gpus: list[dict[str, Any]] | None, held: list[int]) -> list[float | None]:
    if not held or not gpus:
        return []
    return [g.get("util") for g in gpus if g.get("index") in held]


class IdleCuller:
    """Called every second or so by the host (app.py), like the VPS time-limit timer."""

    def __init__(
        self,
        sessions: Callable,
        work: DbWork,
        vps: VpsService,
        connections: NodeConnections,
        policy: IdlePolicy,
        leading: Callable[[], bool],
    ) -> None:
        self.sessions, self.work, self.vps = sessions, work, vps
        self.connections, self.policy, self.leading = connections, policy, leading

    async def tick(self) -> None:
        if not (self.policy.on and self.leading()):
            return
        now = time.time()
        for found in await self.work.read(candidates, self.sessions):
            await self._judge(found, now)

    async def _judge(self, found: Candidate, now: float) -> None:
        connection = self.connections.get(found.node or "")
        if connection is None:
            return
        busy = self.policy.busy(
            connection.task_cpu.get(str(found.task_id)), _gpu_utils(connection.gpus, found.gpus)
        )
        if busy is None:
            return
        if busy:
            if found.idle_since is not None:
                await self.work.write(set_idle_since, self.sessions, found.task_id, None)
            return
        if found.idle_since is None:
            await self.work.write(set_idle_since, self.sessions, found.task_id, now)
            return
        if now - max(float(found.idle_since), found.started_at) >= self.policy.window:
            await self._cull(found)

    async def _cull(self, found: Candidate) -> None:
        def load() -> db.Task | None:
            with self.sessions() as session:
                task = session.get(db.Task, found.task_id)
                if task is not None:
                    session.expunge(task)
                return task

        task = await self.work.read(load)
        if task is None or task.state != TaskState.RUNNING.value:
            return
        reason = self.policy.reason(bool(found.gpus))
        log.info("VPS %s: %s", task.spec["vps"]["id"], reason)
        try:
            await self.vps.stop(task, reason=reason)
        except TaskError as exc:  # e.g. its node went offline: tried again next tick
            log.warning("VPS %s: idle cull failed: %s", task.spec["vps"]["id"], exc)
