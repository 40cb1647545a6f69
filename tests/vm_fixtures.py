"""One booted VM for the tests that only need "a running VM of a user" (docs/testing.md).

An emulated (TCG) guest takes about a minute to boot on a 2-core CI machine, so the tests
whose subject is not the boot itself share one: erin's VM VPS (generated key) on a TCG
runner "emu", with frank, who owns nothing. It spans modules because its users live in
two packages (tests/vm/test_vm_lifecycle.py, tests/security/test_vm_guest_network.py):
tests/shared.py runs them back to back and closes it after the last, so the guest is up
only while they run. Tests that boot, stop or delete a VM as their subject may use it only last
(test_vm_lifecycle's stop/restart and delete steps); anything else boots its own.

Registered from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, as_user, running_cluster, wait_for
from tests.shared import register, shared

# RIVER_VM_IMAGE: an image built elsewhere (RIVER_IMAGE_CACHE=... .ci/build-vm-image.sh),
# e.g. to try a change to the image without replacing the machine's shared one.
IMAGE = Path(os.environ.get("RIVER_VM_IMAGE") or "/var/cache/river-images/river-vm")
API = "/river/api/vps"
NODE = "emu"
BOOT_SECONDS = 300  # an emulated guest on a busy 2-core CI machine: create -> SSH answers
SHARED = register("shared_vm")


def qemu_pids(vps_id: str) -> list[int]:
    """QEMU processes of this VPS (the backend names each `-name river-vps-<id>`)."""
    found = subprocess.run(
        ["pgrep", "-f", f"river-vps-{vps_id} -machine"], capture_output=True, text=True
    )
    return [int(p) for p in found.stdout.split()]


def ssh(vm: dict[str, Any], login: str, command: str, timeout: float = 60) -> str | None:
    """`command`'s output through River's SSH proxy with the real OpenSSH client; None
    when nothing answered in time (a paused guest never sends its banner)."""
    try:
        result = subprocess.run(
            ["ssh", "-p", str(vm["ssh_proxy_port"]), "-i", vm["key_file"],
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=10", f"{login}@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    vm["last_stderr"] = result.stderr
    return result.stdout if result.returncode == 0 else None


def wait_ssh(vm: dict[str, Any], timeout: float = BOOT_SECONDS) -> None:
    """The guest boots after QEMU starts: retry until sshd answers (bounded)."""
    wait_for(
        lambda: ssh(vm, vm["login"], "echo ready", timeout=30) == "ready\n",
        timeout,
        interval=2.0,
        what=f"sshd of VM VPS {vm['id']} ({vm.get('last_stderr')})",
    )


def state(cluster: Cluster, vm: dict[str, Any], want: str, timeout: float = 60) -> dict:
    def check() -> dict[str, Any] | None:
        vps = cluster.get(f"{API}/{vm['id']}", **as_user(vm["token"]))["vps"]
        return vps if vps["state"] == want else None

    return wait_for(check, timeout, what=f"VM VPS {vm['id']} to be {want}")


def vm_problem() -> str | None:
    """Why VM tests cannot run here, or None."""
    if shutil.which("qemu-system-x86_64") is None:
        return "no qemu-system-x86_64 (run .ci/setup-qemu.sh)"
    if not (IMAGE / "base.qcow2").is_file():
        return f"no VM base image at {IMAGE} (run .ci/build-vm-image.sh)"
    if shutil.which("ssh") is None:
        return "no OpenSSH client (apt-get install openssh-client)"
    return None


def _start_vm(stack: contextlib.ExitStack, root: Path) -> dict[str, Any]:
    """Boot erin's VM on a fresh host + TCG runner; `stack` deletes it and stops both."""
    runner = (NODE, "--vm-accel", "tcg", "--vm-image", str(IMAGE))
    cluster = stack.enter_context(
        running_cluster(root, runner, heartbeat_interval=1.0, heartbeat_misses=20)
    )
    tokens = cluster.make_users("erin", "frank", label="shared vm")
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G", "ssh": "generate"}
    response = cluster.request("POST", API, json=body, **as_user(tokens["erin"]))
    assert response.status_code == 201, response.text
    created = response.json()["vps"]
    key = root / "erin.key"
    key.write_text(created["private_key"])
    key.chmod(0o600)
    vm = {
        **created, "token": tokens["erin"], "frank": tokens["frank"], "key_file": str(key),
        "login": f"erin+{created['id']}", "cluster": cluster,
        "dir": Path(cluster.runners[NODE].data_dir) / "vms" / created["id"],
    }  # fmt: skip

    @stack.callback
    def delete() -> None:
        cluster.request("DELETE", f"{API}/{vm['id']}", **as_user(vm["token"]))
        # Only this VM: named by its VPS id, ended if the delete did not.
        for pid in qemu_pids(vm["id"]):
            subprocess.run(["kill", "-9", str(pid)], check=False)

    running = state(cluster, vm, "running")
    vm.update(task_id=running["task_id"], ssh_proxy_port=running["ssh_proxy_port"])
    return vm


@pytest.fixture(scope="module")
def shared_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """erin's running VM VPS (generated key) and frank's token; "cluster" is its host with
    the TCG runner "emu". One per run, shared by its modules (tests/shared.py)."""
    if why := vm_problem():
        pytest.skip(why)
    with shared(SHARED, lambda stack: _start_vm(stack, tmp_path_factory.mktemp("sharedvm"))) as vm:
        yield vm


@pytest.fixture(scope="module")
def shared_vm_cluster(shared_vm: dict[str, Any]) -> Cluster:
    """The shared VM's host and TCG runner."""
    return shared_vm["cluster"]
