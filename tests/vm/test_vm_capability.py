"""Which runners run VMs, and where a VM VPS goes (issue 19).

A real host with three runners: one without the VM option, one asked for KVM (which on
these nested machines opens but does not boot a guest: the probe must say so), and one
started with `--vm-accel tcg` (emulation, chosen explicitly). A VM request is refused with
every node's reason while no runner can run VMs; once the TCG runner is up it lands there,
runs as a real QEMU process over a qcow2 overlay, and deleting it leaves neither.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, running_cluster, wait_for
from tests.vm.conftest import IMAGE

API = "/river/api/vps"


def qemu_pids(vps_id: str) -> list[int]:
    """QEMU processes of this VPS (the backend names each `-name river-vps-<id>`)."""
    found = subprocess.run(
        ["pgrep", "-f", f"river-vps-{vps_id} -machine"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("vm"), ("plain",)) as cluster:
        yield cluster


def nodes(cluster: Cluster) -> dict[str, dict]:
    return {n["name"]: n for n in cluster.get("/river/api/nodes")["nodes"]}


def test_vm_capability_refusal_and_placement(vcluster: Cluster) -> None:
    plain = nodes(vcluster)["plain"]["vm"]
    assert plain["ok"] is False and "--vm-accel" in plain["reason"]

    vcluster.start_runner(
        "kvm", "--vm-accel", "kvm", "--vm-probe-timeout", "8", "--vm-image", str(IMAGE)
    )
    kvm = nodes(vcluster)["kvm"]["vm"]
    # The probe booted (or tried to boot) a guest: a device that merely opens is not enough.
    assert kvm["ok"] is False and kvm["accel"] == "kvm" and "kvm" in kvm["reason"]

    refused = vcluster.request("POST", API, json={"vm": True, "cores": 1, "memory": "1G"})
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "no node here runs virtual machines" in message
    assert f"plain: {plain['reason']}" in message and f"kvm: {kvm['reason']}" in message

    bad = vcluster.request("POST", API, json={"vm": True, "image": "x"})
    assert bad.status_code == 400 and "container VPSes" in bad.json()["message"]

    runner = vcluster.start_runner("emu", "--vm-accel", "tcg", "--vm-image", str(IMAGE))
    emu = nodes(vcluster)["emu"]["vm"]
    assert emu == {"ok": True, "reason": "a guest kernel booted under tcg", "accel": "tcg"}

    vps = vcluster.ok(
        "POST", API, json={"vm": True, "cores": 1, "memory": "1G", "disk": "4G", "ssh": "generate"}
    )["vps"]
    vps_id = vps["id"]
    disk = Path(runner.data_dir) / "vms" / vps_id / "disk.qcow2"
    try:
        assert vps["vm"] is True and vps["disk"] == 4 * 1024**3
        running = wait_for(
            lambda: (v := vcluster.get(f"{API}/{vps_id}")["vps"])["state"] == "running" and v,
            timeout=60,
            what="the VM VPS to run",
        )
        assert running["node"] == "emu"  # the only node whose runner runs VMs
        assert len(qemu_pids(vps_id)) == 1 and disk.is_file()
        info = subprocess.run(
            ["qemu-img", "info", "-U", str(disk)], capture_output=True, text=True, check=True
        ).stdout
        assert "backing file:" in info and "4 GiB" in info  # a sized copy-on-write overlay
    finally:
        vcluster.ok("DELETE", f"{API}/{vps_id}")
    wait_for(lambda: not qemu_pids(vps_id), timeout=30, what="QEMU to end")
    wait_for(lambda: not disk.parent.exists(), timeout=30, what="the VM's disk to go")
