"""The data plane in containers (issue #17): a python task with --image gets its pushed
values from the runner's cache and sends its pulled values back, as a process task does.
Real dockerd, real host and docker runner; bytearrays travel out-of-band (pickle 5)."""

from __future__ import annotations

import hashlib
import os
import re

from river_magics import Client
from tests.cluster import Cluster
from tests.docker.conftest import PAIR_DOCK, PYTHON_IMAGE


def test_an_image_task_reads_pushed_values_and_sends_pulled_ones(docker_pair: Cluster) -> None:
    payload = bytearray(os.urandom(8 * 1024 * 1024))
    cluster = docker_pair  # the shared docker pair (tests/docker/conftest.py)
    with Client(cluster.url, cluster.token) as client:
        handle = client.submit(
            script="import hashlib, os\nh = hashlib.sha256(b).hexdigest()\n"
            "inside = os.environ['RIVER_DATA_IN']\nback = b[:1000]",
            image=PYTHON_IMAGE,
            target=PAIR_DOCK,
            push={"b": payload},
            pull=["h", "inside", "back"],
        )
        values = handle.result(timeout=120)
    assert values["h"] == hashlib.sha256(payload).hexdigest()
    assert values["back"] == payload[:1000]
    assert values["inside"].startswith('{"b": "/river/data/in/')  # a path inside the container
    log = (cluster.root / "host.log").read_text(errors="replace")
    sizes = [int(n) for n in re.findall(r"data plane: received blob \w+ \((\d+) bytes\)", log)]
    assert any(n >= len(payload) for n in sizes), sizes  # pushed as a blob, not in the script
