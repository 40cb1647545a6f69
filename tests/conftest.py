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
