"""A runner on the host's machine takes pushed blobs by hard link (river_runner/samehost.py).

Real host and runner processes on this machine (tests/cluster.py); the runner runs tasks
under another account (it is root here), so it may link: the cached file is the host's
stored file, nothing crosses the socket, and the digest is still checked.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from river_magics import Client
from river_magics.dataplane import frame
from river_runner.data import cache_dir_name
from river_runner.data_out import memory_dir
from tests.cluster import Cluster, running_cluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tasks under another account")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("data-link"))
    with running_cluster(root, ("n1", "--cpus", "0")) as made:
        yield made


@pytest.fixture(scope="module")
def alice(cluster: Cluster) -> str:
    return cluster.make_users("alice")["alice"]


def _stored(cluster: Cluster, digest: str) -> Path:
    return next((cluster.root / "host" / "data" / "objects").glob(f"*/{digest}"))


def _cached(cluster: Cluster, digest: str) -> Path:
    root = Path(tempfile.gettempdir()) / cache_dir_name("n1", cluster.root / "runners" / "n1")
    return root / "cache" / digest


def _fetches(cluster: Cluster, how: str) -> int:
    log = (cluster.root / "runner-n1.log").read_text(errors="replace")
    return len(re.findall(rf"stage=fetch bytes=\d+ seconds=[\d.]+ how={how}", log))


def test_a_pushed_array_is_linked_from_the_host_not_sent(cluster: Cluster, alice: str) -> None:
    array = np.random.default_rng(3).random(8 * 1024**2 // 8)  # 8 MiB
    made = frame(array, "x")
    with Client(cluster.url, alice) as client:
        result = client.submit(script="y = x * 2", push={"x": made}, pull=["y"]).result(120)
    np.testing.assert_array_equal(result["y"], array * 2)
    # One file: the runner's cache entry is the host's stored blob (same inode).
    assert (
        _cached(cluster, made.digest).stat().st_ino == _stored(cluster, made.digest).stat().st_ino
    )
    assert _fetches(cluster, "link") == 1 and _fetches(cluster, "http") == 0


def test_a_task_writes_its_pulled_values_in_memory_and_the_runner_clears_them(
    cluster: Cluster, alice: str
) -> None:
    """A result lives only until sent: in /dev/shm, not dirtying the disk
    (river_runner/data_out.py), and gone once the host has it."""
    with Client(cluster.url, alice) as client:
        result = client.submit(
            script="import os\nwhere = os.environ['RIVER_DATA_OUT']", pull=["where"]
        ).result(120)
    where = Path(result["where"])
    home = memory_dir("n1", cluster.root / "runners" / "n1")
    assert where.parent.parent == home, where
    assert not where.parent.exists()


def test_a_linked_blob_that_rotted_on_the_host_fails_the_task_as_damaged(
    cluster: Cluster, alice: str
) -> None:
    """The link spares the copy, not the check: the runner still hashes what it links."""
    made = frame(np.arange(300_000), "x")
    with Client(cluster.url, alice) as client:
        client.push_values({"x": made})
        stored = _stored(cluster, made.digest)
        with open(stored, "r+b") as handle:  # the host's copy rots on disk
            handle.seek(made.size // 2)
            handle.write(b"rot")
        try:
            final = client.submit(script="y = 1", push={"x": made}, pull=["y"]).wait(timeout=60)
        finally:
            stored.unlink()
    assert final["state"] == "failed", final
    assert "damaged" in final["reason"], final
    assert not _cached(cluster, made.digest).exists()
