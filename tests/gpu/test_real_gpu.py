"""The GPU path on a real NVIDIA GPU: the runner's NVML inventory, placement and what a
task sees through CUDA. Skipped where NVML finds no GPU (CI has none); run on a GPU machine
with `python -m pytest -m gpu tests/gpu` (bench/gpu_check.sh does, on the device machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, running_cluster
from tests.gpu.cuda_probe import PROBE_SCRIPT, parse_probe, real_gpus

GPUS = real_gpus()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not GPUS, reason="NVML finds no GPU on this machine"),
]


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A host and one process runner that reads the machine's real NVML (no --fake-gpus)."""
    with running_cluster(tmp_path_factory.mktemp("gpu"), ("gpu", "--cpus", "0-1")) as cluster:
        yield cluster


def _lines(cluster: Cluster, task_id: str) -> list[str]:
    return [line["text"] for line in cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]]


def test_the_node_reports_the_real_gpus(gpu_cluster: Cluster) -> None:
    node = gpu_cluster.wait_node("gpu", "online")
    reported = node["gpus"]
    assert [(g["index"], g["name"], g["uuid"], g["memory"]) for g in reported] == [
        (g["index"], g["name"], g["uuid"], g["memory"]) for g in GPUS
    ]
    for gpu in reported:
        assert gpu["uuid"].startswith("GPU-") and gpu["memory"] > 1024**3
        assert gpu["memory_used"] is not None and 0 <= gpu["memory_used"] <= gpu["memory"]
        assert gpu["temperature"] is None or 0 < gpu["temperature"] < 120
        assert gpu["util"] is None or 0 <= gpu["util"] <= 100
    assert node["free"]["gpus"] == [g["index"] for g in GPUS]


def test_a_task_with_one_gpu_sees_exactly_that_gpu(gpu_cluster: Cluster) -> None:
    task = gpu_cluster.submit(kind="python", cores=1, gpus=1, script=PROBE_SCRIPT)
    done = gpu_cluster.wait_task(task["id"], {"completed", "failed"}, timeout=120)
    probe = parse_probe(_lines(gpu_cluster, task["id"]))
    print("one-GPU task's probe:", probe)  # kept in the report (-rA) as the record
    assert done["state"] == "completed", probe
    (placed,) = done["gpus"]
    expected = next(g for g in GPUS if g["index"] == placed)
    assert probe["init"] == 0 and probe["count"] == 1, probe
    assert probe["devices"] == [{"name": expected["name"], "uuid": expected["uuid"]}]
    assert probe["visible"] == str(placed) and probe["order"] == "PCI_BUS_ID"


def test_a_task_without_gpus_sees_none(gpu_cluster: Cluster) -> None:
    task = gpu_cluster.submit(kind="python", cores=1, script=PROBE_SCRIPT)
    done = gpu_cluster.wait_task(task["id"], {"completed", "failed"}, timeout=120)
    probe = parse_probe(_lines(gpu_cluster, task["id"]))
    print("no-GPU task's probe:", probe)
    assert done["state"] == "completed" and done["gpus"] == [], probe
    # CUDA_ERROR_NO_DEVICE (100) from cuInit, or no device counted: either way, no GPU.
    assert probe["count"] == 0 and probe["visible"] == "", probe


def test_a_second_task_for_a_held_gpu_waits_until_it_is_free(
    gpu_cluster: Cluster, tmp_path: Path
) -> None:
    everything = len(GPUS)
    holder = gpu_cluster.submit(
        kind="python", cores=1, gpus=everything, script="import time\ntime.sleep(300)"
    )
    gpu_cluster.wait_task(holder["id"], "running", timeout=60)
    waiter = gpu_cluster.submit(kind="python", cores=1, gpus=1, script=PROBE_SCRIPT)
    try:
        queued = gpu_cluster.wait_task(waiter["id"], "queued", timeout=30)
        assert "gpu" in (queued["wait_reason"] or "").lower(), queued
        gpu_cluster.request("POST", f"/river/api/tasks/{holder['id']}/kill")
        gpu_cluster.wait_task(holder["id"], "killed", timeout=60)
        done = gpu_cluster.wait_task(waiter["id"], {"completed", "failed"}, timeout=120)
        probe = parse_probe(_lines(gpu_cluster, waiter["id"]))
        assert done["state"] == "completed" and probe["count"] == 1, probe
    finally:
        for task in (holder, waiter):
            gpu_cluster.request("POST", f"/river/api/tasks/{task['id']}/kill")
