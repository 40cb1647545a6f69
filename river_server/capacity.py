"""What a node has free: cores, memory and GPUs not held by an active task.

A DB question, not scheduler state: the node registry (for its node views) and the overlay
hub (to pick a home for a reservation) ask it too. Kept apart from the dispatcher so that
those two need only the session factory, not the dispatcher (docs/design-decisions.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from river_server import db
from river_server.tasks import ACTIVE_STATES


def free_resources(sessions: sessionmaker[Session], node_name: str) -> dict[str, Any]:
    """Free `cores` (a count), `memory` (bytes) and `gpus` (indices) of a node; {} if unknown."""
    with sessions() as session:
        node = session.get(db.Node, node_name)
        if node is None:
            return {}
        tasks = session.scalars(
            select(db.Task).where(db.Task.node == node_name, db.Task.state.in_(ACTIVE_STATES))
        ).all()
    used_cpus = {c for t in tasks for c in (t.cpus or [])}
    used_gpus = {g for t in tasks for g in (t.gpus or [])}
    return {
        "cores": len([c for c in node.cpus or [] if c not in used_cpus]),
        "memory": max(0, int(node.memory or 0) - sum(int(t.memory or 0) for t in tasks)),
        "gpus": [g["index"] for g in node.gpus or [] if g["index"] not in used_gpus],
    }
