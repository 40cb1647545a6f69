"""Fair share: recent usage, decayed by a half-life, orders the queue between users.

Pure (no I/O, no clock: `now` is passed in) so the policy is unit-tested and benchmarked
without a host; river_server/usage.py keeps the numbers in the database.

The formula (docs/scheduling.md):

    usage(t)  = usage(t0) * 0.5 ** ((t - t0) / half_life)      decay, applied lazily
    charge    = core_seconds + gpu_weight * gpu_seconds         one number per user
    share     = charge / sum of every user's charge             what the user has had
    group     = the summed charge of a group's members; a user's group charge is that of
                their heaviest group (a user in no group is a group of one)
    order     = queued tasks stably sorted by (owner's group charge, owner's charge),
                lightest first

So a light group's members go before a heavy group's, and within a group the lighter
member goes first (Slurm's fair tree, one level deep). Joining a light group does not
escape a heavy one: the heaviest of one's groups counts.
Stable sorting keeps FIFO within one user (and between users of equal charge); the
scheduler's backfill and anti-starvation then act on that order as before. Quotas are
applied before (river_server/quotas.py): they stay hard caps, fair share only reorders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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


def group_charges(
    charge: Mapping[str, float], members: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Each grouped user's group charge: the summed charge of the members of the heaviest
    group they belong to. `members` maps a group's name to its members' names; users in
    no group are left out (their own charge stands for their group)."""
    totals = {
        group: sum(charge.get(user, 0.0) for user in users) for group, users in members.items()
    }
    out: dict[str, float] = {}
    for group, users in members.items():
        for user in users:
            out[user] = max(out.get(user, 0.0), totals[group])
    return out


def sort_key(
    charge: Mapping[str, float], group: Mapping[str, float] | None = None
) -> Callable[[str], tuple[float, float]]:
    """The fair-share key of an owner: (group charge, own charge), lightest first."""
    group = group or {}
    get, get_group = charge.get, group.get

    def key(owner: str) -> tuple[float, float]:
        own = get(owner, 0.0)
        return (get_group(owner, own), own)

    return key


def order(
    queued: Sequence[T],
    charge: Mapping[str, float],
    owner: str = "owner",
    group: Mapping[str, float] | None = None,
) -> list[T]:
    """Queued items (oldest first), lightest group and owner first; FIFO within one owner.

    `owner` names the attribute holding an item's owner; `group` is `group_charges`.
    Users with no recorded usage charge 0 and so go first. Without any usage the order is
    left as it is (FIFO)."""
    if not charge:
        return list(queued)
    key = sort_key(charge, group)
    return sorted(queued, key=lambda item: key(getattr(item, owner)))


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
