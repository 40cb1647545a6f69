"""Time limits by role: what a task gets when it names none, and the most it may ask for.

Kept apart from the task service so the rule (and its messages) is one small pure function
the service, the VPS service and the tests call alike. Enforcement is the runner's (it has
the clock next to the process: river_runner/agent.py); the host's backstop is
`overdue` below, applied where runners report (river_server/nodes.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from river_runner.durations import format_duration, parse_duration, timeout_reason

__all__ = ["TimeLimitRefused", "TimeLimits", "overdue", "timeout_reason"]
from river_runner.wire.fields import ROLES

# Seconds past limit + grace the host waits for a runner's own report before it records
# the timeout itself (a runner restarted after the limit has lost its timer).
BACKSTOP_SLACK_S = 10.0


class TimeLimitRefused(Exception):
    """A requested limit above the role's maximum (HTTP 400)."""


def _by_role(values: Mapping[str, float | str], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for role, value in values.items():
        if role not in ROLES:
            raise ValueError(
                f"c.RiverHost.{what}: unknown role {role!r} (roles: {', '.join(ROLES)})"
            )
        out[role] = parse_duration(value, f"{what}[{role!r}]")
    return out


@dataclass(frozen=True)
class TimeLimits:
    """c.RiverHost.time_limit_default / time_limit_max (by role) and time_limit_grace."""

    default: Mapping[str, float | str] = field(default_factory=dict)
    maximum: Mapping[str, float | str] = field(default_factory=dict)
    grace: float = 30.0

    def checked(self) -> TimeLimits:
        """Parsed to seconds; a typo in the config fails the host's start, not a submit."""
        return TimeLimits(
            _by_role(self.default, "time_limit_default"),
            _by_role(self.maximum, "time_limit_max"),
            max(0.0, float(self.grace)),
        )

    def _lookup(self, values: Mapping[str, float | str], role: str) -> float | None:
        """A role without an entry takes the nearest lower role's (operators inherit users')."""
        rank = ROLES.index(role) if role in ROLES else 0
        for name in reversed(ROLES[: rank + 1]):
            if name in values:
                return float(values[name])
        return None

    def resolve(self, requested: float | None, role: str) -> float | None:
        """The task's limit in seconds (None: unlimited); raise TimeLimitRefused when over."""
        maximum = self._lookup(self.maximum, role)
        limit = requested if requested is not None else self._lookup(self.default, role)
        if limit is None:
            return maximum
        if maximum is not None and limit > maximum:
            if requested is None:  # a default above the maximum: the maximum wins
                return maximum
            raise TimeLimitRefused(
                f"time_limit {format_duration(limit)} is over the maximum for the {role} role, "
                f"{format_duration(maximum)} (c.RiverHost.time_limit_max); ask for at most "
                f"{format_duration(maximum)}"
            )
        return limit


def overdue(started_at: float | None, limit: float | None, grace: float, now: float) -> bool:
    """Whether a running task is past its limit, the grace and the backstop's slack."""
    if started_at is None or limit is None:
        return False
    return now > started_at + limit + grace + BACKSTOP_SLACK_S
