"""Docker task containers on the overlay, for real, without touching the root namespace.

A second Docker daemon runs *inside* runner 1's machine namespace, with its own data root,
exec root (its own containerd, which dockerd spawns there), pid file and unix socket under
a tmp dir, and `--bridge=none --iptables=false --ip-masq=false --ip-forward=false`: it makes
no docker0, and the one bridge it uses (river-br, through the `river-overlay` network the
runner creates) lives in that namespace. The busybox test image is `docker import`ed into it
from the cached rootfs tarball (.ci/build-images.sh); the main daemon is not used.

    host ns     192.168.251.1  River host
    runner1 ns  192.168.251.2  runner d1, docker backend -> the in-namespace dockerd
    runner2 ns  192.168.251.3  runner p2, process backend; workload namespace w2 on its bridge

A container task on d1 and w2 talk TCP by overlay address, through the host, both ways; a
task that presents a reservation token gets exactly the reserved address.

dockerd is started with `nsenter --net` rather than `ip netns exec`: the latter also makes a
mount namespace with a fresh /sys, which hides /sys/fs/cgroup, and dockerd then stops with
"failed to start daemon: Devices cgroup isn't mounted".
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import _kill_leftover_tasks
from tests.netns.conftest import PROBLEM, OverlayCluster
from tests.netns.topology import EchoServer, Machine, Topology, echo, stop, wait_for

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover - a base dependency
    docker = None  # type: ignore[assignment]

BUSYBOX = "river-test-busybox"
IMAGE_CACHE = Path(os.environ.get("RIVER_IMAGE_CACHE", "/var/cache/river-images"))
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
ECHO_PORT = 7000
CONTAINER_PORT = 7001
MNT_DETACH = 2


def busybox_tarball() -> Path | None:
    found = sorted(IMAGE_CACHE.glob(f"{BUSYBOX}-*.tar"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def docker_problem() -> str | None:
    """Why a namespaced dockerd cannot run here (None: it can)."""
    if docker is None:
        return "the docker SDK is not installed"
    for binary in (DOCKERD, NSENTER):
        if not os.access(binary, os.X_OK):
            return f"{binary} is missing (dockerd: apt-get install docker.io; nsenter: util-linux)"
    if shutil.which("containerd") is None:
        return "containerd is not on PATH (dockerd starts its own from there)"
    if busybox_tarball() is None:
        return (
            f"no cached {BUSYBOX} rootfs in {IMAGE_CACHE}; "
            "run .ci/setup-docker.sh && .ci/build-images.sh"
        )
    return None


DOCKER_PROBLEM = None if PROBLEM else docker_problem()  # PROBLEM: conftest skips already
pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(DOCKER_PROBLEM is not None, reason=str(DOCKER_PROBLEM)),
]


class NetnsDockerd:
    """A dockerd (and the containerd it spawns) in a machine's network namespace, with every
    path of its own under `root`; close() removes its containers, stops it and deletes root."""

    def __init__(self, machine: Machine, root: Path) -> None:
        self.machine = machine
        self.root = root
        self.sock = root / "docker.sock"
        self.url = f"unix://{self.sock}"
        self.log = root / "dockerd.log"
        self.process: subprocess.Popen | None = None
        self.client: Any = None

    def start(self, timeout: float = 60.0) -> NetnsDockerd:
        command = [
            NSENTER, f"--net=/var/run/netns/{self.machine.netns}", DOCKERD,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "--host", self.url,
            "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
            "--userland-proxy=false",
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log_tail()}")
            if self.client is None:
                self.client = docker.DockerClient(base_url=self.url, version="auto", timeout=10)
            return self.client.ping()

        wait_for(up, timeout, f"the dockerd in {self.machine.netns} ({self.log})", 0.2)
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def load_busybox(self, tarball: Path) -> None:
        self.client.api.import_image_from_file(
            str(tarball),
            repository=BUSYBOX,
            tag="latest",
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        )
        self.client.images.get(BUSYBOX)

    def _ours(self) -> list[int]:
        """Processes whose command line names our root (dockerd, containerd, shims)."""
        marker = str(self.root).encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if marker in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                for container in self.client.containers.list(all=True):
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True, v=True)
            with contextlib.suppress(Exception):
                self.client.close()
        if self.process is not None:
            stop(self.process, signal.SIGTERM, timeout=30)  # dockerd stops its containerd
        for pid in self._ours():  # anything left after a hard stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not self._ours(), 10, "our docker processes to exit")
        libc = ctypes.CDLL(None, use_errno=True)
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        inside = [line.split()[4] for line in mounts if line.split()[4].startswith(f"{self.root}/")]
        for point in sorted(inside, key=len, reverse=True):
            libc.umount2(point.encode(), MNT_DETACH)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class DockerOverlay:
    cluster: OverlayCluster
    dockerd: NetnsDockerd
    runner1: Machine
    runner2: Machine
    w2: Machine
    w2_ip: str
    allocations: dict[str, Any]


@pytest.fixture(scope="module")
def docker_overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerOverlay]:
    root = tmp_path_factory.mktemp("overlay-docker")
    topology = Topology().start()
    dockerd: NetnsDockerd | None = None
    server: EchoServer | None = None
    try:
        cluster = OverlayCluster(topology, root, topology.machine("host", 1))
        runner1 = topology.machine("runner1", 2)
        runner2 = topology.machine("runner2", 3)
        w2 = topology.workload("w2")
        # A short root: containerd's socket lives under it (unix socket paths: < 108 bytes).
        dockerd = NetnsDockerd(runner1, Path(tempfile.mkdtemp(prefix="rvtdk-", dir="/tmp")))
        dockerd.start()
        dockerd.load_busybox(busybox_tarball())
        cluster.start_host()
        cluster.start_runner(
            "d1", runner1, "--default-image", BUSYBOX,
            backend="docker", env={"DOCKER_HOST": dockerd.url},
        )  # fmt: skip
        cluster.start_runner("p2", runner2)
        cluster.wait_online("d1", "p2")
        allocations = cluster.wait_links_up("d1", "p2")
        wait_for(
            lambda: dockerd.client.networks.list(names=["river-overlay"]),
            20,
            f"d1's docker network river-overlay (see {root / 'runner-d1.log'})",
        )
        w2_ip = str(ipaddress.IPv4Network(allocations["p2"]["subnet"]).network_address + 10)
        done = runner2.python("-m", "river_runner.overlay", "attach", w2.netns, w2_ip)
        assert done.returncode == 0, done.stderr
        server = EchoServer(w2.thread(), w2_ip, ECHO_PORT)
        yield DockerOverlay(cluster, dockerd, runner1, runner2, w2, w2_ip, allocations)
    finally:
        if server is not None:
            server.close()
        for process in topology.processes:  # host and runners, before their daemon goes
            stop(process, signal.SIGKILL)
        if dockerd is not None:
            dockerd.close()
        topology.close()
        _kill_leftover_tasks(root)


def container_of(net: DockerOverlay, task_id: Any) -> Any:
    found = net.dockerd.client.containers.list(filters={"label": f"river.task_id={task_id}"})
    return found[0] if found else None


# The container: its address and routes, a connection to w2's echo server (retried while
# ARP and the tunnels settle: bounded), then one echo for w2 on CONTAINER_PORT.
SCRIPT = """
echo "env RIVER_OVERLAY_IP=$RIVER_OVERLAY_IP"
ip -4 -o addr show dev eth0 | sed 's/^/addr /'
ip route | sed 's/^/route /'
ip -o link | sed 's/^/link /'
for i in $(seq 1 50); do
    got=$(echo "from-container-$i" | nc -w 2 {w2} {echo_port}) && [ -n "$got" ] && break
    sleep 0.2
done
echo "echoed $got"
echo READY
nc -l -p {port} -e cat
echo served
"""


def run_container_task(net: DockerOverlay, **body: Any) -> tuple[dict[str, Any], str]:
    """Submit SCRIPT on d1, echo through it from w2; returns (finished task, its address)."""
    api = net.cluster.api
    script = SCRIPT.format(w2=net.w2_ip, echo_port=ECHO_PORT, port=CONTAINER_PORT)
    submitted = api.request(
        "POST",
        "/river/api/tasks",
        json={"command": script, "image": BUSYBOX, **body},
    )
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()["task"]

    def ready() -> bool:
        lines = api.task_lines(task["id"])
        state = api.get(f"/river/api/tasks/{task['id']}")["task"]["state"]
        if state not in ("queued", "assigning", "running"):
            raise AssertionError(f"task {task['id']} is {state}: {lines}")
        return "READY" in lines

    wait_for(ready, 60, f"task {task['id']} to serve (log: {net.cluster.root})")
    container = container_of(net, task["id"])
    assert container is not None
    networks = container.attrs["NetworkSettings"]["Networks"]
    assert list(networks) == ["river-overlay"]  # instead of the default bridge, not beside it
    address = networks["river-overlay"]["IPAddress"]
    payload = f"from-w2 {time.monotonic()}".encode()

    def served() -> bool:
        return echo(net.w2.thread(), address, CONTAINER_PORT, payload, timeout=5) == payload

    assert wait_for(served, 20, f"w2 -> container {address}:{CONTAINER_PORT} echo")
    done = api.finished(task["id"])
    lines = api.task_lines(task["id"])
    assert done["state"] == "completed", (done, lines)
    return done, address


def test_container_with_reserved_address_talks_to_a_workload_on_another_runner(
    docker_overlay: DockerOverlay,
) -> None:
    net, api = docker_overlay, docker_overlay.cluster.api
    d1 = net.allocations["d1"]
    reservation = api.reserve("d1", ttl=120)
    before = net.cluster.host.ip("-s", "-j", "link", "show", f"rvh-vx{d1['index']}").stdout

    done, address = run_container_task(net, ip_token=reservation["token"])

    assert address == reservation["ip"] == done["overlay_ip"]
    assert done["node"] == "d1"
    lines = api.task_lines(done["id"])
    assert f"env RIVER_OVERLAY_IP={address}" in lines
    assert any(f"inet {address}/{d1['subnet'].split('/')[1]}" in line for line in lines), lines
    # One interface besides lo, and the default route is the runner's bridge.
    assert any(line.startswith(f"route default via {d1['runner_ip']} dev eth0") for line in lines)
    assert len([line for line in lines if line.startswith("link ")]) == 2, lines  # lo, eth0
    assert any(line.startswith("echoed from-container-") for line in lines), lines
    assert "served" in lines
    # Through the host: its tunnel to d1 carried the traffic.
    after = net.cluster.host.ip("-s", "-j", "link", "show", f"rvh-vx{d1['index']}").stdout
    assert _rx_packets(after) > _rx_packets(before)


def test_container_without_reservation_gets_a_docker_range_address(
    docker_overlay: DockerOverlay,
) -> None:
    net, api = docker_overlay, docker_overlay.cluster.api
    subnet = ipaddress.IPv4Network(net.allocations["d1"]["subnet"])
    done, address = run_container_task(net)
    lines = api.task_lines(done["id"])
    # Picked by the backend from the lower half (reservations come from the top down).
    assert ipaddress.IPv4Address(address) in next(subnet.subnets(prefixlen_diff=1))
    assert ipaddress.IPv4Address(address) >= subnet.network_address + 3
    assert f"env RIVER_OVERLAY_IP={address}" in lines
    assert done["overlay_ip"] is None  # nothing was reserved
    assert any(line.startswith("echoed from-container-") for line in lines), lines


def test_a_vps_keeps_its_reserved_address_across_stop_and_restart(
    docker_overlay: DockerOverlay,
) -> None:
    net, api = docker_overlay, docker_overlay.cluster.api
    reservation = api.reserve("d1", ttl=120)
    created = api.request(
        "POST",
        "/river/api/vps",
        json={"cores": 0, "name": "addr", "ip_token": reservation["token"]},
    )
    assert created.status_code == 201, created.text
    vps_id = created.json()["vps"]["id"]

    def vps_state(wanted: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            vps = api.get(f"/river/api/vps/{vps_id}")["vps"]
            return vps if vps["state"] == wanted else None

        return wait_for(check, 60, f"VPS {vps_id} to be {wanted}")

    def address_of(task_id: str) -> str:
        container = container_of(net, task_id)
        assert container is not None, f"no container for task {task_id}"
        return container.attrs["NetworkSettings"]["Networks"]["river-overlay"]["IPAddress"]

    first = vps_state("running")
    assert address_of(first["task_id"]) == reservation["ip"]
    try:
        assert api.request("POST", f"/river/api/vps/{vps_id}/stop").status_code == 200
        vps_state("stopped")
        # Stopped, the VPS still holds its address: a new reservation gets another one.
        other = api.reserve("d1")
        assert other["ip"] != reservation["ip"]
        api.request("DELETE", f"/river/api/overlay/reservations/{other['id']}")

        assert api.request("POST", f"/river/api/vps/{vps_id}/restart").status_code == 200
        again = vps_state("running")
        assert again["task_id"] != first["task_id"]
        assert address_of(again["task_id"]) == reservation["ip"]
        rows = api.get("/river/api/overlay/reservations")["reservations"]
        row = next(r for r in rows if r["id"] == reservation["id"])
        assert (row["state"], row["task_id"]) == ("in_use", again["task_id"])
    finally:
        api.request("DELETE", f"/river/api/vps/{vps_id}")
    rows = api.get("/river/api/overlay/reservations")["reservations"]
    assert next(r for r in rows if r["id"] == reservation["id"])["state"] == "released"


def _rx_packets(shown: str) -> int:
    return json.loads(shown)[0]["stats64"]["rx"]["packets"]
