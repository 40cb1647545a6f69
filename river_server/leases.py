"""Kernel-bound tasks: a notebook kernel's lease, and what happens when it lapses.

`%%river submit --bind-kernel` ties a task to the kernel that submitted it. The kernel
holds a lease (a row here, made by the host) and renews it every few seconds from a daemon
thread (river_magics/lease.py); a kernel that shuts down or dies stops renewing, so the
lease lapses after `c.RiverHost.kernel_lease_seconds` and the leader's sweep kills the
tasks bound to it with the reason KERNEL_GONE. Everything is in the database (expiry, the
tasks' `lease_id`), so a restarted host or a standby that took over sweeps the same leases.
A kill is recorded first, as the task's final state, then the runner is told (as a kill of
a task being placed is: a late report never brings it back). Detached stays the default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from river_runner.protocol import TERMINAL_STATES
from river_server import db
from river_server.dbwork import DbWork

if TYPE_CHECKING:
    from river_runner.ids import SnowflakeGenerator
    from river_server.nodes import NodeConnections
    from river_server.tasks import TaskService

log = logging.getLogger("river.leases")
KERNEL_GONE = "the notebook kernel that submitted it went away"
TERMINAL = [s.value for s in TERMINAL_STATES]


class LeaseRefused(Exception):
    """A lease that is not the caller's, unknown or lapsed: an HTTP status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def lease_json(lease: db.KernelLease, seconds: float) -> dict[str, Any]:
    return {
        "id": str(lease.id),
        "owner": lease.owner,
        "expires_at": lease.expires_at,
        "seconds": seconds,
    }


def bound_lease(session: Session, owner: str, value: Any, now: float) -> int | None:
    """The lease a submission names (`lease`), checked: the submitter's own and live."""
    if value in (None, ""):
        return None
    try:
        lease_id = int(str(value))
    except ValueError:
        raise LeaseRefused(
            400, f"lease must be a lease id from POST /leases, not {value!r}"
        ) from None
    lease = session.get(db.KernelLease, lease_id)
    if lease is None or lease.owner != owner:
        raise LeaseRefused(404, f"no lease {value} of yours: make one with POST /river/api/leases")
    if lease.expires_at <= now:
        raise LeaseRefused(409, f"lease {value} has lapsed: make a new one with POST /leases")
    return lease_id


def lapsed(sessions: Callable, now: float) -> tuple[list[int], list[int]]:
    """(lapsed lease ids, their bound tasks that have not ended)."""
    with sessions() as session:
        leases = session.scalars(
            select(db.KernelLease.id).where(db.KernelLease.expires_at <= now)
        ).all()
        if not leases:
            return [], []
        tasks = session.scalars(
            select(db.Task.id).where(db.Task.lease_id.in_(leases), db.Task.state.not_in(TERMINAL))
        ).all()
    return list(leases), list(tasks)


def forget(sessions: Callable, lease_ids: list[int]) -> None:
    with sessions.begin() as session:
        session.execute(delete(db.KernelLease).where(db.KernelLease.id.in_(lease_ids)))


class LeaseService:
    """Create, renew and release leases (handlers), and sweep lapsed ones (the leader)."""

    def __init__(
        self,
        sessions: Callable,
        work: DbWork,
        tasks: TaskService,
        connections: NodeConnections,
        ids: SnowflakeGenerator,
        seconds: float,
    ) -> None:
        self.sessions, self.work, self.tasks = sessions, work, tasks
        self.connections, self.ids, self.seconds = connections, ids, seconds

    async def create(self, owner: str) -> dict[str, Any]:
        def make() -> dict[str, Any]:
            now = time.time()
            lease = db.KernelLease(
                id=self.ids.next_id(), owner=owner, expires_at=now + self.seconds, created_at=now
            )
            with self.sessions.begin() as session:
                session.add(lease)
                return lease_json(lease, self.seconds)

        return await self.work.write(make)

    async def renew(self, lease_id: str, owner: str, release: bool = False) -> dict[str, Any]:
        """Push the expiry a lease period on; `release`: end it now (its tasks are killed
        by the next sweep, which runs at once on the leader)."""

        def update() -> dict[str, Any]:
            now = time.time()
            with self.sessions.begin() as session:
                lease = session.get(db.KernelLease, _lease_id(lease_id))
                if lease is None or lease.owner != owner:
                    raise LeaseRefused(404, f"no lease {lease_id} of yours (lapsed ones are gone)")
                if lease.expires_at <= now and not release:
                    raise LeaseRefused(409, f"lease {lease_id} has lapsed: make a new one")
                lease.expires_at = now if release else now + self.seconds
                return lease_json(lease, self.seconds)

        answer = await self.work.write(update)
        if release:
            await self.sweep()
        return answer

    async def sweep(self) -> None:
        """Kill the tasks of lapsed leases, then drop the leases (leader only: app.py)."""
        now = time.time()
        lease_ids, task_ids = await self.work.read(lapsed, self.sessions, now)
        for task_id in task_ids:
            task = await self.work.write(self.tasks.end_now, task_id, KERNEL_GONE)
            log.info("task %s: %s", task_id, KERNEL_GONE)
            node = self.connections.get(task.node or "")
            if node is not None:
                await self.tasks.kill_on_runner(node.url, node.secret, task_id)
        if lease_ids:
            await self.work.write(forget, self.sessions, lease_ids)


def _lease_id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise LeaseRefused(404, f"no lease {value!r}: lease ids are numbers") from None
