"""`--db sqlite|postgresql` for benchmarks: the database URL a bench cluster's host uses.

PostgreSQL is the throwaway server of the test fixture (tests/pg.py: initdb in a temp dir,
a unix socket, removed afterwards), so a bench needs no system service either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

CHOICES = ("sqlite", "postgresql")


@contextlib.contextmanager
def database(kind: str, root: Path) -> Iterator[str]:
    """A fresh database for a host whose data lives under `root`; its SQLAlchemy URL."""
    if kind == "sqlite":
        yield f"sqlite:///{root / 'host' / 'river.db'}"
        return
    from tests.pg import PgServer

    server = PgServer()
    server.start()
    try:
        yield server.create_database()
    finally:
        server.stop()
