"""Fixtures: real clusters (Jupyter host + runner processes) in temporary directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cluster as cluster_module
from tests.cluster import Cluster, reachable_by_task_accounts

# Setups shared across modules (tests/shared.py): one emulated VM boot for the tests that
# only need a running guest, one JupyterLab host per identical browser-test configuration.
pytest_plugins = ["tests.shared", "tests.vm_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the database every test cluster's host uses: SQLite in its data dir, or a "
        "fresh database per cluster on one throwaway PostgreSQL server (tests/pg.py)",
    )


@pytest.fixture(scope="session", autouse=True)
def _cluster_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Under --db postgresql: one PostgreSQL server for the session, stopped and removed
    at its end; every Cluster gets a database of its own on it."""
    choice = request.config.getoption("--db")
    if choice != "postgresql":
        yield choice
        return
    from tests.pg import PgServer

    server = PgServer()
    server.start()
    cluster_module.DATABASE_FOR = lambda _root: server.create_database()
    try:
        yield choice
    finally:
        cluster_module.DATABASE_FOR = None
        cluster_module._DATABASES.clear()
        server.stop()


@pytest.fixture(autouse=True)
def _task_accounts_reach_tmp_path(request: pytest.FixtureRequest) -> None:
    """Gate and input files a test puts in tmp_path must be visible to tasks, which a root
    runner runs as `nobody` (pytest makes tmp_path 0700)."""
    if "tmp_path" in request.fixturenames:
        reachable_by_task_accounts(request.getfixturevalue("tmp_path"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A started host with no runners; each test adds the runners it needs."""
    c = Cluster(tmp_path)
    c.start_host()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def solo_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host with a one-core runner 'solo', shared by a module's read-mostly tests."""
    c = Cluster(tmp_path_factory.mktemp("solo"))
    c.start_host()
    try:
        c.start_runner("solo", "--cpus", "0")
        yield c
    finally:
        c.close()
