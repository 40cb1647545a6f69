"""Idle culling reaches VM VPSes (issue 19): a VM judged idle is stopped with a snapshot.

The runner reports a VM's CPU as its QEMU's (the vCPUs are QEMU's threads), so the host's
culler judges it like a container VPS and stops it through the normal stop path, whose
snapshot of a VM's disk is taken once QEMU has exited. The threshold here is above what one
emulated vCPU can use, so the VM counts as idle from its first figure whatever the load of
this shared 2-core machine (a booting TCG guest was seen under 50 % of a core here); the
busy side of the judgement is the containers' (tests/docker/test_idle_cull_docker.py). No
SSH wait: the cull may come while the guest boots (QEMU is then quit after the ACPI bound),
and that the restart boots the newest snapshot with the files in it is
tests/vm/test_vm_lifecycle.py's. One VM start.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_runner.backends.vm import POWERDOWN_SECONDS
from tests.cluster import Cluster, running_cluster, wait_for
from tests.vm.conftest import IMAGE
from tests.vm.test_vm_lifecycle import qemu_pids

API = "/river/api/vps"
NODE = "idlevm"
WINDOW = 10  # seconds under the threshold before the cull
POWERDOWN = 3  # seconds: the runner's --vm-powerdown-timeout here
THRESHOLD = 1000  # percent of one core: more than a 1-vCPU VM uses, so always "idle"

pytestmark = pytest.mark.timeout(POWERDOWN_SECONDS + 240)


@pytest.fixture(scope="module")
def icluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("vmcull")
    # The cull usually comes while the guest boots, and a booting guest ignores the ACPI
    # button: QEMU is quit after the powerdown bound (60 s by default; either way the same
    # stop-and-snapshot path), so a short one here.
    runner = (NODE, "--vm-accel", "tcg", "--vm-image", str(IMAGE))
    runner += ("--vm-powerdown-timeout", str(POWERDOWN))
    host_args = [
        f"--RiverHost.idle_cull_window={WINDOW}s",
        f"--RiverHost.idle_cpu_threshold={THRESHOLD}",
    ]
    with running_cluster(
        root, runner, heartbeat_interval=1.0, heartbeat_misses=20, extra_host_args=host_args
    ) as cluster:
        yield cluster


@pytest.fixture
def vm(icluster: Cluster) -> Iterator[dict[str, Any]]:
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G"}
    answer = icluster.request("POST", API, json=body)
    assert answer.status_code == 201, answer.text
    created = answer.json()["vps"]
    vm = {**created, "dir": Path(icluster.runners[NODE].data_dir) / "vms" / created["id"]}
    try:
        yield vm
    finally:
        icluster.request("DELETE", f"{API}/{vm['id']}")
        for pid in qemu_pids(vm["id"]):  # only this test's VM, if the delete did not end it
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_an_idle_vm_is_stopped_with_a_snapshot_of_its_disk(
    icluster: Cluster, vm: dict[str, Any]
) -> None:
    def current() -> dict[str, Any]:
        return icluster.get(f"{API}/{vm['id']}")["vps"]

    running = wait_for(lambda: (v := current())["state"] == "running" and v, 60, what="running")
    assert running["vm"] and running["snapshots"] == []
    culled = wait_for(
        lambda: (v := current())["state"] == "stopped" and v,
        WINDOW + POWERDOWN + 30,  # less than the default 60 s bound: the flag is in use
        interval=1.0,
        what="the idle VM to be culled",
    )
    assert culled["reason"].startswith("idle for") and "stopped with a snapshot" in culled["reason"]
    assert culled["snapshots"] == [f"river-vps/{vm['id']}:1"]
    wait_for(lambda: not qemu_pids(vm["id"]), 30, what="QEMU to exit after the cull")
    shown = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(vm["dir"] / "disk.qcow2")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert [s["name"] for s in json.loads(shown.stdout)["snapshots"]] == ["river-1"]
