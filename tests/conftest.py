"""Fixtures: real clusters (Jupyter host + runner processes) in temporary directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, reachable_by_task_accounts


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
