"""Idle culling reaches VM VPSes (issue 19): an idle guest is stopped with a snapshot.

The runner reports a VM's CPU as its QEMU's (the vCPUs are QEMU's threads), so the host's
culler judges it like a container VPS: busy while the emulated guest boots, idle once it
sits at its login prompt, then stopped through the normal stop path, whose snapshot of a
VM's disk is taken after the clean shutdown. One boot (TCG): that the restart boots the
newest snapshot with the files in it is tests/vm/test_vm_lifecycle.py's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_runner.backends.vm import POWERDOWN_SECONDS
from tests.cluster import Cluster, running_cluster, wait_for
from tests.vm.conftest import IMAGE
from tests.vm.test_vm_lifecycle import BOOT_SECONDS, qemu_pids, ssh

API = "/river/api/vps"
NODE = "idlevm"
WINDOW = 20  # seconds under the threshold before the cull
# An emulated guest idles at a few percent of a core; its boot runs at ~100 %.
THRESHOLD = 50

pytestmark = pytest.mark.timeout(BOOT_SECONDS + 240)


@pytest.fixture(scope="module")
def icluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")
    root = tmp_path_factory.mktemp("vmcull")
    runner = (NODE, "--vm-accel", "tcg", "--vm-image", str(IMAGE))
    host_args = [
        f"--RiverHost.idle_cull_window={WINDOW}s",
        f"--RiverHost.idle_cpu_threshold={THRESHOLD}",
    ]
    with running_cluster(
        root, runner, heartbeat_interval=1.0, heartbeat_misses=20, extra_host_args=host_args
    ) as cluster:
        yield cluster


@pytest.fixture
def vm(icluster: Cluster, tmp_path: Path) -> Iterator[dict[str, Any]]:
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G", "ssh": "generate"}
    answer = icluster.request("POST", API, json=body)
    assert answer.status_code == 201, answer.text
    created = answer.json()["vps"]
    key = tmp_path / "key"
    key.write_text(created["private_key"])
    key.chmod(0o600)
    vm = {
        **created, "key_file": str(key), "login": f"{created['owner']}+{created['id']}",
        "dir": Path(icluster.runners[NODE].data_dir) / "vms" / created["id"],
    }  # fmt: skip
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
    vm["ssh_proxy_port"] = running["ssh_proxy_port"]
    # The guest boots at ~100 % of a core: not idle, so still running once SSH answers.
    wait_for(
        lambda: ssh(vm, vm["login"], "echo kept > f; sync; echo ok", timeout=30) == "ok\n",
        BOOT_SECONDS,
        interval=2.0,
        what=f"sshd of VM VPS {vm['id']} ({vm.get('last_stderr')})",
    )
    culled = wait_for(
        lambda: (v := current())["state"] == "stopped" and v,
        WINDOW + POWERDOWN_SECONDS + 60,
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
