"""The same bytes make the same log lines on the docker and the process backend
(river_runner.loglines): a tqdm progress bar, bytes that are not UTF-8, CRLF, a form feed,
U+2028 and lines longer than 64 KiB, through a real host, dockerd and runner processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.docker.conftest import PYTHON_IMAGE, remove_containers
from tests.log_program import EXPECTED, PROGRAM, joined

RUN = uuid.uuid4().hex[:6]
DOCK, PROC = f"ldock-{RUN}", f"lproc-{RUN}"


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("loglines"), heartbeat_interval=1.0)
    cluster.start_host()
    try:
        cluster.start_runner(DOCK, "--backend", "docker", "--default-image", PYTHON_IMAGE)
        cluster.start_runner(PROC, "--backend", "process")
        yield cluster
    finally:
        cluster.close()
        remove_containers(docker_client, DOCK)


def _per_stream(lines: list[dict[str, Any]]) -> dict[str, list[tuple[str, bool]]]:
    """Each stream's lines in order (how the two streams interleave is up to timing)."""
    out: dict[str, list[tuple[str, bool]]] = {"stdout": [], "stderr": []}
    for line in lines:
        out[line["stream"]].append((line["text"], bool(line.get("continued"))))
    return out


def test_the_same_bytes_make_the_same_lines_on_both_backends(both: Cluster) -> None:
    lines = {}
    for node in (DOCK, PROC):
        image = {"image": PYTHON_IMAGE} if node == DOCK else {}
        task = both.submit(kind="python", script=PROGRAM, target=node, **image)
        final = both.wait_task(task["id"], {"completed", "failed"}, timeout=90)
        assert final["state"] == "completed" and final["node"] == node, final
        lines[node] = both.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
    assert _per_stream(lines[DOCK]) == _per_stream(lines[PROC])
    assert joined(lines[DOCK]) == EXPECTED
    assert any(line.get("continued") for line in lines[DOCK])
