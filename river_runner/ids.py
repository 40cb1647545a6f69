"""Time-ordered 64-bit snowflake IDs: sortable by submission time, unique per worker.

Layout: 41 bits of milliseconds since RIVER_EPOCH_MS, 10 bits worker, 12 bits sequence.
IDs travel as decimal strings in JSON because JavaScript numbers lose precision past 2**53.
"""

from __future__ import annotations

import threading
import time

RIVER_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
_WORKER_BITS = 10
_SEQUENCE_BITS = 12
_MAX_SEQUENCE = (1 << _SEQUENCE_BITS) - 1


class SnowflakeGenerator:
    """Thread-safe generator; never goes backwards even if the wall clock does."""

    def __init__(self, worker_id: int = 0) -> None:
        if not 0 <= worker_id < (1 << _WORKER_BITS):
            raise ValueError(f"worker_id must be in [0, {1 << _WORKER_BITS})")
        self._worker = worker_id
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def bump_past(self, existing_id: int) -> None:
        """Make every future ID larger than `existing_id` (e.g. the newest one in the DB)."""
        with self._lock:
            self._last_ms = max(self._last_ms, timestamp_ms(existing_id) - RIVER_EPOCH_MS)
            self._sequence = _MAX_SEQUENCE

    def next_id(self) -> int:
        with self._lock:
            now = int(time.time() * 1000) - RIVER_EPOCH_MS
            if now <= self._last_ms:
                now = self._last_ms
                self._sequence += 1
                if self._sequence > _MAX_SEQUENCE:
                    now += 1
                    self._sequence = 0
            else:
                self._sequence = 0
            self._last_ms = now
            return (
                (now << (_WORKER_BITS + _SEQUENCE_BITS))
                | (self._worker << _SEQUENCE_BITS)
                | self._sequence
            )


def timestamp_ms(snowflake: int) -> int:
    """Unix milliseconds at which an ID was generated."""
    return (snowflake >> (_WORKER_BITS + _SEQUENCE_BITS)) + RIVER_EPOCH_MS


def parse_id(value: str | int) -> int:
    """Parse a task ID from a URL or JSON; ValueError with a clear message otherwise."""
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"task ID must be a number, not {value!r}") from None
    if number <= 0 or number >= 1 << 63:
        raise ValueError(f"task ID {value!r} is out of range")
    return number
