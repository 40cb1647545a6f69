"""Task priorities by role, and the preemption settings: who may ask for how much.

Kept apart (like time_limits.py) so the rule and its 400 message are one small pure
function the task service, the VPS service and the tests share. Ordering by priority is
the dispatcher's (river_server/dispatcher.py), choosing victims the scheduler's
(river_server/scheduler.py `choose_victims`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from river_runner.wire.fields import ROLES

__all__ = ["DEFAULT_PRIORITY_MAX", "PriorityRefused", "Priorities"]

# Without configuration a user may raise their work a little, operators and admins more.
DEFAULT_PRIORITY_MAX: dict[str, int] = {"viewer": 0, "user": 10, "operator": 100, "admin": 1000}
PRIORITY_MIN = -1000  # anyone may lower their own work this far


class PriorityRefused(Exception):
    """A requested priority above the role's maximum (HTTP 400)."""


def _checked(values: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for role, value in values.items():
        if role not in ROLES:
            raise ValueError(
                f"c.RiverHost.priority_max: unknown role {role!r} (roles: {', '.join(ROLES)})"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"c.RiverHost.priority_max[{role!r}] must be an integer")
        out[role] = value
    return out


@dataclass(frozen=True)
class Priorities:
    """c.RiverHost.priority_max (by role) and c.RiverHost.preempt_grace."""

    maximum: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITY_MAX))
    grace: float = 30.0  # seconds between the checkpoint SIGTERM and SIGKILL

    def checked(self) -> Priorities:
        """Validated; a typo in the config fails the host's start, not a submit."""
        return Priorities(_checked(self.maximum), max(0.0, float(self.grace)))

    def max_for(self, role: str) -> int:
        """A role without an entry takes the nearest lower role's (else 0)."""
        rank = ROLES.index(role) if role in ROLES else 0
        for name in reversed(ROLES[: rank + 1]):
            if name in self.maximum:
                return int(self.maximum[name])
        return 0

    def resolve(self, requested: int | None, role: str) -> int:
        """The task's priority (0 when none is asked); PriorityRefused when over."""
        if requested is None:
            return 0
        maximum = self.max_for(role)
        if requested > maximum:
            raise PriorityRefused(
                f"priority {requested} is over the maximum for the {role} role, {maximum} "
                f"(c.RiverHost.priority_max); ask for at most {maximum}"
            )
        return requested
