"""Which of the hosts on one database leads (docs/design-decisions.md, "A standby host").

PostgreSQL: the leader holds a session-level advisory lock on a connection of its own for
as long as it leads. PostgreSQL drops the lock the moment that session ends (a killed
process closes its socket), so a standby that retries `pg_try_advisory_lock` about every
second takes over within a second or two, with no lease period and no clock agreement.
The new leader bumps the epoch of the one `host_leader` row (the fencing token) and writes
its public URL there, which standbys name to clients and runners.

SQLite: there is no standby. The host takes an exclusive lock on a file beside the
database, so a second host on the same file refuses to start instead of silently
corrupting the queue (SQLite locks are per file and unreliable on network filesystems).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import uuid
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from river_server import db

RIVER_LEADER_KEY = 0x52495645  # "RIVE": the advisory lock every River host asks for
LEADER_ROW = 1
# libpq keepalives on the lock connection: a partitioned leader notices its lost session
# within about idle + interval * count seconds (unix sockets ignore them).
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}


class SecondHostError(RuntimeError):
    """Another host already uses this SQLite database."""


class Leadership:
    """This host's part in leadership: leads or stands by, and who the leader is."""

    def __init__(self, engine: Engine, log: logging.Logger | None = None) -> None:
        self.engine = engine
        self.log = log or logging.getLogger("river.host")
        self.host_id = uuid.uuid4().hex
        self.url = ""  # this host's public URL; the app sets it once the server knows it
        self.shared = engine.dialect.name == "postgresql"  # can a standby exist at all?
        self.is_leader = not self.shared  # SQLite: the only host (claim_file refuses others)
        self.epoch = 0
        self._lock_connection: Connection | None = None
        self._lock_engine: Engine | None = None
        self._file: IO[Any] | None = None

    # ---- SQLite: one host per database file -------------------------------------------
    def claim_file(self, db_file: Path) -> None:
        """Hold an exclusive lock beside the SQLite database for this process's life."""
        path = db_file.with_name(db_file.name + ".host-lock")
        handle = open(path, "a+")  # noqa: SIM115 - held open until the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SecondHostError(
                f"another River host ({holder}) is using the SQLite database {db_file}. A "
                "second (standby) host needs PostgreSQL: set c.RiverHost.db_url to a "
                "postgresql+psycopg:// URL on both hosts (docs/database.md)"
            ) from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._file = handle

    # ---- PostgreSQL: the advisory lock -------------------------------------------------
    def try_lead(self) -> bool:
        """Try the lock once (blocking I/O: call it off the event loop); on success bump
        the epoch and record this host as leader. True if this host leads now."""
        if not self.shared or self.is_leader:
            return self.is_leader
        connection = self._connect()
        got = connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": RIVER_LEADER_KEY}
        ).scalar()
        connection.commit()
        if not got:
            return False
        with Session(self.engine) as session, session.begin():
            row = session.get(db.HostLeader, LEADER_ROW, with_for_update=True)
            if row is None:
                row = db.HostLeader(id=LEADER_ROW, epoch=0)
                session.add(row)
            row.epoch = int(row.epoch or 0) + 1
            row.host_id = self.host_id
            row.url = self.url
            row.since = time.time()
            epoch = row.epoch
        self.epoch = epoch
        self.is_leader = True
        self.log.warning("River: this host leads now (epoch %d, %s)", epoch, self.url)
        return True

    def still_leads(self) -> bool:
        """Whether the lock session is alive (blocking I/O). False: step down."""
        if not self.shared:
            return True
        if not self.is_leader or self._lock_connection is None:
            return False
        try:
            self._lock_connection.execute(text("SELECT 1")).scalar()
            self._lock_connection.commit()
            return True
        except Exception as exc:  # the session, and with it the lock, is gone
            self.log.error("River: lost the leader lock (%s); standing by", exc)
            self._drop_connection()
            self.is_leader = False
            return False

    def _connect(self) -> Connection:
        if self._lock_connection is None:
            if self._lock_engine is None:
                connect_args = KEEPALIVES  # ignored by libpq on a unix socket
                self._lock_engine = create_engine(
                    self.engine.url, poolclass=NullPool, connect_args=connect_args
                )
            self._lock_connection = self._lock_engine.connect()
        return self._lock_connection

    def _drop_connection(self) -> None:
        connection, self._lock_connection = self._lock_connection, None
        if connection is not None:
            try:
                connection.invalidate()
                connection.close()
            except Exception:  # already broken
                pass

    # ---- what every host may ask -------------------------------------------------------
    def leader_url(self) -> str:
        """The leader's public URL as the database records it ('' if none yet)."""
        if self.is_leader:
            return self.url
        with Session(self.engine) as session:
            row = session.get(db.HostLeader, LEADER_ROW)
            return row.url if row is not None else ""

    def fence(self, session: Session) -> bool:
        """Inside a writer's transaction: is this host still the leader of its epoch? The
        row is share-locked, so a new leader's epoch bump waits for this transaction."""
        if not self.shared:
            return True
        if not self.is_leader:
            return False
        epoch = session.scalar(
            select(db.HostLeader.epoch)
            .where(db.HostLeader.id == LEADER_ROW)
            .with_for_update(read=True)
        )
        return epoch == self.epoch

    def close(self) -> None:
        self._drop_connection()
        if self._lock_engine is not None:
            self._lock_engine.dispose()
        if self._file is not None:
            self._file.close()
            self._file = None
