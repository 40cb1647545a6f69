"""The data plane's retention sweep (issue #17): with a short retention, a finished task's
pulled values and a blob nothing uses disappear from the host; a blob an unfinished task
pushed stays. Real host and runner processes, the sweep on its own timer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from river_magics import Client
from river_magics.dataplane import Frame, frame
from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"
RETENTION = 2.0  # seconds; the host sweeps every second then


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path,
        ("n1", "--cpus", "0"),
        extra_host_args=[f"--RiverHost.data_retention={RETENTION}"],
    ) as made:
        yield made


def test_expired_results_and_unused_blobs_go_and_a_live_tasks_blob_stays(
    cluster: Cluster,
) -> None:
    token = cluster.make_users("alice")["alice"]
    unused = frame(np.arange(10_000))
    needed = frame(np.arange(20_000))
    with Client(cluster.url, token) as client:
        client.push_values({"unused": unused})
        done = client.submit(script="s = 1", push={"x": frame(np.arange(30_000))}, pull=["s"])
        assert done.result(timeout=60) == {"s": 1}
        live = client.submit(script="import time; time.sleep(120)", push={"x": needed})
        try:
            with httpx.Client(base_url=cluster.url, **as_user(token)) as http:

                def held(*made: Frame) -> list[bool]:
                    # Asking (POST /data) is no use of a blob: reading it would keep it.
                    blobs = [{"digest": m.digest, "size": m.size} for m in made]
                    missing = http.post(f"{A}/data", json={"blobs": blobs}).json()["missing"]
                    return [m.digest not in missing for m in made]

                def result() -> int:
                    return http.get(f"{A}/tasks/{done.id}/pulled").status_code

                assert held(unused, needed) == [True, True] and result() == 200
                wait_for(
                    lambda: result() == 404 and held(unused) == [False],
                    30,
                    what="the sweep to remove the result and the unused blob",
                )
                assert live.status not in ("completed", "failed", "killed", "lost")
                assert held(needed) == [True]
        finally:
            live.kill()
    objects = {p.name for p in (cluster.root / "host" / "data" / "objects").glob("*/*")}
    assert unused.digest not in objects and needed.digest in objects
