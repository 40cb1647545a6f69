"""A VM guest attacks the runner through QEMU's user-mode network (docs/security.md).

QEMU's user-mode net maps the guest's gateway, 10.0.2.2, to the runner machine's own
loopback: without `restrict=on` a guest (whose root is its user) connects to anything
listening on the runner's 127.0.0.1 — the runner's API, River's host where it shares
the machine, another VM's forwarded ports, another user's process task serving on
loopback. The guest here tries each, plus a listener of the test standing for a loopback
service of someone else, and must reach none; the owner still gets in through River's
SSH proxy (hostfwd is inbound and keeps working).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, as_user, running_cluster
from tests.vm.conftest import IMAGE
from tests.vm.test_vm_lifecycle import API, BOOT_SECONDS, qemu_pids, ssh, state, wait_ssh

NODE = "emu"

pytestmark = [
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or not (IMAGE / "base.qcow2").is_file(),
        reason="needs QEMU and the VM base image (.ci/setup-qemu.sh, .ci/build-vm-image.sh)",
    ),
    # The fixture waits up to BOOT_SECONDS for an emulated boot, and pytest-timeout counts
    # setup against the test: the suite's 300 s would cut a slow boot short.
    pytest.mark.timeout(BOOT_SECONDS + 240),
]


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running VM of mallory's on a TCG runner, and the loopback ports it must not reach."""
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")
    root = tmp_path_factory.mktemp("vmnet")
    runner = (NODE, "--vm-accel", "tcg", "--vm-image", str(IMAGE))
    with running_cluster(root, runner, heartbeat_interval=1.0, heartbeat_misses=20) as cluster:
        yield from _vm(cluster, root)


def _vm(cluster: Cluster, root: Path) -> Iterator[dict[str, Any]]:
    token = cluster.make_users("mallory", label="vm net")["mallory"]
    body = {"vm": True, "cores": 1, "memory": "1G", "disk": "3G", "ssh": "generate"}
    response = cluster.request("POST", API, json=body, **as_user(token))
    assert response.status_code == 201, response.text
    created = response.json()["vps"]
    key = root / "mallory.key"
    key.write_text(created["private_key"])
    key.chmod(0o600)
    vm: dict[str, Any] = {
        **created, "token": token, "key_file": str(key), "login": f"mallory+{created['id']}",
        "cluster": cluster,
    }  # fmt: skip
    try:
        running = state(cluster, vm, "running")
        vm.update(task_id=running["task_id"], ssh_proxy_port=running["ssh_proxy_port"])
        wait_ssh(vm)
        yield vm
    finally:
        cluster.request("DELETE", f"{API}/{vm['id']}", **as_user(token))
        for pid in qemu_pids(vm["id"]):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def _reaches(vm: dict[str, Any], address: str, port: int) -> str | None:
    """What the guest says when it opens a TCP connection to address:port."""
    probe = (
        f"timeout 15 bash -c 'exec 3<>/dev/tcp/{address}/{port}' 2>/dev/null"
        " && echo OPEN || echo CLOSED"
    )
    return ssh(vm, vm["login"], probe, timeout=60)


def test_the_guest_reaches_no_service_on_the_runners_loopback(guest: dict[str, Any]) -> None:
    cluster: Cluster = guest["cluster"]
    accepted: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # someone else's loopback-only service on the node
    listener.listen(4)
    listener.settimeout(1.0)

    def accept() -> None:
        while listener.fileno() != -1:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(b"connected")
            conn.close()

    watcher = threading.Thread(target=accept, daemon=True)
    watcher.start()
    try:
        targets = {
            "the runner's API": cluster.runners[NODE].port,
            "River's host": cluster.port,
            "the SSH proxy": guest["ssh_proxy_port"],
            "a loopback service of another user": listener.getsockname()[1],
        }
        for what, port in targets.items():
            answer = _reaches(guest, "10.0.2.2", port)
            assert answer == "CLOSED\n", f"the guest reached {what} on 127.0.0.1:{port}"
        assert accepted == []
    finally:
        listener.close()
        watcher.join(timeout=5)
    # The owner's way in (hostfwd, inbound) still works.
    assert ssh(guest, guest["login"], "echo still-here") == "still-here\n"
