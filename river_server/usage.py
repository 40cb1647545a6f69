"""Usage accounting for fair share: decayed core- and GPU-seconds per user, in the database.

Updated as tasks run, never recomputed from history: each task remembers up to when it was
charged (`tasks.usage_charged_at`), and a charge adds only the time since, to its owner's
row after decaying that row to now (river_server/fairshare.py holds the formula). The
dispatcher charges every resource-holding task at most once per `interval` seconds, and a
task leaving its resources (terminal, requeued) is charged to its end at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_server import db, history
from river_server.fairshare import DEFAULT_GPU_WEIGHT, DEFAULT_HALF_LIFE, Usage, table
from river_server.fairshare import group_charges as fairshare_group_charges


@dataclass(frozen=True)
class FairShareSettings:
    """c.RiverHost.fair_share_half_life / fair_share_gpu_weight / fair_share_enabled."""

    enabled: bool = True
    half_life: float = DEFAULT_HALF_LIFE
    gpu_weight: float = DEFAULT_GPU_WEIGHT
    interval: float = 5.0  # seconds between charges of running tasks


def _held(task: db.Task) -> tuple[float, float]:
    cores = len(task.cpus or []) or int((task.request or {}).get("cores") or 0)
    return float(cores), float(len(task.gpus or []))


def charge(
    session: Session, tasks: Iterable[db.Task], now: float, settings: FairShareSettings
) -> None:
    """Add each task's run since its last charge to its owner's usage (in the caller's
    transaction)."""
    rows: dict[str, db.UsageRecord] = {}
    for task in tasks:
        since = task.usage_charged_at or task.started_at
        if since is None or now <= since:
            continue
        cores, gpus = _held(task)
        task.usage_charged_at = now
        if not cores and not gpus:
            continue
        # The same run, undecayed and by clock hour, for the usage charts (history.py).
        history.charge_hours(session, task.owner, cores, gpus, since, now)
        row = rows.get(task.owner) or session.get(db.UsageRecord, task.owner)
        if row is None:
            row = db.UsageRecord(name=task.owner, core_seconds=0.0, gpu_seconds=0.0, at=now)
            session.add(row)
        rows[task.owner] = row
        usage = Usage(row.core_seconds, row.gpu_seconds, row.at).plus(
            cores, gpus, now - since, now, settings.half_life
        )
        row.core_seconds, row.gpu_seconds, row.at = (
            usage.core_seconds,
            usage.gpu_seconds,
            usage.at,
        )


def load(session: Session) -> dict[str, Usage]:
    """Every user's stored usage (as of its own `at`; decay with fairshare.charges)."""
    return {
        row.name: Usage(row.core_seconds, row.gpu_seconds, row.at)
        for row in session.scalars(select(db.UsageRecord))
    }


def share_json(session: Session, settings: FairShareSettings, now: float) -> dict[str, Any]:
    """`GET /share`: every user's decayed usage, share and queue priority (lightest = 1),
    with the settings that produced them, so a reader can redo the arithmetic."""
    rows = table(load(session), now, settings.half_life, settings.gpu_weight)
    return {
        "enabled": settings.enabled,
        "half_life": settings.half_life,
        "gpu_weight": settings.gpu_weight,
        "at": now,
        "users": [asdict(row) for row in rows],
    }


def group_charges(session: Session, charges: Mapping[str, float]) -> dict[str, float]:
    """Each grouped user's group charge (fairshare.group_charges) from the groups table."""
    rows = session.execute(
        select(db.Group.name, db.User.name)
        .join(db.GroupMember, db.GroupMember.group_id == db.Group.id)
        .join(db.User, db.User.id == db.GroupMember.user_id)
    ).all()
    members: dict[str, list[str]] = {}
    for group, user in rows:
        members.setdefault(group, []).append(user)
    return fairshare_group_charges(charges, members)
