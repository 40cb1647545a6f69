"""Schema migrations (river_server/schema.py): upgrades keep every row, a database newer than
the code stops the host, and the models never drift from the migrations.

The database is the session's (`--db sqlite` or `--db postgresql`), so both backends run
these tests in CI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from river_server import db, schema
from river_server.overlay import IpReservation, OverlayAllocation
from tests.cluster import Cluster, GaveUp, database_url

TASK_ID = 7_300_000_000_000_000_001  # a snowflake beyond 32 bits


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the session's kind."""
    (tmp_path / "host").mkdir()
    yield database_url(tmp_path)


def _engine(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(url)


def _at_revision(url: str, revision: str) -> None:
    engine = _engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(schema.alembic_config(connection), revision)
    finally:
        engine.dispose()


def _fill(url: str) -> None:
    """One of everything a lab's database holds."""
    engine = _engine(url)
    sessions = db.make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            # Core inserts naming only revision 0001's columns: users and tokens have grown.
            user_id = session.execute(
                sqlalchemy.insert(db.User.__table__).values(
                    name="ada", role="operator", created_at=1.0
                )
            ).inserted_primary_key[0]
            session.execute(
                sqlalchemy.insert(db.ApiToken.__table__).values(
                    user_id=user_id, token_hash="a" * 128, label="laptop", created_at=1.0,
                    revoked=False,
                )
            )  # fmt: skip
            group = db.Group(name="vision", max_cores=64, max_gpus=4)
            session.add(group)
            session.flush()
            # Rows that refer to users: a migration that rebuilds `users` (0011) must keep
            # them (with SQLite's foreign keys on, dropping the old table would cascade).
            session.add(db.GroupMember(group_id=group.id, user_id=user_id))
            session.add(db.UserQuota(user_id=user_id, max_cores=8))
            session.add(
                db.Node(
                    name="gpu1",
                    url="http://127.0.0.1:8001",
                    credential_hash="c" * 128,
                    state="online",
                    cpus=[0, 1, 2, 3],
                    numa=[{"node": 0, "cpus": [0, 1, 2, 3]}],
                    memory=256 * 1024**3,
                    gpus=[{"index": 0, "name": "H200"}],
                    metrics={"cpu": 12.5, "gpus": [{"util": 90}]},
                )
            )
            # A Core insert naming only revision 0001's columns: the model has grown since.
            session.execute(
                sqlalchemy.insert(db.Task.__table__).values(
                    id=TASK_ID,
                    name="sweep-0",
                    owner="ada",
                    kind="python",
                    spec={"script": "print('é')", "env": {"A": "1"}},
                    request={"cores": 2, "memory": 4 * 1024**3},
                    state="completed",
                    node="gpu1",
                    cpus=[0, 1],
                    gpus=[0],
                    memory=4 * 1024**3,
                    exit_code=0,
                    submitted_at=1.0,
                    finished_at=1.5,
                )
            )
            for state in ("queued", "assigning", "running", "completed"):
                session.add(db.TaskTransition(task_id=TASK_ID, state=state, detail=state))
            session.add(OverlayAllocation(node="gpu1", runner_index=1, underlay_ip="10.0.0.2"))
            session.add(
                IpReservation(
                    token_hash="t" * 128, ip="10.128.64.2", node="gpu1", owner="ada",
                    expires_at=9e9, task_id=TASK_ID,
                )
            )  # fmt: skip
    finally:
        engine.dispose()


def _dump(url: str) -> dict[str, list[dict]]:
    """Every row of every table, as column -> value."""
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            names = [
                t
                for t in sqlalchemy.inspect(connection).get_table_names()
                if t != "alembic_version"
            ]
            return {
                name: sorted(
                    (
                        dict(row._mapping)
                        for row in connection.exec_driver_sql(f'select * from "{name}"')
                    ),
                    key=lambda row: repr(sorted(row.items())),
                )
                for name in names
            }
    finally:
        engine.dispose()


def _kept(before: dict[str, list[dict]], after: dict[str, list[dict]]) -> None:
    """Every table and row of `before` is in `after` with the same values; columns that
    later revisions added are the only difference, and they are empty (NULL)."""
    assert set(before) <= set(after)
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old, new in zip(rows, after[table], strict=True):
            assert {k: new[k] for k in old} == old, table
            assert all(new[k] is None for k in set(new) - set(old)), table


def _indexes(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return {i["name"] for i in sqlalchemy.inspect(engine).get_indexes("tasks")}
    finally:
        engine.dispose()


def _upgrade_db(url: str) -> bool:
    """What the host would need to upgrade this database: only PostgreSQL needs asking."""
    return not url.startswith("sqlite")


def test_an_0001_database_with_data_is_upgraded_to_head_and_loses_nothing(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    _at_revision(url, "0001")
    _fill(url)
    before = _dump(url)
    kinds = ("users", "api_tokens", "group_members", "user_quotas", "tasks", "nodes")
    assert all(before[t] for t in (*kinds, "task_transitions"))
    assert "ix_tasks_owner" in _indexes(url)

    with caplog.at_level(logging.INFO, logger="river.test"):
        engine = db.make_engine(url, upgrade=_upgrade_db(url), log=logging.getLogger("river.test"))
    engine.dispose()

    assert schema.current_revision(_engine(url)) == schema.head_revision()
    _kept(before, _dump(url))
    assert "ix_tasks_owner_id" in _indexes(url) and "ix_tasks_owner" not in _indexes(url)
    if url.startswith("sqlite"):
        # The file was copied beside itself first, and the log says where.
        database = Path(url.removeprefix("sqlite:///"))
        backups = list(database.parent.glob(f"{database.name}.0001.*.bak"))
        assert len(backups) == 1, backups
        assert str(backups[0]) in caplog.text
        assert _dump(f"sqlite:///{backups[0]}") == before  # the backup is whole


def test_a_database_from_before_migrations_is_stamped_0001_and_upgraded(url: str) -> None:
    # What create_all made: the 0001 tables, no alembic_version.
    _at_revision(url, "0001")
    _fill(url)
    engine = _engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("drop table alembic_version")
    engine.dispose()
    before = _dump(url)

    db.make_engine(url, upgrade=_upgrade_db(url)).dispose()

    assert schema.current_revision(_engine(url)) == schema.head_revision()
    _kept(before, _dump(url))


def test_a_foreign_database_is_not_stamped(url: str) -> None:
    engine = _engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("create table users (id integer primary key)")
    engine.dispose()
    with pytest.raises(schema.SchemaError, match="not made by River"):
        db.make_engine(url)


def test_postgresql_is_upgraded_only_when_asked(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("PostgreSQL only (--db postgresql); SQLite upgrades with a backup")
    _at_revision(url, "0001")
    _fill(url)
    with pytest.raises(schema.SchemaError, match="--upgrade-db"):
        db.make_engine(url)
    assert schema.current_revision(_engine(url)) == "0001"  # untouched
    db.make_engine(url, upgrade=True).dispose()
    assert schema.current_revision(_engine(url)) == schema.head_revision()


def test_the_models_and_the_migrations_agree(url: str) -> None:
    """A model change without its migration fails here (autogenerate would emit a diff)."""
    db.make_engine(url).dispose()
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diff = compare_metadata(context, schema.target_metadata())
    finally:
        engine.dispose()
    assert diff == [], f"models differ from migrations; add one (docs/database.md): {diff}"


def test_the_host_refuses_a_database_newer_than_its_code(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    (tmp_path / "host").mkdir()
    db.make_engine(cluster.db_url).dispose()
    engine = _engine(cluster.db_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("update alembic_version set version_num = '0099'")
    engine.dispose()
    try:
        with pytest.raises(GaveUp, match="host exited with 3"):
            cluster.start_host(timeout=60)
    finally:
        cluster.close()
    log = (tmp_path / "host.log").read_text()
    assert "schema revision 0099, which this River does not know" in log, log[-2000:]
    assert "Run that newer River" in log


def test_the_host_keeps_its_data_in_the_chosen_database(cluster: Cluster) -> None:
    """`--db postgresql` really moves the host: what the API writes is in that database,
    and no SQLite file appears beside it."""
    cluster.ok("POST", "/river/api/users", json={"name": "witness", "role": "viewer"})
    engine = _engine(cluster.db_url)
    try:
        with engine.connect() as connection:
            names = connection.exec_driver_sql("select name from users").scalars().all()
    finally:
        engine.dispose()
    assert "witness" in names
    sqlite_file = cluster.root / "host" / "river.db"
    assert sqlite_file.exists() == cluster.db_url.startswith("sqlite")


def _new_user(sessions: sqlalchemy.orm.sessionmaker, name: str) -> int:
    with sessions.begin() as session:
        user = db.User(name=name, role="user")
        session.add(user)
        session.flush()
        return user.id


@pytest.mark.parametrize("start", ["empty", "0010"])
def test_a_deleted_users_id_is_never_given_to_a_new_user(url: str, start: str) -> None:
    """Task uids derive from the user's number: a reused id would give a new user the files
    a deleted one left on the runners. Fresh databases and ones upgraded from 0010 alike."""
    if start != "empty":
        _at_revision(url, start)
    engine = db.make_engine(url, upgrade=_upgrade_db(url))  # the host's engine, keys on
    sessions = db.make_sessionmaker(engine)
    try:
        _new_user(sessions, "ada")
        gone = _new_user(sessions, "bob")  # the newest id: what SQLite would hand out again
        with sessions.begin() as session:
            session.execute(sqlalchemy.delete(db.User).where(db.User.id == gone))
        assert _new_user(sessions, "cyd") > gone
    finally:
        engine.dispose()
