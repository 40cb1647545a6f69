"""Fair share: recent usage, decayed by a half-life, orders the queue between users.

Pure (no I/O, no clock: `now` is passed in) so the policy is unit-tested and benchmarked
without a host; river_server/usage.py keeps the numbers in the database.

The formula (docs/scheduling.md):

    usage(t)  = usage(t0) * 0.5 ** ((t - t0) / half_life)      decay, applied lazily
    charge    = core_seconds + gpu_weight * gpu_seconds         one number per user
    share     = charge / sum of every user's charge             what the user has had
    order     = queued tasks stably sorted by their owner's charge, lightest first

Stable sorting keeps FIFO within one user (and between users of equal charge); the
scheduler's backfill and anti-starvation then act on that order as before. Quotas are
applied before (river_server/quotas.py): they stay hard caps, fair share only reorders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

DEFAULT_HALF_LIFE = 7 * 86400.0
DEFAULT_GPU_WEIGHT = 10.0  # one GPU-second counts as this many core-seconds


@dataclass(frozen=True)
class Usage:
    """Decayed core- and GPU-seconds of one user (or group) as of `at` (unix seconds)."""

    core_seconds: float = 0.0
    gpu_seconds: float = 0.0
    at: float = 0.0

    def decayed(self, now: float, half_life: float) -> Usage:
        """The same usage seen at `now`: halved for every half-life since `at`."""
        if now <= self.at or half_life <= 0:
            return Usage(self.core_seconds, self.gpu_seconds, max(now, self.at))
        factor = 0.5 ** ((now - self.at) / half_life)
        return Usage(self.core_seconds * factor, self.gpu_seconds * factor, now)

    def plus(
        self, cores: float, gpus: float, seconds: float, now: float, half_life: float
    ) -> Usage:
        """Decay to `now`, then add a run of `seconds` holding `cores` and `gpus`."""
        base = self.decayed(now, half_life)
        return Usage(base.core_seconds + cores * seconds, base.gpu_seconds + gpus * seconds, now)

    def charge(self, gpu_weight: float = DEFAULT_GPU_WEIGHT) -> float:
        return self.core_seconds + gpu_weight * self.gpu_seconds


def charges(
    usage: Mapping[str, Usage], now: float, half_life: float, gpu_weight: float
) -> dict[str, float]:
    """Each user's charge at `now` (decayed)."""
    return {name: u.decayed(now, half_life).charge(gpu_weight) for name, u in usage.items()}


def order(queued: Sequence[T], charge: Mapping[str, float], owner: str = "owner") -> list[T]:
    """Queued items (oldest first), lightest owner first; FIFO within one owner.

    `owner` names the attribute holding an item's owner. Users with no recorded usage
    charge 0 and so go first. Without any usage the order is left as it is (FIFO)."""
    if not charge:
        return list(queued)
    get = charge.get
    return sorted(queued, key=lambda item: get(getattr(item, owner), 0.0))


@dataclass(frozen=True)
class ShareRow:
    """One line of `%river share`."""

    user: str
    core_seconds: float
    gpu_seconds: float
    charge: float
    share: float  # fraction of all charges (0..1)
    priority: int  # 1 = goes first


def table(
    charged: Mapping[str, Usage], now: float, half_life: float, gpu_weight: float
) -> list[ShareRow]:
    """Every user's decayed usage, share and resulting priority (lightest = 1)."""
    seen = {name: u.decayed(now, half_life) for name, u in charged.items()}
    total = sum(u.charge(gpu_weight) for u in seen.values())
    ranked = sorted(seen.items(), key=lambda item: (item[1].charge(gpu_weight), item[0]))
    return [
        ShareRow(
            user=name,
            core_seconds=u.core_seconds,
            gpu_seconds=u.gpu_seconds,
            charge=u.charge(gpu_weight),
            share=(u.charge(gpu_weight) / total) if total > 0 else 0.0,
            priority=rank,
        )
        for rank, (name, u) in enumerate(ranked, start=1)
    ]
