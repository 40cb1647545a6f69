"""A debug guard that makes database work on the event loop visible.

With `c.RiverHost.db_loop_guard = True` every statement executed while an asyncio loop is
running in the executing thread (i.e. on Tornado's loop, not a DB worker) is logged with
the request handler or host function that ran it. Tests turn it on and assert that the
converted paths never appear (tests/integration/test_db_off_loop.py).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

MARKER = "river-db-on-loop"


def _where() -> str:
    """The handler method (Class.method) or else the innermost host function that ran the
    query: enough to find the code to convert."""
    frame = sys._getframe(2)
    innermost = ""
    while frame is not None:
        code = frame.f_code
        path = code.co_filename.replace("\\", "/")
        if "/river_server/" in path and not path.endswith(("loop_guard.py", "dbwork.py")):
            owner = frame.f_locals.get("self")
            kind = type(owner).__name__ if owner is not None else ""
            if kind.endswith("Handler"):
                return f"{kind}.{code.co_name}"
            if not innermost:
                innermost = f"{path.rsplit('/river_server/', 1)[1]}:{code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return innermost or "?"


class LoopGuard:
    """Counts (and logs) statements run on the loop, by where they ran."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.seen: Counter[str] = Counter()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread (or start-up before the loop runs): fine
        where = _where()
        self.seen[where] += 1
        if self.seen[where] == 1 or self.seen[where] % 100 == 0:
            self.log.warning(
                "%s: %s (%d so far): %s",
                MARKER,
                where,
                self.seen[where],
                " ".join(statement.split())[:120],
            )


def install(engine: Engine, log: logging.Logger) -> LoopGuard:
    guard = LoopGuard(log)
    event.listen(engine, "before_cursor_execute", guard)
    return guard
