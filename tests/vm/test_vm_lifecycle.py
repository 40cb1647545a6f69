"""A VM VPS's life through River's API and SSH proxy, with a real guest (issue 19).

One VM (TCG here: the same code as KVM apart from the accelerator flag) is shared by the
steps, in order, because each boot of an emulated guest takes a minute: the owner logs
in with the real OpenSSH client through River's SSH proxy and writes a file; an HTTP server
in the guest answers through /river/proxy/<vps>/<port>/ (a QMP hostfwd added on first use);
pause makes SSH stop answering and resume brings it back; another user gets 404 on every
call and is refused by both proxies; a JupyterLab terminal and the exec API run in the
guest for the owner only (the runner's SSH key for the VM); the runner is SIGKILLed and restarted and adopts the
still-running VM (same QEMU, SSH, the HTTP forward and pause still work); stop (ACPI
shutdown) and restart boot the kept disk on the same node and the file is still there;
delete leaves no QEMU process and no disk. The VM is the session's shared one
(tests/vm_fixtures.py): tests/security/test_vm_guest_network.py probes it first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest
from tornado import httpclient

from river_runner.backends.vm import POWERDOWN_SECONDS
from tests.cluster import Cluster, as_user, wait_for
from tests.terminal_ws import terminal_output
from tests.vm_fixtures import API, BOOT_SECONDS, NODE, qemu_pids, ssh, state, wait_ssh

# pytest-timeout's 300 s (pyproject) counts a test's share of the fixtures: the first test
# waits out the boot, the stop/restart test a shutdown and a second boot.
# The steps end the shared VM (adoption, stop/restart, delete): its other users go first.
pytestmark = [pytest.mark.timeout(BOOT_SECONDS + 240), pytest.mark.uses_up("shared_vm")]
__all__ = ["API", "BOOT_SECONDS", "qemu_pids", "ssh", "state", "wait_ssh"]  # shared helpers


def action(cluster: Cluster, vm: dict[str, Any], name: str) -> dict[str, Any]:
    response = cluster.request("POST", f"{API}/{vm['id']}/{name}", **as_user(vm["token"]))
    assert response.status_code == 200, response.text
    return response.json()["vps"]


@pytest.fixture
def vcluster(shared_vm_cluster: Cluster) -> Cluster:
    """The shared VM's host and TCG runner (tests/vm_fixtures.py)."""
    return shared_vm_cluster


@pytest.fixture
def vm(shared_vm: dict[str, Any]) -> dict[str, Any]:
    """erin's running VM VPS, and frank, who owns nothing (tests/vm_fixtures.py): the steps
    below use it in order and end it, so they run last among its users."""
    return shared_vm


def test_ssh_through_the_proxy_runs_commands_in_the_guest(vm: dict[str, Any]) -> None:
    wait_ssh(vm)
    assert ssh(vm, vm["login"], "echo hello > f; cat f") == "hello\n"
    assert ssh(vm, vm["login"], "hostname") == f"vps-{vm['id']}\n"  # the seed's hostname


HTTP_PORT = 8000


def proxied(cluster: Cluster, vm: dict[str, Any], token: str, path: str = "/f") -> Any:
    return cluster.request("GET", f"/river/proxy/{vm['id']}/{HTTP_PORT}{path}", **as_user(token))


def test_an_http_server_in_the_guest_answers_through_the_proxy(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    wait_ssh(vm)
    start = (
        f"setsid nohup python3 -m http.server {HTTP_PORT} --directory /root "
        "</dev/null >/dev/null 2>&1 & echo started"
    )
    assert ssh(vm, vm["login"], start) == "started\n"
    answer = wait_for(
        lambda: (r := proxied(vcluster, vm, vm["token"])).status_code == 200 and r,
        60,
        what="the guest's HTTP server through /river/proxy",
    )
    assert answer.text == "hello\n"  # the file written over SSH, served by the guest
    assert proxied(vcluster, vm, vm["frank"]).status_code == 404  # not his VPS
    assert proxied(vcluster, vm, vcluster.token).status_code == 403  # admin: not his page


def test_pause_stops_the_guest_and_resume_continues_it(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    wait_ssh(vm)
    action(vcluster, vm, "pause")
    state(vcluster, vm, "paused")
    # QMP `stop`: QEMU still accepts on the forwarded port, but the guest sends no banner.
    assert ssh(vm, vm["login"], "echo awake", timeout=20) is None
    action(vcluster, vm, "resume")
    state(vcluster, vm, "running")
    wait_ssh(vm, timeout=60)
    assert ssh(vm, vm["login"], "cat f") == "hello\n"


def test_another_user_gets_404_and_the_proxy_refuses_him(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    frank = as_user(vm["frank"])
    for method, path in (
        ("GET", f"{API}/{vm['id']}"),
        ("POST", f"{API}/{vm['id']}/stop"),
        ("POST", f"{API}/{vm['id']}/pause"),
        ("POST", f"{API}/{vm['id']}/restart"),
        ("DELETE", f"{API}/{vm['id']}"),
    ):
        assert vcluster.request(method, path, **frank).status_code == 404, (method, path)
    assert vcluster.get(API, **frank)["vps"] == []
    assert ssh(vm, f"frank+{vm['id']}", "echo in") is None  # erin's key, frank's name
    assert "Permission denied" in vm["last_stderr"]
    assert ssh(vm, vm["login"], "cat f") == "hello\n"  # still erin's, still running


def test_a_terminal_and_exec_run_in_the_guest_for_its_owner_only(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    """The runner logs into the guest with the VM's own key (river_runner/vm_ssh.py): a
    JupyterLab terminal and the exec API run there; frank gets 404 for both."""
    wait_ssh(vm)
    key = vm["dir"] / "runner_key"
    assert key.stat().st_mode & 0o777 == 0o600  # made at create, private to the runner
    terminal = f"{API}/{vm['id']}/terminal"
    response = vcluster.request("POST", terminal, **as_user(vm["token"]))
    assert response.status_code == 201, response.text
    name = response.json()["name"]
    command = "echo $((6*7)) > /tmp/t; cat /tmp/t"  # the typed line itself shows no 42
    output = terminal_output(vcluster, vm["token"], name, command, "42", timeout=120)
    assert f"root@vps-{vm['id']}" in output  # the guest's shell, not the runner's
    assert ssh(vm, vm["login"], "cat /tmp/t") == "42\n"  # it ran in the guest

    ran = vcluster.request(
        "POST", f"{API}/{vm['id']}/exec", json={"command": ["cat", "/tmp/t"]},
        **as_user(vm["token"]),
    )  # fmt: skip
    assert ran.status_code == 200, ran.text
    assert ran.json() == {"exit_code": 0, "output": "42\n"}

    frank = as_user(vm["frank"])
    assert vcluster.request("POST", terminal, **frank).status_code == 404
    with pytest.raises(httpclient.HTTPClientError) as refused:
        terminal_output(vcluster, vm["frank"], name, "id", "uid=")
    assert refused.value.code == 403
    body = {"command": ["id"]}
    assert vcluster.request("POST", f"{API}/{vm['id']}/exec", json=body, **frank).status_code == 404

    # A VM from before the runner had a key: a 409 that says what to do, not a hang.
    key.rename(key.with_name("runner_key.away"))
    try:
        old = vcluster.request("POST", terminal, **as_user(vm["token"]))
        assert old.status_code == 409, old.text
        assert "predates terminal support" in old.json()["message"]
        assert "restart it" in old.json()["message"]
    finally:
        key.with_name("runner_key.away").rename(key)


def test_a_restarted_runner_adopts_the_running_vm(vcluster: Cluster, vm: dict[str, Any]) -> None:
    wait_ssh(vm)
    before = qemu_pids(vm["id"])
    assert len(before) == 1 and (vm["dir"] / "vm.json").is_file()
    vcluster.runners[NODE].kill(signal.SIGKILL)  # no chance to clean up
    assert qemu_pids(vm["id"]) == before  # QEMU is not the runner's to take along
    runner = vcluster.start_runner(NODE, wait_online=False)
    assert runner.log_path is not None
    wait_for(  # the node still looks online to the host: wait for the new process itself
        lambda: f"adopted the VM of VPS {vm['id']}" in runner.log_path.read_text(),
        60,
        what="the restarted runner to adopt the VM",
    )
    wait_for(lambda: "registered with" in runner.log_path.read_text().split("adopted")[-1], 30)
    vps = state(vcluster, vm, "running")
    assert vps["task_id"] == vm["task_id"]  # the same incarnation, not a new one
    assert ssh(vm, vm["login"], "cat f") == "hello\n"
    assert proxied(vcluster, vm, vm["token"]).text == "hello\n"  # the recorded forward
    ran = vcluster.request(  # exec: the runner's key is in the VM's directory, kept
        "POST", f"{API}/{vm['id']}/exec", json={"command": ["hostname"]}, **as_user(vm["token"])
    )
    assert ran.status_code == 200 and ran.json()["output"] == f"vps-{vm['id']}\n", ran.text
    action(vcluster, vm, "pause")  # QMP reconnected: control works on the adopted VM
    state(vcluster, vm, "paused")
    assert ssh(vm, vm["login"], "echo awake", timeout=20) is None
    action(vcluster, vm, "resume")
    state(vcluster, vm, "running")
    wait_ssh(vm, timeout=60)
    assert qemu_pids(vm["id"]) == before


def test_stop_and_restart_boot_the_kept_disk_on_the_same_node(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    first_task = vm["task_id"]
    runner_log = vcluster.runners[NODE].log_path
    assert runner_log is not None
    started = time.monotonic()
    action(vcluster, vm, "stop")  # the VM was adopted by the restarted runner (test above)
    state(vcluster, vm, "stopped", timeout=POWERDOWN_SECONDS + 30)
    took = time.monotonic() - started
    wait_for(lambda: not qemu_pids(vm["id"]), 30, what="QEMU to exit after the shutdown")
    # A clean ACPI shutdown (the guest's acpid powers off), not River quitting QEMU after
    # its POWERDOWN_SECONDS bound.
    assert "quitting QEMU" not in runner_log.read_text(), "the guest ignored the power button"
    assert took < POWERDOWN_SECONDS / 2, f"the stop took {took:.0f} s"
    assert (vm["dir"] / "disk.qcow2").is_file()

    action(vcluster, vm, "restart")
    again = state(vcluster, vm, "running")
    assert again["task_id"] != first_task and again["node"] == NODE
    vm.update(task_id=again["task_id"], ssh_proxy_port=again["ssh_proxy_port"])
    wait_ssh(vm)
    assert ssh(vm, vm["login"], "cat f") == "hello\n"


def disk_snapshots(vm: dict[str, Any]) -> list[str]:
    """The River snapshots inside the VM's qcow2 disk (-U: QEMU may hold it)."""
    shown = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(vm["dir"] / "disk.qcow2")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [s["name"] for s in json.loads(shown.stdout).get("snapshots") or []]


def test_the_stop_kept_the_disk_as_a_snapshot_the_restart_booted(
    vcluster: Cluster, vm: dict[str, Any]
) -> None:
    """After the stop/restart above: the stop's snapshot is in the disk and in the VPS's
    record and listing, as a container's would be, and the restart booted it."""
    assert disk_snapshots(vm) == ["river-1"]
    vps = vcluster.get(f"{API}/{vm['id']}", **as_user(vm["token"]))["vps"]
    assert vps["snapshots"] == [f"river-vps/{vm['id']}:1"] and vps["snapshot_node"] == NODE
    listed = vcluster.get(f"{API}/{vm['id']}/snapshots", **as_user(vm["token"]))["snapshots"]
    assert [(s["number"], s["node"]) for s in listed] == [(1, NODE)]
    runner_log = vcluster.runners[NODE].log_path
    assert runner_log is not None
    assert f"VPS {vm['id']} boots its snapshot 1" in runner_log.read_text()
    # A running VM's disk is snapshotted by a stop only: asked for directly, it says so.
    refused = vcluster.request("POST", f"{API}/{vm['id']}/snapshot", **as_user(vm["token"]))
    assert refused.status_code == 409 and "when it stops" in refused.json()["message"]


def test_delete_leaves_no_qemu_and_no_disk(vcluster: Cluster, vm: dict[str, Any]) -> None:
    assert qemu_pids(vm["id"]) and vm["dir"].is_dir()
    response = vcluster.request("DELETE", f"{API}/{vm['id']}", **as_user(vm["token"]))
    assert response.status_code == 200, response.text
    wait_for(lambda: not qemu_pids(vm["id"]), 30, what="QEMU to end")
    wait_for(lambda: not vm["dir"].exists(), 30, what="the VM's directory to go")
    gone = vcluster.request("GET", f"{API}/{vm['id']}", **as_user(vm["token"]))
    assert gone.status_code == 404
