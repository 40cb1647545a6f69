"""Setups shared by several integration modules (tests/shared.py; docs/testing.md).

`bare_host`: one host with no runners for the modules that only probe the API's answers
(request and query contracts, the schemathesis fuzz). Nothing submitted there ever runs;
each host start costs 10-15 s on CI's loaded cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster
from tests.shared import register, shared

BARE_HOST = register("bare_host")


@pytest.fixture(scope="module")
def bare_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A started host without runners, shared by its users (the fuzz, which leaves
    arbitrary records behind, is marked uses_up("bare_host") and runs last)."""

    def start(stack: contextlib.ExitStack) -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("bare"))
        stack.callback(cluster.close)
        cluster.start_host()
        return cluster

    with shared(BARE_HOST, start) as cluster:
        yield cluster
