"""Metrics and usage over time (issue #21): what the panel's and dashboard's charts draw.

Two bounded tables, written on the DB writer thread by the leader only:

- `node_history`: one *fine* point per node every `step` seconds (CPU %, memory %, and per
  GPU its utilisation % and memory %), kept `fine_keep` seconds; older points are averaged
  into *coarse* buckets `coarse_step` wide, kept `coarse_keep`. Each row counts the samples
  it averages, so merging buckets stays a true mean. A hard cap on rows per node and tier
  holds even if the clock jumps or the settings shrink (`HistorySettings.max_fine`).
- `usage_history`: core- and GPU-seconds per user per clock hour, *undecayed*, added in
  the same transaction as fair share's charge (river_server/usage.py), so the two agree
  and no past task is re-read; kept `usage_keep` seconds.

Readers resample to a step of their choice, and a request that would return more than
MAX_POINTS points gets a wider step (the answer says which): one call cannot make the host
build an unbounded answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from river_server import db

FINE, COARSE = 0, 1
HOUR = 3600.0
MAX_POINTS = 2000  # per series in one answer


@dataclass(frozen=True)
class HistorySettings:
    """c.RiverHost.history_step / history_keep / history_coarse_step / history_coarse_keep /
    usage_history_keep."""

    step: float = 10.0  # seconds between fine points of a node
    fine_keep: float = 86400.0  # fine points older than this are averaged into coarse ones
    coarse_step: float = 600.0
    coarse_keep: float = 30 * 86400.0
    usage_keep: float = 90 * 86400.0

    @property
    def compact_every(self) -> float:
        """How often the leader downsamples and prunes: a few times per coarse bucket."""
        return max(self.step, min(300.0, self.coarse_step / 2))

    @property
    def max_fine(self) -> int:
        """The hard bound on fine rows per node (a point per step over fine_keep, +1)."""
        return int(math.ceil(self.fine_keep / self.step)) + 1

    @property
    def max_coarse(self) -> int:
        return int(math.ceil(self.coarse_keep / self.coarse_step)) + 1


@dataclass(frozen=True)
class Sample:
    """One node's metrics at one time; None where the runner did not report a figure."""

    at: float
    cpu: float | None
    memory: float | None
    gpus: tuple[tuple[float | None, float | None], ...]  # (util %, memory %) per GPU
    samples: int = 1


def _percent(used: Any, total: Any) -> float | None:
    if not isinstance(used, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return round(100.0 * float(used) / float(total), 2)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sample_of(at: float, metrics: dict[str, Any], gpus: Sequence[Any] | None) -> Sample:
    """A heartbeat's metrics (river_runner/metrics.py `sample`, gpu.py `describe`) as a point."""
    per_gpu = tuple(
        (_number(g.get("util")), _percent(g.get("memory_used"), g.get("memory")))
        for g in (gpus or [])
        if isinstance(g, dict)
    )
    return Sample(
        at,
        _number(metrics.get("cpu_percent")),
        _percent(metrics.get("memory_used"), metrics.get("memory_total")),
        per_gpu,
    )


def _mean(values: Iterable[tuple[float | None, int]]) -> float | None:
    known = [(v, n) for v, n in values if v is not None]
    weight = sum(n for _, n in known)
    return round(sum(v * n for v, n in known) / weight, 2) if weight else None


def average(points: Sequence[Sample], at: float) -> Sample:
    """The mean of `points` (weighted by how many samples each already averages), at `at`.
    GPUs are matched by position; a figure missing in some points averages the rest."""
    width = max((len(p.gpus) for p in points), default=0)
    gpus = tuple(
        (
            _mean((p.gpus[i][0], p.samples) for p in points if i < len(p.gpus)),
            _mean((p.gpus[i][1], p.samples) for p in points if i < len(p.gpus)),
        )
        for i in range(width)
    )
    return Sample(
        at,
        _mean((p.cpu, p.samples) for p in points),
        _mean((p.memory, p.samples) for p in points),
        gpus,
        sum(p.samples for p in points),
    )


def resample(points: Sequence[Sample], step: float) -> list[Sample]:
    """Points averaged into buckets `step` wide (aligned to multiples of step), in order."""
    buckets: dict[int, list[Sample]] = {}
    for point in points:
        buckets.setdefault(int(point.at // step), []).append(point)
    return [average(group, key * step) for key, group in sorted(buckets.items())]


def _row(node: str, tier: int, point: Sample) -> db.NodeHistory:
    return db.NodeHistory(
        node=node,
        tier=tier,
        at=point.at,
        samples=point.samples,
        cpu=point.cpu,
        memory=point.memory,
        gpus=[list(g) for g in point.gpus],
    )


def _sample(row: db.NodeHistory) -> Sample:
    gpus = tuple((g[0], g[1]) for g in (row.gpus or []) if isinstance(g, list) and len(g) == 2)
    return Sample(row.at, row.cpu, row.memory, gpus, row.samples or 1)


# ---- writing (leader, DB writer thread) ---------------------------------------------------


def record(session: Session, points: dict[str, Sample]) -> None:
    """Add one fine point per node (in the caller's transaction)."""
    session.add_all(_row(node, FINE, point) for node, point in points.items())


def compact(session: Session, now: float, settings: HistorySettings) -> None:
    """Average fine points past `fine_keep` into coarse buckets, drop coarse points past
    `coarse_keep` and usage hours past `usage_keep`, and hold every node to the row caps."""
    cutoff = now - settings.fine_keep
    old = list(
        session.scalars(
            select(db.NodeHistory).where(db.NodeHistory.tier == FINE, db.NodeHistory.at < cutoff)
        )
    )
    by_bucket: dict[tuple[str, int], list[Sample]] = {}
    for row in old:
        by_bucket.setdefault((row.node, int(row.at // settings.coarse_step)), []).append(
            _sample(row)
        )
        session.delete(row)
    for (node, key), group in by_bucket.items():
        at = key * settings.coarse_step
        existing = session.scalar(
            select(db.NodeHistory).where(
                db.NodeHistory.node == node, db.NodeHistory.tier == COARSE, db.NodeHistory.at == at
            )
        )
        if existing is not None:
            group.append(_sample(existing))
            session.delete(existing)
        session.add(_row(node, COARSE, average(group, at)))
    session.execute(
        delete(db.NodeHistory).where(
            db.NodeHistory.tier == COARSE, db.NodeHistory.at < now - settings.coarse_keep
        )
    )
    session.execute(delete(db.UsageHour).where(db.UsageHour.hour < now - settings.usage_keep))
    session.flush()
    _cap(session, FINE, settings.max_fine)
    _cap(session, COARSE, settings.max_coarse)


def _cap(session: Session, tier: int, most: int) -> None:
    """Delete each node's oldest rows of `tier` beyond `most`."""
    counts = session.execute(
        select(db.NodeHistory.node, func.count())
        .where(db.NodeHistory.tier == tier)
        .group_by(db.NodeHistory.node)
    ).all()
    for node, count in counts:
        if count <= most:
            continue
        oldest = session.scalars(
            select(db.NodeHistory.id)
            .where(db.NodeHistory.node == node, db.NodeHistory.tier == tier)
            .order_by(db.NodeHistory.at)
            .limit(count - most)
        ).all()
        session.execute(delete(db.NodeHistory).where(db.NodeHistory.id.in_(oldest)))


def charge_hours(
    session: Session, user: str, cores: float, gpus: float, since: float, now: float
) -> None:
    """Add `cores`/`gpus` held from `since` to `now` to the user's hourly rows, split at
    hour boundaries (in the caller's transaction: fair share's charge)."""
    start = since
    while start < now:
        hour = math.floor(start / HOUR) * HOUR
        end = min(now, hour + HOUR)
        seconds = end - start
        row = session.get(db.UsageHour, (user, hour))
        if row is None:
            row = db.UsageHour(user=user, hour=hour, core_seconds=0.0, gpu_seconds=0.0)
            session.add(row)
        row.core_seconds = (row.core_seconds or 0.0) + cores * seconds
        row.gpu_seconds = (row.gpu_seconds or 0.0) + gpus * seconds
        start = end


# ---- reading --------------------------------------------------------------------------------


def widen(step: float, since: float, now: float, floor: float) -> float:
    """The step an answer uses: at least `floor` (the stored resolution), and wide enough
    that [since, now] holds at most MAX_POINTS points."""
    return max(step, floor, (now - since) / MAX_POINTS)


def node_json(
    session: Session, node: str, since: float, step: float, now: float, settings: HistorySettings
) -> dict[str, Any]:
    """`GET /nodes/{name}/history`: the node's points since `since`, `step` seconds apart."""
    step = widen(step, since, now, settings.step)
    rows = session.scalars(
        select(db.NodeHistory)
        .where(db.NodeHistory.node == node, db.NodeHistory.at >= since)
        .order_by(db.NodeHistory.at)
    )
    points = resample([_sample(r) for r in rows], step)
    return {
        "node": node,
        "since": since,
        "step": step,
        "points": [
            {
                "at": p.at,
                "cpu": p.cpu,
                "memory": p.memory,
                "gpus": [{"util": u, "memory": m} for u, m in p.gpus],
                "samples": p.samples,
            }
            for p in points
        ],
    }


def usage_json(
    session: Session, since: float, step: float, now: float, only: str | None
) -> dict[str, Any]:
    """`GET /usage/history`: per-user series (all users, or `only` that one) and the
    cluster's total, in buckets of `step` seconds (whole hours)."""
    step = math.ceil(widen(step, since, now, HOUR) / HOUR) * HOUR
    start = math.floor(since / HOUR) * HOUR
    rows = session.scalars(select(db.UsageHour).where(db.UsageHour.hour >= start)).all()
    total: dict[float, list[float]] = {}
    users: dict[str, dict[float, list[float]]] = {}
    for row in rows:
        bucket = math.floor(row.hour / step) * step
        targets = [total]
        if only is None or only == row.user:
            targets.append(users.setdefault(row.user, {}))
        for series in targets:
            cell = series.setdefault(bucket, [0.0, 0.0])
            cell[0] += row.core_seconds
            cell[1] += row.gpu_seconds

    def points(series: dict[float, list[float]]) -> list[dict[str, float]]:
        return [
            {"at": at, "core_seconds": round(c, 3), "gpu_seconds": round(g, 3)}
            for at, (c, g) in sorted(series.items())
        ]

    return {
        "since": start,
        "step": step,
        "total": points(total),
        "users": [{"user": name, "points": points(s)} for name, s in sorted(users.items())],
    }
