"""A VM VPS that asks for GPUs goes through the VFIO rules for real (issue 19).

This machine has no IOMMU (no /sys/kernel/iommu_groups/*) and no GPU, so the runner is
started with fake GPUs (their NVML PCI bus ids point at no real device) and VMs under TCG:
the VM VPS is placed on a GPU, the runner's vm backend maps it to its PCI address, asks
river_runner/vfio.py against the real /sys, and the start fails with the reason, before
QEMU runs. The bind/unbind path itself is tests/unit/test_vfio.py's, on a fake sysfs tree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from river_runner.vfio import iommu_present
from tests.cluster import Cluster, running_cluster, wait_for
from tests.vm.conftest import IMAGE
from tests.vm.test_vm_lifecycle import qemu_pids

API = "/river/api/vps"
NODE = "gpuvm"

pytestmark = pytest.mark.skipif(
    iommu_present(Path("/sys")), reason="this machine has an IOMMU: the refusal is not expected"
)


@pytest.fixture(scope="module")
def gcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    runner = (NODE, "--vm-accel", "tcg", "--vm-image", str(IMAGE), "--fake-gpus", "1")
    with running_cluster(tmp_path_factory.mktemp("vmgpu"), runner) as cluster:
        yield cluster


def test_a_vm_asking_for_a_gpu_fails_with_the_no_iommu_reason(gcluster: Cluster) -> None:
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G", "gpus": 1}
    answer = gcluster.request("POST", API, json=body)
    assert answer.status_code == 201, answer.text
    vps_id = answer.json()["vps"]["id"]
    try:
        failed = wait_for(
            lambda: (v := gcluster.get(f"{API}/{vps_id}")["vps"])["state"] == "failed" and v,
            60,
            what=f"VM VPS {vps_id} to fail",
        )
        assert failed["node"] == NODE and failed["gpus"] == [0]  # placed on the GPU
        assert "no IOMMU on this runner" in failed["reason"]
        assert "intel_iommu=on" in failed["reason"]  # what to fix
        assert qemu_pids(vps_id) == []  # refused before QEMU ran
    finally:
        gcluster.request("DELETE", f"{API}/{vps_id}")
