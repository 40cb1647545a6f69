"""VPS time limits: the host stops a VPS at its limit, with its snapshot (a normal stop).

Tasks are ended by their runner (it has the clock next to the process), but a VPS must be
snapshotted first, which only the host's stop path does (river_server/vps.py `stop`). So the
host keeps this timer. It holds no state of its own: each tick reads which running or
paused VPSes are past `started_at + time_limit` from the database, so a restarted host (or
a standby that took over) stops the same VPSes without having seen them start. Only the
leader acts (a standby's stop would be refused anyway: it may not write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from river_runner.durations import format_duration
from river_runner.protocol import TaskState
from river_server import db
from river_server.dbwork import DbWork
from river_server.tasks import TaskError
from river_server.vps import VpsService

log = logging.getLogger("river.vps_limits")
HOLDING = (TaskState.RUNNING.value, TaskState.PAUSED.value)


def limit_reason(limit: float) -> str:
    """What a VPS stopped at its limit shows as its reason."""
    return f"time limit of {format_duration(limit)} reached: stopped with a snapshot"


def overdue(sessions: Callable, now: float) -> list[int]:
    """Task IDs of running/paused VPSes past their limit and not already being stopped."""
    with sessions() as session:
        rows = session.scalars(
            select(db.Task).where(db.Task.kind == "vps", db.Task.state.in_(HOLDING))
        ).all()
    due = []
    for task in rows:
        spec = task.spec or {}
        limit, stopping = spec.get("time_limit"), (spec.get("vps") or {}).get("stopped")
        if limit and task.started_at and not stopping and now >= task.started_at + float(limit):
            due.append(task.id)
    return due


class VpsLimitTimer:
    """Called every second or so by the host (app.py); stops what is due."""

    def __init__(
        self, sessions: Callable, work: DbWork, vps: VpsService, leading: Callable[[], bool]
    ) -> None:
        self.sessions, self.work, self.vps, self.leading = sessions, work, vps, leading

    async def tick(self) -> None:
        if not self.leading():
            return
        for task_id in await self.work.read(overdue, self.sessions, time.time()):
            await self._stop(task_id)

    async def _stop(self, task_id: int) -> None:
        def load() -> db.Task | None:
            with self.sessions() as session:
                task = session.get(db.Task, task_id)
                if task is not None:
                    session.expunge(task)
                return task

        task = await self.work.read(load)
        if task is None or task.state not in HOLDING:
            return
        limit = float(task.spec["time_limit"])
        log.info("VPS %s reached its time limit (%ss): stopping it", task.spec["vps"]["id"], limit)
        try:
            await self.vps.stop(task, reason=limit_reason(limit))
        except TaskError as exc:  # e.g. its node is offline: tried again next tick
            log.warning("VPS %s: stop at its time limit failed: %s", task.spec["vps"]["id"], exc)
