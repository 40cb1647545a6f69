"""VPSes on the real Docker daemon: a Jupyter host with River and one docker runner.

Lifecycle (create → running; a file written in the VPS survives stop → snapshot →
restart), snapshot retention, ownership (another user gets 404), SSH key modes, a VM with an image refused,
and the terminal: a JupyterLab terminal whose shell runs in the container (through the
runner's exec WebSocket) answers `hostname` with the container's, for its owner only.
Files are written and read with `docker exec` on the daemon the runner uses (this machine's).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import httpclient

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import (
    BUSYBOX_IMAGE,
    PYTHON_IMAGE,
    containers_of,
    snapshot_vps_cluster,
)
from tests.docker.test_docker_cluster import Kernel
from tests.terminal_ws import terminal_output

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
NODE = f"vps-{RUN}"
API = "/river/api/vps"


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("vps"),
        heartbeat_interval=1.0,
        heartbeat_misses=10,
        extra_host_args=["--RiverHost.vps_snapshots_keep=2"],
    )
    runner_args = ("--default-image", PYTHON_IMAGE)
    with snapshot_vps_cluster(cluster, docker_client, NODE, *runner_args) as started:
        yield started


@pytest.fixture(scope="module")
def tokens(vcluster: Cluster) -> dict[str, str]:
    return vcluster.make_users("erin", "frank", label="vps tests")


def create(cluster: Cluster, token: str, **body: Any) -> dict[str, Any]:
    response = cluster.request("POST", API, json=body, **as_user(token))
    assert response.status_code == 201, response.text
    vps = response.json()["vps"]
    cluster.created_vps.append(vps["id"])  # type: ignore[attr-defined]
    return vps


def wait_state(cluster: Cluster, token: str, vps_id: str, state: str, timeout: float = 30):
    def check() -> dict[str, Any] | None:
        vps = cluster.get(f"{API}/{vps_id}", **as_user(token))["vps"]
        return vps if vps["state"] == state else None

    return wait_for(check, timeout, what=f"VPS {vps_id} to be {state}")


def action(cluster: Cluster, token: str, vps_id: str, name: str) -> dict[str, Any]:
    response = cluster.request("POST", f"{API}/{vps_id}/{name}", **as_user(token))
    assert response.status_code == 200, response.text
    return response.json()["vps"]


def container_of(client: Any, task_id: str) -> Any:
    found = [c for c in containers_of(client, NODE) if c.labels.get("river.task_id") == task_id]
    return found[0] if found else None


def sh(client: Any, task_id: str, script: str) -> str:
    container = container_of(client, task_id)
    assert container is not None, f"no container for task {task_id}"
    result = container.exec_run(["/bin/sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode()


def test_a_file_survives_stop_and_restart_and_retention_keeps_n(
    vcluster: Cluster, tokens: dict[str, str], docker_client: Any
) -> None:
    erin = tokens["erin"]
    vps = create(vcluster, erin, image=BUSYBOX_IMAGE, cores=1, memory="64M", name="box")
    assert vps["ssh"] == "disabled" and vps["owner"] == "erin"
    vps = wait_state(vcluster, erin, vps["id"], "running")
    assert vps["node"] == NODE
    listed = vcluster.get(API, **as_user(erin))["vps"]
    assert [v["id"] for v in listed] == [vps["id"]]

    sh(docker_client, vps["task_id"], "echo kept-across-stop > /root-note")

    # A manual snapshot, then stop (which snapshots again): the newest 2 are kept.
    snap = action(vcluster, erin, vps["id"], "snapshot")
    assert snap["snapshots"] == [f"river-vps/{vps['id']}:1"]
    first_task = vps["task_id"]
    action(vcluster, erin, vps["id"], "stop")
    stopped = wait_state(vcluster, erin, vps["id"], "stopped")
    assert stopped["snapshots"] == [f"river-vps/{vps['id']}:1", f"river-vps/{vps['id']}:2"]
    wait_for(lambda: container_of(docker_client, first_task) is None, 15, what="container gone")
    docker_client.images.get(f"river-vps/{vps['id']}:2")  # the snapshot exists

    action(vcluster, erin, vps["id"], "restart")
    again = wait_state(vcluster, erin, vps["id"], "running")
    assert again["task_id"] != first_task
    assert again["running_image"] == f"river-vps/{vps['id']}:2"
    assert sh(docker_client, again["task_id"], "cat /root-note").strip() == "kept-across-stop"

    # A third snapshot drops the oldest: retention keeps 2 (c.RiverHost.vps_snapshots_keep).
    third = action(vcluster, erin, vps["id"], "snapshot")
    assert third["snapshots"] == [f"river-vps/{vps['id']}:2", f"river-vps/{vps['id']}:3"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"river-vps/{vps['id']}:1")

    # Snapshots can be listed and one removed (from the node and the record).
    path = f"{API}/{vps['id']}/snapshots"
    listed = vcluster.get(path, **as_user(erin))["snapshots"]
    assert [(s["number"], s["node"]) for s in listed] == [(2, NODE), (3, NODE)]
    response = vcluster.request("DELETE", f"{path}/2", **as_user(erin))
    assert response.status_code == 200, response.text
    assert [s["number"] for s in response.json()["snapshots"]] == [3]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"river-vps/{vps['id']}:2")
    docker_client.images.get(f"river-vps/{vps['id']}:3")
    missing = vcluster.request("DELETE", f"{path}/9", **as_user(erin))
    assert missing.status_code == 404 and "no snapshot 9" in missing.json()["message"]

    # Pause and resume go through the task machinery.
    action(vcluster, erin, vps["id"], "pause")
    wait_state(vcluster, erin, vps["id"], "paused")
    action(vcluster, erin, vps["id"], "resume")
    wait_state(vcluster, erin, vps["id"], "running")

    # Delete: the container and the snapshots go, and the VPS is gone from the API.
    response = vcluster.request("DELETE", f"{API}/{vps['id']}", **as_user(erin))
    assert response.status_code == 200, response.text
    assert vcluster.request("GET", f"{API}/{vps['id']}", **as_user(erin)).status_code == 404
    wait_for(
        lambda: container_of(docker_client, again["task_id"]) is None, 15, what="container gone"
    )
    assert docker_client.images.list(name=f"river-vps/{vps['id']}") == []


def test_another_user_gets_404(vcluster: Cluster, tokens: dict[str, str]) -> None:
    vps = create(vcluster, tokens["erin"], image=BUSYBOX_IMAGE, cores=1)
    frank = as_user(tokens["frank"])
    for method, path in (
        ("GET", f"{API}/{vps['id']}"),
        ("POST", f"{API}/{vps['id']}/stop"),
        ("POST", f"{API}/{vps['id']}/restart"),
        ("POST", f"{API}/{vps['id']}/snapshot"),
        ("DELETE", f"{API}/{vps['id']}"),
    ):
        assert vcluster.request(method, path, **frank).status_code == 404, (method, path)
    assert vcluster.get(API, **frank)["vps"] == []
    # The admin (operator powers) sees it with all=1.
    assert vps["id"] in [v["id"] for v in vcluster.get(f"{API}?all=1")["vps"]]
    response = vcluster.request("DELETE", f"{API}/{vps['id']}", **as_user(tokens["erin"]))
    assert response.status_code == 200


def test_ssh_modes_and_qemu(vcluster: Cluster, tokens: dict[str, str]) -> None:
    erin = tokens["erin"]
    generated = create(vcluster, erin, image=BUSYBOX_IMAGE, cores=1, ssh="generate")
    assert generated["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert generated["public_key"].startswith("ssh-ed25519 ")
    shown = vcluster.get(f"{API}/{generated['id']}", **as_user(erin))["vps"]
    assert "private_key" not in shown and shown["ssh"] == "generate"

    key = generated["public_key"]
    uploaded = create(vcluster, erin, image=BUSYBOX_IMAGE, cores=1, ssh="upload", public_key=key)
    assert uploaded["public_key"] == key and "private_key" not in uploaded

    for body, needle in (
        ({"ssh": "upload"}, "public_key"),
        ({"ssh": "telnet"}, "ssh must be one of"),
        ({"backend": "qemu"}, "applies to container VPSes"),
    ):
        response = vcluster.request(
            "POST", API, json={"image": BUSYBOX_IMAGE, **body}, **as_user(erin)
        )
        assert response.status_code == 400 and needle in response.text, response.text
    for vps in (generated, uploaded):
        vcluster.request("DELETE", f"{API}/{vps['id']}", **as_user(erin))


def test_terminal_runs_in_the_vps_and_only_its_owner_may_use_it(
    vcluster: Cluster, tokens: dict[str, str], docker_client: Any
) -> None:
    erin, frank = tokens["erin"], tokens["frank"]
    vps = create(vcluster, erin, image=BUSYBOX_IMAGE, cores=1)
    vps = wait_state(vcluster, erin, vps["id"], "running")
    hostname = container_of(docker_client, vps["task_id"]).attrs["Config"]["Hostname"]
    assert hostname == vps["hostname"] == f"vps-{vps['id']}"
    response = vcluster.request("POST", f"{API}/{vps['id']}/terminal", **as_user(erin))
    assert response.status_code == 201, response.text
    name = response.json()["name"]
    assert name.startswith(f"river_vps_{vps['id']}_")

    output = terminal_output(vcluster, erin, name, "hostname", hostname)
    assert hostname in output

    # Another user may neither open a terminal into it nor use the owner's.
    other = vcluster.request("POST", f"{API}/{vps['id']}/terminal", **as_user(frank))
    assert other.status_code == 404
    with pytest.raises(httpclient.HTTPClientError) as refused:
        terminal_output(vcluster, frank, name, "hostname", hostname)
    assert refused.value.code == 403
    # Terminals in general stay admin-only.
    listing = vcluster.request("GET", "/api/terminals", **as_user(erin))
    assert listing.status_code == 403
    vcluster.request("DELETE", f"{API}/{vps['id']}", **as_user(erin))


def test_magics_drive_a_vps(vcluster: Cluster, docker_client: Any) -> None:
    kernel = Kernel(vcluster)
    try:
        out = kernel.run(f"%river vps create --image {BUSYBOX_IMAGE} -c 0 --name mag --gen-key")
        match = re.search(r"VPS (\d+): ", out)
        assert match, out
        vps_id = match.group(1)
        vcluster.created_vps.append(vps_id)  # type: ignore[attr-defined]
        assert "BEGIN OPENSSH PRIVATE KEY" in out and "shown once" in out
        wait_state(vcluster, vcluster.token, vps_id, "running")
        listed = kernel.run("%river vps list")
        assert vps_id in listed and "running" in listed and "generate" in listed, listed
        out = kernel.run(f"%river vps snapshot {vps_id}")
        assert f"river-vps/{vps_id}:1" in out, out
        out = kernel.run(f"%river vps stop {vps_id}")
        assert f"river-vps/{vps_id}:2" in out, out
        wait_state(vcluster, vcluster.token, vps_id, "stopped")
        out = kernel.run(f"%river vps restart {vps_id}")
        assert "restart requested" in out, out
        wait_state(vcluster, vcluster.token, vps_id, "running")
        out = kernel.run(f"%river vps delete {vps_id}")
        assert "deleted" in out, out
        assert vps_id not in kernel.run("%river vps list")
        out = kernel.run("%river vps status 12345")
        assert "UsageError" in out and "no VPS" in out, out
    finally:
        kernel.close()
