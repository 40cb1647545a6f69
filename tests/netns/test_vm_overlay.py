"""A VM VPS on the overlay for real (issue 19): one runner in its own machine namespace.

A host and runner r1 (process backend, VMs under TCG) run in namespaces of their own, as in
the other overlay tests. The VM holds a reserved overlay address (`ip_token`); a process
task holds another. The runner gives the VM a tap on its `river-br` (river_runner/vm_tap.py)
and the seed configures the guest's second NIC with that address. The test logs in to the
guest AT its overlay address (the owner's own key, from r1's namespace: the user-mode NIC
is not there), the guest connects to the task's overlay address and the task connects back
to the guest's sshd; the tap goes with a stop, comes back with the restart (same address)
and goes with the delete.

One runner, not two: the VM's part is the tap and the guest's address; the paths between
runners through the hub are tests/netns/test_overlay_netns.py's, and every emulated boot
costs a minute here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_magics.vps import vps_bundle
from river_runner.vm_tap import tap_name
from tests.cluster import _kill_leftover_tasks
from tests.netns.conftest import OverlayCluster, remove_task_namespaces
from tests.netns.topology import IP, Machine, Topology, wait_for
from tests.vm.conftest import IMAGE
from tests.vm.test_vm_lifecycle import BOOT_SECONDS, qemu_pids

API = "/river/api/vps"
TASK_PORT = 7000

pytestmark = [
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None or not (IMAGE / "base.qcow2").is_file(),
        reason="needs QEMU and the VM base image (.ci/setup-qemu.sh, .ci/build-vm-image.sh)",
    ),
    pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client"),
    pytest.mark.timeout(2 * BOOT_SECONDS + 300),  # two emulated boots
]

# The task: serve one greeting on its overlay address, then reach the guest's sshd there.
TASK = r"""
import os, socket, sys, time
me, vm = os.environ["RIVER_OVERLAY_IP"], sys.argv[1]
server = socket.create_server((me, PORT))
conn, peer = server.accept()
conn.sendall(b"hello from the task\n")
conn.close()
print("accepted", peer[0], flush=True)
back = socket.create_connection((vm, 22), timeout=30)
print("banner", back.makefile("rb").readline().decode().strip(), flush=True)
""".replace("PORT", str(TASK_PORT))


def links(machine: Machine) -> dict[str, dict[str, Any]]:
    shown = machine.ip("-d", "-j", "link", "show")
    return {link["ifname"]: link for link in json.loads(shown.stdout)}


def guest_ssh(
    machine: Machine, vm: dict[str, Any], command: str, timeout: float = 60
) -> str | None:
    """`command` in the guest over SSH to its overlay address, from `machine`'s namespace."""
    try:
        done = subprocess.run(
            [IP, "netns", "exec", machine.netns, "ssh", "-i", vm["key_file"],
             "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=10", f"root@{vm['ip']}", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


def vps_state(cluster: OverlayCluster, vm: dict[str, Any], want: str, timeout: float) -> dict:
    def check() -> dict[str, Any] | None:
        vps = cluster.api.get(f"{API}/{vm['id']}")["vps"]
        return vps if vps["state"] == want else None

    return wait_for(check, timeout, f"VM VPS {vm['id']} to be {want}", interval=0.5)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Host + r1 with VMs; a VM VPS holding a reserved overlay address."""
    root = tmp_path_factory.mktemp("vmoverlay")
    topology = Topology().start()
    cluster = OverlayCluster(topology, root, topology.machine("host", 1))
    runner = topology.machine("runner1", 2)
    vm: dict[str, Any] = {}
    try:
        cluster.start_host()
        cluster.start_runner(
            "r1", runner, "--cpus", "0-1", "--vm-accel", "tcg", "--vm-image", str(IMAGE)
        )
        cluster.wait_online("r1", timeout=60)
        cluster.wait_links_up("r1")
        reservation = cluster.api.reserve("r1", ttl=600)
        body = {
            "vm": True, "cores": 1, "memory": "1G", "disk": "3G", "ssh": "generate",
            "ip_token": reservation["token"],
        }  # fmt: skip
        created = cluster.api.request("POST", API, json=body)
        assert created.status_code == 201, created.text
        vm.update(created.json()["vps"], ip=reservation["ip"])
        key = root / "owner.key"
        key.write_text(vm["private_key"])
        key.chmod(0o600)
        vm["key_file"] = str(key)
        vm["tap"] = tap_name(str(root / "runners" / "r1" / "vms"), vm["id"])
        yield {"cluster": cluster, "runner": runner, "vm": vm}
    finally:
        if vm.get("id"):
            cluster.api.request("DELETE", f"{API}/{vm['id']}")
            for pid in qemu_pids(vm["id"]):  # only this test's VM (named by its VPS id)
                subprocess.run(["kill", "-9", str(pid)], check=False)
        if cluster.host_process is not None:
            cluster.stop_host(signal.SIGKILL)
        topology.close()  # the tap goes with runner1's namespace
        _kill_leftover_tasks(root)
        remove_task_namespaces(root, ("r1",))


def test_the_guest_and_a_task_reach_each_other_on_the_overlay(net: dict[str, Any]) -> None:
    cluster: OverlayCluster = net["cluster"]
    runner: Machine = net["runner"]
    vm = net["vm"]
    vps_state(cluster, vm, "running", 120)
    tap = links(runner)[vm["tap"]]
    assert tap["master"] == "river-br" and "UP" in tap["flags"]

    wait_for(
        lambda: guest_ssh(runner, vm, "echo ready", timeout=30) == "ready\n",
        BOOT_SECONDS,
        f"the guest's sshd at its overlay address {vm['ip']}",
        interval=2.0,
    )
    shown = guest_ssh(runner, vm, "ip -4 -o addr show dev eth1; ip route show default")
    assert shown is not None and f"inet {vm['ip']}/" in shown
    assert "default via" in shown and "dev eth1" in shown  # the overlay is its way out

    held = cluster.api.reserve("r1", ttl=600)
    task = cluster.api.request(
        "POST",
        "/river/api/tasks",
        json={"command": ["python3", "-c", TASK, vm["ip"]], "ip_token": held["token"]},
    )
    assert task.status_code == 201, task.text
    task_id = task.json()["task"]["id"]
    probe = (
        'python3 -c "import socket,time\n'
        "for _ in range(120):\n"
        f"    try: s = socket.create_connection(('{held['ip']}', {TASK_PORT}), 5); break\n"
        "    except OSError: time.sleep(0.5)\n"
        'print(s.makefile().readline().strip())"'
    )
    assert guest_ssh(runner, vm, probe, timeout=120) == "hello from the task\n"
    finished = cluster.api.finished(task_id, timeout=60)
    lines = cluster.api.task_lines(task_id)
    assert finished["state"] == "completed", lines
    assert f"accepted {vm['ip']}" in lines  # the guest came from its overlay address
    assert any(line.startswith("banner SSH-2.0-OpenSSH") for line in lines), lines


def test_an_adopting_runner_puts_the_tap_back_on_the_bridge(net: dict[str, Any]) -> None:
    cluster: OverlayCluster = net["cluster"]
    runner: Machine = net["runner"]
    vm = net["vm"]
    log = Path(cluster.root) / "runner-r1.log"
    before = qemu_pids(vm["id"])
    assert len(before) == 1
    process = cluster.runner_processes["r1"]
    os.killpg(process.pid, signal.SIGKILL)  # no chance to clean up; QEMU runs on
    process.wait(timeout=30)
    # As if the bridge had been re-made while no runner ran: the tap lost its master.
    runner.ip("link", "set", vm["tap"], "nomaster")
    assert "master" not in links(runner)[vm["tap"]]
    adopted = log.read_text().count(f"adopted the VM of VPS {vm['id']}")
    cluster.start_runner(
        "r1", runner, "--cpus", "0-1", "--vm-accel", "tcg", "--vm-image", str(IMAGE)
    )
    wait_for(
        lambda: log.read_text().count(f"adopted the VM of VPS {vm['id']}") > adopted,
        60,
        "the restarted runner to adopt the VM",
    )
    wait_for(
        lambda: links(runner)[vm["tap"]].get("master") == "river-br",
        30,
        "the adopted VM's tap back on river-br",
    )
    assert qemu_pids(vm["id"]) == before
    assert guest_ssh(runner, vm, "echo still") == "still\n"  # over the overlay again


def test_the_tap_goes_with_a_stop_and_returns_with_the_restart(net: dict[str, Any]) -> None:
    cluster: OverlayCluster = net["cluster"]
    runner: Machine = net["runner"]
    vm = net["vm"]
    # The stop first asks r1 for the disk's snapshot (as a container's stop does), so it is
    # a 409 "node r1 is offline" until the runner restarted above has registered again.
    stop = wait_for(
        lambda: (
            (r := cluster.api.request("POST", f"{API}/{vm['id']}/stop")).status_code != 409 and r
        ),
        60,
        "the stop to reach r1 again",
        interval=1.0,
    )
    assert stop.status_code == 200, stop.text
    vps_state(cluster, vm, "stopped", 90)
    wait_for(lambda: vm["tap"] not in links(runner), 30, "the tap to go with the VM")

    assert cluster.api.request("POST", f"{API}/{vm['id']}/restart").status_code == 200
    vps_state(cluster, vm, "running", 120)
    assert links(runner)[vm["tap"]]["master"] == "river-br"
    wait_for(  # the same reserved address on the new incarnation
        lambda: guest_ssh(runner, vm, "hostname", timeout=30) == f"vps-{vm['id']}\n",
        BOOT_SECONDS,
        f"the restarted guest at {vm['ip']}",
        interval=2.0,
    )


def test_the_vps_json_and_vps_list_show_the_vms_overlay_address(net: dict[str, Any]) -> None:
    """As for a container VPS: the create answer, GET /vps/{id}, the list and `%river vps`'s
    table show the reserved address, and the restarted incarnation (above) kept it."""
    cluster: OverlayCluster = net["cluster"]
    vm = net["vm"]
    assert vm["overlay_ip"] == vm["ip"]  # the create answer
    current = cluster.api.get(f"{API}/{vm['id']}")["vps"]
    assert current["overlay_ip"] == vm["ip"] and current["task_id"] != vm["task_id"]
    listed = {v["id"]: v for v in cluster.api.get(API)["vps"]}
    assert listed[vm["id"]]["overlay_ip"] == vm["ip"]
    table = vps_bundle([current])["text/plain"]
    assert "address" in table and vm["ip"] in table


def test_delete_leaves_no_tap_and_no_qemu(net: dict[str, Any]) -> None:
    cluster: OverlayCluster = net["cluster"]
    vm = net["vm"]
    assert cluster.api.request("DELETE", f"{API}/{vm['id']}").status_code == 200
    wait_for(lambda: not qemu_pids(vm["id"]), 30, "QEMU to end")
    wait_for(lambda: vm["tap"] not in links(net["runner"]), 30, "the tap to go")
    runner_dir = Path(cluster.root) / "runners" / "r1" / "vms" / vm["id"]
    wait_for(lambda: not runner_dir.exists(), 30, "the VM's directory to go")
