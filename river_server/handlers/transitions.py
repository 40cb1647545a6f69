"""`GET /tasks/{id}/transitions`: a task's recorded state changes, for the lab's task view.

The details carry wait, requeue and end reasons, which can echo a task's insides (a node it
named, a kill's cause), so the route is guarded like the task's logs: its owner and
operators read it, anyone else gets 404 (docs/security.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from tornado import web

from river_server import db
from river_server.handlers.base import RiverAPIHandler

# A task changes state a handful of times; preemption can requeue it more often, so the
# answer is bounded (the newest are kept: the end is what a reader looks for).
MAX_TRANSITIONS = 500


def transitions_json(session: Any, task_id: int) -> list[dict[str, Any]]:
    """The task's transitions, oldest first (at most MAX_TRANSITIONS, the newest)."""
    rows = session.scalars(
        select(db.TaskTransition)
        .where(db.TaskTransition.task_id == task_id)
        .order_by(db.TaskTransition.id.desc())
        .limit(MAX_TRANSITIONS)
    ).all()
    return [{"state": r.state, "at": r.at, "detail": r.detail} for r in reversed(rows)]


class TaskTransitionsHandler(RiverAPIHandler):
    @web.authenticated
    async def get(self, task_id: str) -> None:
        task = await self.fetch_task(task_id, action="logs")
        sessions = self.river.sessions

        def reading() -> list[dict[str, Any]]:
            with sessions() as session:
                return transitions_json(session, task.id)

        self.write_json({"transitions": await self.river.db.read(reading)})
