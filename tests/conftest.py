"""Fixtures: real clusters (Jupyter host + runner processes) in temporary directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster


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
