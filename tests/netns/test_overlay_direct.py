"""Direct runner-to-runner overlay paths, for real (river_runner/overlay_direct.py, #16).

A host and three runners in machine namespaces: r1 and r2 reach each other directly, r3
was started with --no-overlay-direct (as a node behind NAT would be). Workloads w1, w2, w3
hang off their runners' bridges. Traffic w1 <-> w2 must not pass the host (its VXLAN
counters stay flat, and it keeps flowing with the host's tunnels down); w1 <-> w3 takes
the hub path, which still works.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cluster import _kill_leftover_tasks
from tests.netns.conftest import OverlayCluster
from tests.netns.topology import EchoServer, Machine, Topology, echo, wait_for

PORT = 7100
BIG = bytes(range(256)) * 4096  # 1 MiB: many full-size segments


@dataclass
class Direct:
    cluster: OverlayCluster
    runners: dict[str, Machine]
    workloads: dict[str, Machine]
    ips: dict[str, str]
    allocations: dict[str, dict]


def attach(runner: Machine, workload: Machine, address: str) -> None:
    done = runner.python("-m", "river_runner.overlay", "attach", workload.netns, address)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Direct]:
    root = tmp_path_factory.mktemp("direct")
    topology = Topology().start()
    cluster = OverlayCluster(topology, root, topology.machine("host", 1))
    servers: list[EchoServer] = []
    try:
        cluster.start_host()
        runners = {f"r{i}": topology.machine(f"runner{i}", i + 1) for i in (1, 2, 3)}
        for name, machine in runners.items():
            extra = ("--no-overlay-direct",) if name == "r3" else ()
            cluster.start_runner(name, machine, *extra)
        cluster.wait_online(*runners)
        allocations = cluster.wait_links_up(*runners)
        workloads, ips = {}, {}
        for i, name in enumerate(runners, start=1):
            workloads[name] = topology.workload(f"w{i}")
            ips[name] = str(ipaddress.IPv4Network(allocations[name]["subnet"]).network_address + 10)
            attach(runners[name], workloads[name], ips[name])
        for name in ("r2", "r3"):
            servers.append(EchoServer(workloads[name].thread(), ips[name], PORT))
        yield Direct(cluster, runners, workloads, ips, allocations)
    finally:
        for server in servers:
            server.close()
        if cluster.host_process is not None:
            cluster.stop_host(signal.SIGKILL)
        topology.close()
        _kill_leftover_tasks(root)


def host_tx(cluster: OverlayCluster, index: int) -> int:
    shown = cluster.host.ip("-s", "-j", "link", "show", f"rvh-vx{index}").stdout
    return int(json.loads(shown)[0]["stats64"]["tx"]["bytes"])


def host_rx(cluster: OverlayCluster, index: int) -> int:
    shown = cluster.host.ip("-s", "-j", "link", "show", f"rvh-vx{index}").stdout
    return int(json.loads(shown)[0]["stats64"]["rx"]["bytes"])


def route(machine: Machine, address: str) -> str:
    return machine.ip("route", "get", address).stdout


def echo_works(workload: Machine, address: str, payload: bytes, timeout: float = 2.0) -> bool:
    try:
        return echo(workload.thread(), address, PORT, payload, timeout=timeout) == payload
    except OSError:
        return False


def test_runners_that_reach_each_other_talk_without_the_host(direct: Direct) -> None:
    net, cluster = direct, direct.cluster
    w2 = net.ips["r2"]
    wait_for(lambda: "dev river-dx" in route(net.runners["r1"], w2), 20, "r1's direct route")
    wait_for(lambda: "dev river-dx" in route(net.runners["r2"], net.ips["r1"]), 20, "r2's")
    assert wait_for(lambda: echo_works(net.workloads["r1"], w2, b"hi"), 10, "w1 -> w2 echo")
    indexes = [net.allocations[n]["index"] for n in ("r1", "r2")]
    before = {i: (host_tx(cluster, i), host_rx(cluster, i)) for i in indexes}
    assert echo(net.workloads["r1"].thread(), w2, PORT, BIG, timeout=10) == BIG
    after = {i: (host_tx(cluster, i), host_rx(cluster, i)) for i in indexes}
    for i in indexes:  # not a byte of the 2 MiB went through the host's tunnels
        assert after[i][0] - before[i][0] < 64 * 1024, (before, after)
        assert after[i][1] - before[i][1] < 64 * 1024, (before, after)
    overview = {a["node"]: a for a in cluster.overlay()["allocations"]}
    assert [overview[n]["direct"] for n in ("r1", "r2", "r3")] == [True, True, False]


def test_the_direct_path_works_with_the_hub_tunnels_down(direct: Direct) -> None:
    net, cluster = direct, direct.cluster
    w2 = net.ips["r2"]
    wait_for(lambda: "dev river-dx" in route(net.runners["r1"], w2), 20, "r1's direct route")
    names = [f"rvh-vx{net.allocations[n]['index']}" for n in ("r1", "r2")]
    for name in names:
        cluster.host.ip("link", "set", name, "down")
    try:
        payload = f"no host {time.monotonic()}".encode()
        assert echo_works(net.workloads["r1"], w2, payload)
        # ... while the hub path (w1 -> w3, through rvh-vx of r1) is cut:
        assert not echo_works(net.workloads["r1"], net.ips["r3"], b"x", timeout=1.0)
    finally:
        for name in names:
            cluster.host.ip("link", "set", name, "up")
    assert wait_for(lambda: echo_works(net.workloads["r1"], net.ips["r3"], b"x"), 10, "hub back")


def test_a_runner_without_direct_reach_falls_back_to_the_hub(direct: Direct) -> None:
    net, cluster = direct, direct.cluster
    w3 = net.ips["r3"]
    a1, a3 = net.allocations["r1"], net.allocations["r3"]
    wait_for(lambda: "dev river-dx" in route(net.runners["r1"], net.ips["r2"]), 20, "r1 direct")
    assert f"via {a1['host_ip']}" in route(net.runners["r1"], w3)  # the hub's route
    assert "river-dx" not in net.runners["r3"].ip("link", "show").stdout
    before = host_tx(cluster, a3["index"])
    assert wait_for(lambda: echo_works(net.workloads["r1"], w3, b"hi"), 10, "w1 -> w3 echo")
    assert echo(net.workloads["r1"].thread(), w3, PORT, BIG, timeout=10) == BIG
    assert host_tx(cluster, a3["index"]) - before > len(BIG)  # through the host
    overview = {a["node"]: a for a in cluster.overlay()["allocations"]}
    assert overview["r3"]["direct"] is False and overview["r1"]["direct"] is True
