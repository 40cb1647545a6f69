"""Quotas: how many cores and GPUs a user, or a group of users together, may hold at once.

Applied by the dispatcher before the (pure, quota-unaware) scheduler plans: queued tasks
are taken oldest first, and a task whose owner (or one of the owner's groups) would go
over a limit if it started stays queued with that reason. Tasks admitted in the same pass
count against the limit too, so a pass never places more than a quota allows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_server import db


@dataclass(frozen=True)
class Limit:
    scope: str  # "user" or "group"
    name: str
    max_cores: int | None = None
    max_gpus: int | None = None


@dataclass
class QuotaPolicy:
    users: dict[str, Limit] = field(default_factory=dict)  # user -> own limit
    groups: dict[str, Limit] = field(default_factory=dict)  # group -> limit
    members: dict[str, set[str]] = field(default_factory=dict)  # group -> users

    def groups_of(self, user: str) -> list[str]:
        return sorted(g for g, names in self.members.items() if user in names and g in self.groups)

    @property
    def empty(self) -> bool:
        return not self.users and not self.groups


@dataclass(frozen=True)
class Want:
    """What one queued task would hold if it started."""

    id: int
    owner: str
    cores: int
    gpus: int


def admit(
    queued: Sequence[Want], in_use: dict[str, tuple[int, int]], policy: QuotaPolicy
) -> tuple[list[int], dict[int, str]]:
    """Split queued tasks (oldest first) into those within quota and those that must wait.

    in_use: user -> (cores, GPUs) held by their placed, non-terminal tasks.
    Returns (admitted IDs in order, {waiting ID: reason}).
    """
    if policy.empty:
        return [w.id for w in queued], {}
    user_use: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for user, (cores, gpus) in in_use.items():
        user_use[user] = [cores, gpus]
    group_use: dict[str, list[int]] = {
        g: [
            sum(user_use[u][0] for u in names if u in user_use),
            sum(user_use[u][1] for u in names if u in user_use),
        ]
        for g, names in policy.members.items()
        if g in policy.groups
    }
    admitted: list[int] = []
    waiting: dict[int, str] = {}
    for want in queued:
        checks: list[tuple[Limit, list[int]]] = []
        if want.owner in policy.users:
            checks.append((policy.users[want.owner], user_use[want.owner]))
        for group in policy.groups_of(want.owner):
            checks.append((policy.groups[group], group_use[group]))
        reason = next(
            (r for limit, used in checks if (r := _over(limit, used, want)) is not None), None
        )
        if reason is not None:
            waiting[want.id] = reason
            continue
        admitted.append(want.id)
        for _, used in checks:
            used[0] += want.cores
            used[1] += want.gpus
        if want.owner not in policy.users:
            user_use[want.owner][0] += want.cores
            user_use[want.owner][1] += want.gpus
    return admitted, waiting


def _over(limit: Limit, used: list[int], want: Want) -> str | None:
    who = f"user {limit.name}" if limit.scope == "user" else f"group {limit.name}"
    for index, (maximum, asked, unit) in enumerate(
        ((limit.max_cores, want.cores, "cores"), (limit.max_gpus, want.gpus, "GPUs"))
    ):
        if maximum is not None and asked and used[index] + asked > maximum:
            return (
                f"over quota: {who} may hold at most {maximum} {unit} at once "
                f"({used[index]} held, this task asks for {asked})"
            )
    return None


# ---- reading the policy and usage from the DB ---------------------------------------------


def load_policy(session: Session) -> QuotaPolicy:
    policy = QuotaPolicy()
    for quota, name in session.execute(
        select(db.UserQuota, db.User.name).join(db.User, db.User.id == db.UserQuota.user_id)
    ):
        if quota.max_cores is not None or quota.max_gpus is not None:
            policy.users[name] = Limit("user", name, quota.max_cores, quota.max_gpus)
    for group in session.scalars(
        select(db.Group).where((db.Group.max_cores.is_not(None)) | (db.Group.max_gpus.is_not(None)))
    ):
        policy.groups[group.name] = Limit("group", group.name, group.max_cores, group.max_gpus)
    if policy.groups:
        for group_name, user_name in session.execute(
            select(db.Group.name, db.User.name)
            .join(db.GroupMember, db.GroupMember.group_id == db.Group.id)
            .join(db.User, db.User.id == db.GroupMember.user_id)
        ):
            policy.members.setdefault(group_name, set()).add(user_name)
    return policy


def _gpus_asked(request: dict[str, Any]) -> int:
    return max(int(request.get("gpus") or 0), len(request.get("gpu_indices") or []))


def filter_queued(
    session: Session, queued: Iterable[db.Task], active_states: Iterable[str]
) -> tuple[list[db.Task], dict[int, str]]:
    """The dispatcher's hook: (queued tasks within quota, {over-quota task ID: reason})."""
    queued = list(queued)
    policy = load_policy(session)
    if policy.empty:
        return queued, {}
    in_use: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for owner, cpus, gpus in session.execute(
        select(db.Task.owner, db.Task.cpus, db.Task.gpus).where(
            db.Task.state.in_(list(active_states))
        )
    ):
        in_use[owner][0] += len(cpus or [])
        in_use[owner][1] += len(gpus or [])
    wants = [
        Want(t.id, t.owner, int((t.request or {}).get("cores") or 0), _gpus_asked(t.request or {}))
        for t in queued
    ]
    admitted, waiting = admit(wants, {u: (c, g) for u, (c, g) in in_use.items()}, policy)
    keep = set(admitted)
    return [t for t in queued if t.id in keep], waiting
