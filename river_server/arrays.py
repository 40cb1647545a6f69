"""Task arrays: many tasks from one submission, with at most `limit` of them placed at once.

A client submits each member with `"array": {"id": "...", "index": 3, "size": 32,
"limit": 4}`. The array is identified by (owner, id), so two users' arrays never share a
limit. The host sets RIVER_ARRAY_INDEX / RIVER_ARRAY_SIZE / RIVER_ARRAY_ID in each member's
environment. The concurrency limit is enforced by the dispatcher: before each scheduling
pass, queued members beyond their array's free slots are held back (with a wait reason)
and never reach the scheduler, so they also never block or reserve anything.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_runner.spec import SpecError
from river_server import db

ARRAY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_INDEX = 1_000_000


def parse_array(body: dict[str, Any]) -> dict[str, Any] | None:
    """The validated `array` field of a submission, or None when the task is not in one."""
    value = body.get("array")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SpecError("'array' must be an object: {id, index, size?, limit?}")
    array_id = value.get("id")
    if not isinstance(array_id, str) or not ARRAY_ID.fullmatch(array_id):
        raise SpecError("array 'id' must be 1-64 letters, digits, '-' or '_'")
    out: dict[str, Any] = {"id": array_id}
    for key, required in (("index", True), ("size", False), ("limit", False)):
        number = value.get(key)
        if number is None:
            if required:
                raise SpecError(f"array '{key}' is required")
            continue
        if isinstance(number, bool) or not isinstance(number, int):
            raise SpecError(f"array '{key}' must be a whole number, not {number!r}")
        low = 0 if key == "index" else 1
        if not low <= number <= MAX_INDEX:
            raise SpecError(f"array '{key}' must be between {low} and {MAX_INDEX}, not {number}")
        out[key] = number
    return out


def array_env(array: dict[str, Any]) -> dict[str, str]:
    env = {"RIVER_ARRAY_INDEX": str(array["index"]), "RIVER_ARRAY_ID": array["id"]}
    if "size" in array:
        env["RIVER_ARRAY_SIZE"] = str(array["size"])
    return env


def _key(owner: str, spec: dict[str, Any] | None) -> tuple[str, str] | None:
    array = (spec or {}).get("array")
    if not isinstance(array, dict) or not array.get("limit"):
        return None
    return owner, str(array.get("id"))


def active_counts(session: Session, active_states: Sequence[str]) -> Counter[tuple[str, str]]:
    """How many members of each limited array hold resources now."""
    rows = session.execute(
        select(db.Task.owner, db.Task.spec).where(db.Task.state.in_(active_states))
    )
    return Counter(key for owner, spec in rows if (key := _key(owner, spec)) is not None)


def throttle(
    queued: Iterable[db.Task], active: Counter[tuple[str, str]]
) -> tuple[list[db.Task], dict[int, str]]:
    """Split the queue (oldest first) into tasks the scheduler may place now and held ones.

    Returns (eligible, {task id: wait reason}) for members whose array already has `limit`
    members placed (counting those let through earlier in this same pass).
    """
    eligible: list[db.Task] = []
    held: dict[int, str] = {}
    taken = Counter(active)
    for task in queued:
        key = _key(task.owner, task.spec)
        if key is None:
            eligible.append(task)
            continue
        limit = int(task.spec["array"]["limit"])
        if taken[key] < limit:
            taken[key] += 1
            eligible.append(task)
        else:
            held[task.id] = (
                f"array {key[1]} already has {limit} task(s) placed (its limit, %{limit})"
            )
    return eligible, held
