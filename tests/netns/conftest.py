"""Overlay tests in network namespaces: one namespace per machine, a veth underlay.

Every test here is marked `netns` and skipped, with the reason, unless it runs as root with
iproute2, pyroute2 and VXLAN support (CI runs as root). See topology.py for what is created
(and removed) and why nothing leaves the namespaces these tests make.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from river_runner import task_netns
from river_runner.data import cache_dir_name
from river_runner.data_out import memory_dir
from tests.cluster import JOIN_TOKEN, _kill_leftover_tasks
from tests.netns.topology import (
    EchoServer,
    HostAPI,
    Machine,
    Topology,
    netns_problem,
    run_ip,
    stop,
    wait_for,
)
from tests.shared import register, shared

HERE = Path(__file__).parent
PROBLEM = netns_problem()
HOST_PORT = 8888
RUNNER_PORT = 8001
ADMIN_TOKEN = "netns-admin-token"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.netns)
            if PROBLEM:
                item.add_marker(pytest.mark.skip(reason=PROBLEM))


@dataclass
class OverlayCluster:
    """A River host and runners, each a real process in its own machine namespace."""

    topology: Topology
    root: Path
    host: Machine
    host_args: list[str] = field(default_factory=list)
    host_process: Any = None
    runner_processes: dict[str, Any] = field(default_factory=dict)

    @property
    def api(self) -> HostAPI:
        return HostAPI(self.host, HOST_PORT, ADMIN_TOKEN)

    def start_host(self, timeout: float = 60.0) -> None:
        data_dir = self.root / "host"
        data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "jupyter", "server", "--no-browser",
            f"--ServerApp.ip={self.host.address}",
            f"--ServerApp.port={HOST_PORT}",
            "--ServerApp.port_retries=0",
            "--ServerApp.allow_root=True",
            f"--IdentityProvider.token={ADMIN_TOKEN}",
            "--ServerApp.identity_provider_class=river_server.auth.RiverIdentityProvider",
            "--ServerApp.authorizer_class=river_server.auth.RiverAuthorizer",
            "--ServerApp.jpserver_extensions=river_server=True",
            f"--ServerApp.root_dir={self.root}",
            f"--RiverHost.data_dir={data_dir}",
            f"--RiverHost.runner_token={JOIN_TOKEN}",
            "--RiverHost.heartbeat_interval=0.5",
            "--RiverHost.overlay_enabled=True",
            f"--RiverHost.overlay_underlay_ip={self.host.address}",
            *self.host_args,
        ]  # fmt: skip
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.root / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
        }
        self.host_process = self.host.popen(command, self.root / "host.log", env=env)
        self.topology.processes.append(self.host_process)

        def up() -> bool:
            if self.host_process.poll() is not None:
                raise RuntimeError(f"host exited; see {self.root / 'host.log'}")
            return self.api.request("GET", "/river/api/nodes").status_code == 200

        wait_for(up, timeout, f"the host in {self.host.netns} (see {self.root / 'host.log'})")

    def stop_host(self, sig: int = signal.SIGTERM) -> None:
        stop(self.host_process, sig)

    def start_runner(
        self,
        name: str,
        machine: Machine,
        *extra: str,
        backend: str = "process",
        env: dict[str, str] | None = None,
    ) -> None:
        command = [
            sys.executable, "-m", "river_runner.cli", "runner",
            "--host", f"http://{self.host.address}:{HOST_PORT}",
            "--token", JOIN_TOKEN,
            "--name", name,
            "--bind", str(machine.address),
            "--port", str(RUNNER_PORT),
            "--data-dir", str(self.root / "runners" / name),
            "--backend", backend,
            "--cpus", "0",
            "--overlay-ip", str(machine.address),
            *extra,
        ]  # fmt: skip
        process = machine.popen(
            command, self.root / f"runner-{name}.log", env={**os.environ, **(env or {})}
        )
        self.runner_processes[name] = process
        self.topology.processes.append(process)
        # A killed runner leaves its in-memory results directory (river_runner/data_out.py)
        # and its blob cache beside the tasks' scratch directories, both outside `root`.
        data_dir = self.root / "runners" / name
        self.topology.leftovers.append(memory_dir(name, data_dir))
        self.topology.leftovers.append(Path(tempfile.gettempdir()) / cache_dir_name(name, data_dir))

    def node(self, name: str) -> dict[str, Any] | None:
        nodes = {n["name"]: n for n in self.api.get("/river/api/nodes")["nodes"]}
        return nodes.get(name)

    def wait_online(self, *names: str, timeout: float = 30.0) -> None:
        for name in names:
            wait_for(
                lambda name=name: (self.node(name) or {}).get("state") == "online",
                timeout,
                f"runner {name} online (see {self.root / f'runner-{name}.log'})",
            )

    def overlay(self) -> dict[str, Any]:
        return self.api.get("/river/api/overlay")

    def wait_links_up(self, *names: str, timeout: float = 20.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            allocations = {a["node"]: a for a in self.overlay()["allocations"]}
            ok = all(allocations.get(n, {}).get("host_links") == "up" for n in names)
            return allocations if ok else None

        return wait_for(ready, timeout, f"host overlay links of {names} up")


@dataclass
class OverlayNet:
    cluster: OverlayCluster
    runner1: Machine
    runner2: Machine
    w1: Machine
    w2: Machine
    allocations: dict[str, Any] = field(default_factory=dict)
    echo_server: EchoServer | None = None


@pytest.fixture(scope="module")
def overlay_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverlayNet]:
    """Host + runners r1 (192.168.251.2) and r2 (.3) with workload namespaces w1 and w2,
    started once per module (a Jupyter host takes seconds to start); removed afterwards."""
    root = tmp_path_factory.mktemp("overlay")
    topology = Topology().start()
    net: OverlayNet | None = None
    try:
        # These tests are about the hub (host-routed) path; direct runner-to-runner paths
        # are tests/netns/test_overlay_direct.py's.
        cluster = OverlayCluster(
            topology,
            root,
            topology.machine("host", 1),
            host_args=["--RiverHost.overlay_direct=False"],
        )
        net = OverlayNet(
            cluster,
            runner1=topology.machine("runner1", 2),
            runner2=topology.machine("runner2", 3),
            w1=topology.workload("w1"),
            w2=topology.workload("w2"),
        )
        cluster.start_host()
        cluster.start_runner("r1", net.runner1)
        cluster.start_runner("r2", net.runner2)
        cluster.wait_online("r1", "r2")
        net.allocations = cluster.wait_links_up("r1", "r2")
        yield net
    finally:
        if net is not None:
            if net.echo_server is not None:
                net.echo_server.close()
            if net.cluster.host_process is not None:
                net.cluster.stop_host(signal.SIGKILL)  # a clean Jupyter stop takes seconds
        topology.close()
        _kill_leftover_tasks(root)
        remove_task_namespaces(root)


def remove_task_namespaces(root: Path, runners: Iterable[str] = ("r1", "r2")) -> None:
    """Namespace files of tasks a killed runner could not remove (runner-side, they were
    mounts in the runner's own mount namespace, gone with it; here only the name is left)."""
    for runner in runners:
        tasks = str(root / "runners" / runner / "tasks")
        prefix = task_netns.namespace_name(tasks, 0).rsplit("-", 1)[0] + "-"
        for path in Path("/var/run/netns").glob(prefix + "*"):
            if os.path.ismount(path):
                run_ip("netns", "delete", path.name, check=False)
            else:
                path.unlink(missing_ok=True)


# The jobs machines: a host and runners r1..r3 on the overlay, shared by test_job_launcher
# and test_jobs (tests/shared.py; docs/testing.md): namespaces, a host, three runners and
# their links cost tens of seconds under CI load, and each test ends its jobs.
JOB_RUNNERS = ("r1", "r2", "r3")
JOBS_CLUSTER = register("jobs_cluster")


@pytest.fixture(scope="module")
def jobs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverlayCluster]:
    """A host and runners r1..r3 (process backend, as root), all on the overlay."""

    def start(stack: Any) -> OverlayCluster:
        root = tmp_path_factory.mktemp("jobs")
        topology = Topology().start()
        made = OverlayCluster(topology, root, topology.machine("host", 1))

        def close() -> None:
            if made.host_process is not None:
                made.stop_host(signal.SIGKILL)
            topology.close()
            _kill_leftover_tasks(root)
            remove_task_namespaces(root, JOB_RUNNERS)

        stack.callback(close)
        made.start_host()
        for i, name in enumerate(JOB_RUNNERS):
            made.start_runner(name, topology.machine(f"runner{i + 1}", i + 2))
        made.wait_online(*JOB_RUNNERS)
        made.wait_links_up(*JOB_RUNNERS)
        return made

    with shared(JOBS_CLUSTER, start) as made:
        yield made
