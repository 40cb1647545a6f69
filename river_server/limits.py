"""Counting gates: at most N concurrent things per user (and in all), refused, not queued.

A refusal is immediate and says which bound was hit, so a client that opens streams or
relays in a loop gets a clear 429 instead of slowly starving the host of threads or
sockets for everyone else.
"""

from __future__ import annotations

import threading
from collections import Counter


class LimitReached(Exception):
    """A gate is full; the message names the bound and its setting."""


class StreamGate:
    """Concurrent holders per user (`per_user`) and in all (`total`; 0: no total bound).
    Thread-safe, so the SSH proxy's threads and the event loop can share one."""

    def __init__(
        self,
        per_user: int,
        total: int = 0,
        *,
        what: str = "event streams",
        setting: str = "c.RiverHost.max_event_streams_per_user",
    ) -> None:
        self.per_user = per_user
        self.total = total
        self.what = what
        self.setting = setting
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, user: str) -> None:
        """Take a slot for `user` or raise LimitReached."""
        with self._lock:
            if self._held[user] >= self.per_user:
                raise LimitReached(
                    f"{user} already has {self._held[user]} open {self.what}, the most one user "
                    f"may hold ({self.setting} = {self.per_user}); close some first"
                )
            if self.total and sum(self._held.values()) >= self.total:
                raise LimitReached(
                    f"the host already serves {self.total} {self.what} in all, its limit; "
                    "try again when some have closed"
                )
            self._held[user] += 1

    def release(self, user: str) -> None:
        with self._lock:
            self._held[user] -= 1
            if self._held[user] <= 0:
                del self._held[user]

    def held(self, user: str) -> int:
        with self._lock:
            return self._held[user]
