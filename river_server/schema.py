"""Bring a database to the schema this code knows, by Alembic migrations (docs/database.md).

One function, `prepare`, decides for every caller (the host, the admin CLI, tests):
- an empty database is created by `upgrade head`;
- a database that create_all made before migrations existed (River's tables, no
  `alembic_version`) is checked and stamped as revision 0001, then treated as older;
- a database at a revision this code does not know (made by newer code) is refused;
- an older database is upgraded: SQLite automatically, after copying the file to a backup
  next to it; PostgreSQL only when asked (`c.RiverHost.upgrade_db` / `river host
  --upgrade-db`), because there an upgrade is an operator's decision with their own backups.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"
# The tables revision 0001 made; a database holding them but no alembic_version came from
# the create_all days. The overlay's two tables were made only once a host had run, so a
# database an admin command made first may lack them: the baseline creates those.
BASELINE_TABLES = frozenset(
    {
        "users",
        "retired_user_names",
        "api_tokens",
        "invitations",
        "groups",
        "group_members",
        "user_quotas",
        "nodes",
        "tasks",
        "task_transitions",
        "environment_exports",
    }
)
OVERLAY_TABLES = ("overlay_allocations", "overlay_reservations")


class SchemaError(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


def target_metadata() -> MetaData:
    """All of River's models (the overlay's live in overlay.py)."""
    import river_server.overlay  # noqa: F401  (registers its tables on db.Base)
    from river_server import db

    return db.Base.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    return any(rev.revision == revision for rev in script.walk_revisions())


def _sqlite_file(engine: Engine) -> Path | None:
    if engine.dialect.name != "sqlite":
        return None
    name = engine.url.database
    return Path(name) if name and name != ":memory:" else None


def _stamp_baseline(engine: Engine, tables: set[str], log: logging.Logger) -> None:
    missing = BASELINE_TABLES - tables
    if missing:
        raise SchemaError(
            f"the database has some of River's tables but not {sorted(missing)} and no "
            "alembic_version: it was not made by River; point c.RiverHost.db_url at River's "
            "database or an empty one"
        )
    from river_server import db

    metadata = target_metadata()
    absent = [metadata.tables[name] for name in OVERLAY_TABLES if name not in tables]
    if absent:
        db.Base.metadata.create_all(engine, tables=absent)
    with engine.begin() as connection:
        command.stamp(alembic_config(connection), BASELINE)
    log.info("River: database made before migrations; stamped as revision %s", BASELINE)


def _backup(path: Path, revision: str, log: logging.Logger) -> Path:
    """Copy the SQLite file (WAL checkpointed first, so the copy is whole) next to itself."""
    backup = path.with_name(f"{path.name}.{revision}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    shutil.copy2(path, backup)
    log.warning("River: backed up the database before upgrading it: %s", backup)
    return backup


def prepare(engine: Engine, upgrade: bool = False, log: logging.Logger | None = None) -> None:
    """Create, recognise or upgrade the schema, or raise SchemaError saying what to do."""
    log = log or logging.getLogger("river.host")
    head = head_revision()
    tables = set(inspect(engine).get_table_names())
    river_tables = tables & (BASELINE_TABLES | set(OVERLAY_TABLES))
    if "alembic_version" not in tables and river_tables:
        _stamp_baseline(engine, tables, log)
    current = current_revision(engine)
    if current == head:
        return
    if current is not None and not _known(current):
        raise SchemaError(
            f"the database is at schema revision {current}, which this River does not know "
            f"(it knows up to {head}): a newer River made or upgraded it. Run that newer "
            "River, or restore the backup taken before its upgrade (SQLite: the "
            "river.db.<revision>.<time>.bak file beside the database)"
        )
    if current is not None:
        sqlite_file = _sqlite_file(engine)
        if sqlite_file is not None:
            if sqlite_file.exists():
                with engine.begin() as connection:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                _backup(sqlite_file, current, log)
        elif not upgrade:
            raise SchemaError(
                f"the database is at schema revision {current}, older than this River's "
                f"{head}: back it up, then start the host once with `river host --upgrade-db` "
                "(or c.RiverHost.upgrade_db = True) to upgrade it"
            )
    _upgrade(engine, log)
    log.info("River: database schema %s -> %s", current or "empty", head)


def _upgrade(engine: Engine, log: logging.Logger) -> None:
    """`upgrade head`; on SQLite with foreign keys off meanwhile, as Alembic's batch mode
    needs: a migration that rebuilds a table drops the old one, and with foreign keys on
    that drop would cascade into (delete) the rows that refer to it. The pragma is a no-op
    inside a transaction, so it is set before the migration's transaction begins; dangling
    references found afterwards are logged (refusing to start would not mend them)."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                command.upgrade(alembic_config(connection), "head")
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        log.warning("River: rows with dangling references: %s", broken[:5])
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
