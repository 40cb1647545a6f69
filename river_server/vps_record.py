"""Pure helpers over a VPS's record (`task.spec["vps"]`, river_server/vps.py).

Why a module of its own: a user's restart (river_server/vps.py) and a preempted VPS's
requeue (river_server/preemption.py) must choose the next run's image and node the same
way, and preemption.py cannot import vps.py (vps → tasks → preemption is a cycle). This
module imports nothing of River's, so both can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def newest_snapshot(record: Mapping[str, Any], target: str | None) -> tuple[str, str | None] | None:
    """The image and target of a container VPS's next run: its newest snapshot, pinned to
    the node that holds it (`snapshot_node`) unless `target` was given (a target keeps its
    NUMA/GPU parts); None when it has no snapshot (it runs from its own image again)."""
    snapshots = record.get("snapshots") or []
    if not snapshots:
        return None
    return snapshots[-1], target or record.get("snapshot_node")
