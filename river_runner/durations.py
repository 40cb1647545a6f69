"""Durations as people write them (`90m`, `2h`, `1d`, `3600`), for time limits.

In the runner package (the lowest layer) because host, client and CLI all parse the same
`--time` text and must agree on what it means and on the message a typo gets.
"""

from __future__ import annotations

import re
from typing import Any

from river_runner.spec import SpecError

MAX_TIME_LIMIT = 366 * 86400.0  # a year: beyond it a limit is a typo, not a policy
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def parse_duration(value: Any, name: str = "time_limit") -> float:
    """Seconds from a number or text like `90m`, `2h`, `1d`, `1h30m`, `45` (seconds).

    Raises SpecError naming the field and the forms it takes."""
    if isinstance(value, bool):
        raise SpecError(f"'{name}' must be seconds or a duration like 90m, 2h, 1d; not {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        pos, seconds = 0, 0.0
        while pos < len(text):
            match = _PART.match(text, pos)
            if match is None:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise SpecError(
                f"'{name}' must be seconds or a duration like 90m, 2h, 1d or 1h30m; not {value!r}"
            )
    else:
        raise SpecError(f"'{name}' must be seconds or a duration like 90m, 2h, 1d; not {value!r}")
    if not 0 < seconds <= MAX_TIME_LIMIT:
        raise SpecError(
            f"'{name}' must be more than 0 and at most {format_duration(MAX_TIME_LIMIT)}; "
            f"not {value!r}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """`2h`, `1h30m`, `45s`, `1d2h`: the short form users write, for messages and tables."""
    left = max(0, int(round(seconds)))
    if left == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def timeout_reason(limit: float, grace: float) -> str:
    """The reason a task at its time limit ends with, the same from runner and host."""
    return (
        f"time limit of {format_duration(limit)} reached "
        f"(SIGTERM, then SIGKILL after a {format_duration(grace)} grace)"
    )
