"""The same bytes make the same log lines on the docker and the process backend
(river_runner.loglines): a tqdm progress bar, bytes that are not UTF-8, CRLF, a form feed,
U+2028 and lines longer than 64 KiB, through a real host, dockerd and runner processes."""

from __future__ import annotations

from typing import Any

from tests.cluster import Cluster
from tests.docker.conftest import PAIR_DOCK, PAIR_PROC, PYTHON_IMAGE
from tests.log_program import EXPECTED, PROGRAM, joined

# The shared docker pair (tests/docker/conftest.py): a docker and a process runner.
DOCK, PROC = PAIR_DOCK, PAIR_PROC


def _per_stream(lines: list[dict[str, Any]]) -> dict[str, list[tuple[str, bool]]]:
    """Each stream's lines in order (how the two streams interleave is up to timing)."""
    out: dict[str, list[tuple[str, bool]]] = {"stdout": [], "stderr": []}
    for line in lines:
        out[line["stream"]].append((line["text"], bool(line.get("continued"))))
    return out


def test_the_same_bytes_make_the_same_lines_on_both_backends(docker_pair: Cluster) -> None:
    both = docker_pair
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
