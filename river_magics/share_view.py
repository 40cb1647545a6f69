"""`%river share` / `river share`: fair share as a table (GET /river/api/share).

Apart from display.py because it formats one answer of its own; the figures and the order
are the host's (river_server/fairshare.py), shown as they come."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from river_runner.durations import format_duration

from .display import Bundle, table_bundle

HEADERS = ("priority", "user", "share", "core-seconds", "GPU-seconds", "charge")


def _figure(value: Any) -> str:
    return f"{float(value):,.0f}" if float(value) >= 10 else f"{float(value):.1f}"


def share_bundle(share: Mapping[str, Any]) -> Bundle:
    """Users lightest first (priority 1 goes first) and a line saying how it is computed."""
    users = share.get("users") or []
    rows = [
        [
            str(u["priority"]),
            str(u["user"]),
            f"{100 * float(u['share']):.1f}%",
            _figure(u["core_seconds"]),
            _figure(u["gpu_seconds"]),
            _figure(u["charge"]),
        ]
        for u in users
    ]
    how = (
        f"usage halves every {format_duration(float(share['half_life']))}; "
        f"charge = core-seconds + {float(share['gpu_weight']):g} x GPU-seconds"
    )
    if not share.get("enabled"):
        how = "fair share is off: the queue is FIFO. " + how
    if not rows:
        text = f"No usage recorded yet ({how})."
        return {"text/plain": text, "text/html": f"<i>{text}</i>"}
    table = table_bundle(HEADERS, rows, state_col=-1)
    return {
        "text/plain": f"{table['text/plain']}\n{how}",
        "text/html": f"{table['text/html']}<div><i>{how}</i></div>",
    }
