"""The overlay for real: a host and two runners, each in its own network namespace.

Topology (all namespaces made by the fixture, removed after the module):

    switch ns: bridge sw0 ── veth ── host ns     192.168.251.1  (Jupyter + River host)
                         ├── veth ── runner1 ns  192.168.251.2  (river runner r1)
                         └── veth ── runner2 ns  192.168.251.3  (river runner r2)
    workload ns w1 ── veth ── river-br in runner1 ns
    workload ns w2 ── veth ── river-br in runner2 ns

Host and runners are the real programs (under `ip netns exec`) and configure their links
with pyroute2; workloads are attached by the runner-side code
(`python -m river_runner.overlay attach`). A TCP echo between w1 and w2 crosses both
tunnels and is routed by the host. The tests share one cluster and run in file order; the
last ones restart the host and release a runner.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import time

from river_runner.overlay import workload_veth
from tests.netns.conftest import OverlayNet
from tests.netns.topology import EchoServer, Machine, echo, wait_for

ECHO_PORT = 7000
IDENTITY = ("index", "vxlan_id", "subnet", "host_ip", "runner_ip", "underlay_ip")


def links_of(machine: Machine) -> dict[str, dict]:
    shown = machine.ip("-d", "-j", "link", "show")
    return {link["ifname"]: link for link in json.loads(shown.stdout)}


def attach(runner: Machine, workload: Machine, address: str) -> None:
    """Attach a workload namespace to a runner's overlay bridge (runner-side product code)."""
    done = runner.python("-m", "river_runner.overlay", "attach", workload.netns, address)
    assert done.returncode == 0, done.stderr


def echo_works(workload: Machine, address: str, timeout: float = 1.0) -> bool:
    payload = f"hello over the overlay {time.monotonic()}".encode()
    return echo(workload.thread(), address, ECHO_PORT, payload, timeout=timeout) == payload


def echo_fails(workload: Machine, address: str) -> bool:
    try:
        return not echo_works(workload, address)
    except OSError:
        return True


def workloads(net: OverlayNet) -> str:
    """w1 on r1 and w2 on r2, w2 at an address reserved before it existed, serving echo.
    Returns w2's address. Idempotent (tests may run alone)."""
    if net.echo_server is not None:
        return net.echo_server.listener.getsockname()[0]
    a1, a2 = net.allocations["r1"], net.allocations["r2"]
    w2_ip = net.cluster.api.reserve("r2", ttl=300)["ip"]
    assert ipaddress.IPv4Address(w2_ip) in ipaddress.IPv4Network(a2["subnet"])
    w1_ip = str(ipaddress.IPv4Network(a1["subnet"]).network_address + 10)
    wait_for(lambda: "river-br" in links_of(net.runner1), 10, "r1's overlay bridge")
    wait_for(lambda: "river-br" in links_of(net.runner2), 10, "r2's overlay bridge")
    attach(net.runner1, net.w1, w1_ip)
    attach(net.runner2, net.w2, w2_ip)
    attach(net.runner2, net.w2, w2_ip)  # idempotent
    net.echo_server = EchoServer(net.w2.thread(), w2_ip, ECHO_PORT)
    return w2_ip


def test_allocations_and_links(overlay_net: OverlayNet) -> None:
    net, cluster = overlay_net, overlay_net.cluster
    a1, a2 = net.allocations["r1"], net.allocations["r2"]
    assert {a1["index"], a2["index"]} == {1, 2}
    assert {a1["vxlan_id"], a2["vxlan_id"]} == {101, 102}
    assert (a1["underlay_ip"], a2["underlay_ip"]) == ("192.168.251.2", "192.168.251.3")
    overview = cluster.overlay()
    assert overview["enabled"] and overview["subnet"] == "10.128.0.0/12/6/14"
    assert overview["host_underlay_ip"] == "192.168.251.1"

    # The host: a bridge holding its address on each runner's subnet, a VXLAN to each runner.
    host_links = links_of(cluster.host)
    host_addresses = json.loads(cluster.host.ip("-4", "-j", "addr", "show").stdout)
    by_link = {a["ifname"]: [i["local"] for i in a["addr_info"]] for a in host_addresses}
    for allocation in (a1, a2):
        index = allocation["index"]
        info = host_links[f"rvh-vx{index}"]["linkinfo"]["info_data"]
        assert info["id"] == allocation["vxlan_id"] and info["port"] == 4789
        assert (info["local"], info["remote"]) == ("192.168.251.1", allocation["underlay_ip"])
        assert host_links[f"rvh-vx{index}"]["master"] == f"rvh-br{index}"
        assert host_links[f"rvh-vx{index}"]["mtu"] == 1450
        assert by_link[f"rvh-br{index}"] == [allocation["host_ip"]]

    # A runner: its spoke, and the route to the rest of the overlay through the host.
    r1_links = wait_for(
        lambda: (links := links_of(net.runner1)) and "river-vx" in links and links,
        10,
        "r1's overlay links (river-vx, river-br)",
    )
    info = r1_links["river-vx"]["linkinfo"]["info_data"]
    assert (info["id"], info["remote"], info["local"]) == (
        a1["vxlan_id"],
        "192.168.251.1",
        "192.168.251.2",
    )
    assert r1_links["river-vx"]["master"] == "river-br"
    routes = net.runner1.ip("-4", "route", "show").stdout
    assert f"10.128.0.0/12 via {a1['host_ip']} dev river-br" in routes


def test_workloads_on_two_runners_talk_through_the_host(overlay_net: OverlayNet) -> None:
    net, cluster = overlay_net, overlay_net.cluster
    w2_ip = workloads(net)
    before = json.loads(cluster.host.ip("-s", "-j", "link", "show", "rvh-vx2").stdout)[0]
    assert wait_for(lambda: echo_works(net.w1, w2_ip), 10, "w1 -> w2 echo over the overlay")
    big = bytes(range(256)) * 4096  # 1 MiB: many full-size segments through 1450-byte links
    assert echo(net.w1.thread(), w2_ip, ECHO_PORT, big, timeout=10) == big
    # Through the host: its tunnel to r2 carried the packets...
    after = json.loads(cluster.host.ip("-s", "-j", "link", "show", "rvh-vx2").stdout)[0]
    assert after["stats64"]["tx"]["bytes"] - before["stats64"]["tx"]["bytes"] > len(big)
    assert after["stats64"]["rx"]["packets"] > before["stats64"]["rx"]["packets"]
    # ...and w1's path is its runner, then the host (not the underlay: w1 has none).
    assert f"via {net.allocations['r1']['runner_ip']}" in net.w1.ip("route", "get", w2_ip).stdout
    assert f"via {net.allocations['r1']['host_ip']}" in net.runner1.ip("route", "get", w2_ip).stdout


def test_reserved_address_goes_to_the_task_and_expired_tokens_are_refused(
    overlay_net: OverlayNet,
) -> None:
    net, api = overlay_net, overlay_net.cluster.api
    reservation = api.reserve("r2", ttl=60)
    script = "import os; print('my overlay address', os.environ['RIVER_OVERLAY_IP'])"
    submitted = api.request(
        "POST",
        "/river/api/tasks",
        json={"kind": "python", "script": script, "ip_token": reservation["token"]},
    )
    assert submitted.status_code == 201, submitted.text
    task = submitted.json()["task"]
    assert task["overlay_ip"] == reservation["ip"]

    done = api.finished(task["id"], 30)
    lines = api.task_lines(task["id"])
    assert done["state"] == "completed", (done, lines)
    assert done["node"] == "r2"  # pinned to the runner whose subnet holds the address
    assert f"my overlay address {reservation['ip']}" in lines
    listed = {r["id"]: r for r in api.get("/river/api/overlay/reservations")["reservations"]}
    assert listed[reservation["id"]]["task_id"] == task["id"]

    again = api.request(
        "POST", "/river/api/tasks", json={"command": ["true"], "ip_token": reservation["token"]}
    )
    assert again.status_code == 400 and "already used" in again.json()["message"]

    token = api.reserve("r1", ttl=1)["token"]
    time.sleep(1.2)
    refused = api.request("POST", "/river/api/tasks", json={"command": ["true"], "ip_token": token})
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "expired" in message and "%river ip reserve" in message, message

    # Workloads get workload addresses only: not the runner's, the host's, broadcast, or
    # another runner's subnet.
    spare = net.cluster.topology.workload("w3")
    subnet = ipaddress.IPv4Network(net.allocations["r1"]["subnet"])
    for bad in (subnet[1], subnet[2], subnet.broadcast_address, net.allocations["r2"]["host_ip"]):
        refused = net.runner1.python("-m", "river_runner.overlay", "attach", spare.netns, str(bad))
        assert refused.returncode == 1 and "not a workload address" in refused.stderr, bad


SERVE_ON_RESERVED = """
import os, socket
ip = os.environ["RIVER_OVERLAY_IP"]
with socket.create_server((ip, 7100)) as server:  # fails unless the address is this task's
    print("interfaces", sorted(name for _, name in socket.if_nameindex()))
    print("listening on", ip, flush=True)
    conn, peer = server.accept()
    with conn:
        conn.sendall(f"pong from {ip} to {peer[0]}".encode())
"""

ASK = """
import socket
with socket.create_connection(("{ip}", 7100), timeout=10) as conn:
    print(conn.recv(200).decode())
"""


def river_namespaces(machine: Machine) -> list[str]:
    listed = machine.ip("netns", "list").stdout.split()
    return [name for name in listed if name.startswith("river-")]


def test_a_process_task_with_a_reserved_address_serves_on_it(overlay_net: OverlayNet) -> None:
    net, api = overlay_net, overlay_net.cluster.api
    held = api.reserve("r2", ttl=60)
    ip, token = held["ip"], held["token"]
    served = api.request(
        "POST",
        "/river/api/tasks",
        json={"kind": "python", "script": SERVE_ON_RESERVED, "ip_token": token},
    )
    assert served.status_code == 201, served.text
    server_id = served.json()["task"]["id"]

    deadline = time.monotonic() + 30
    while f"listening on {ip}" not in (lines := api.task_lines(server_id)):
        task = api.get(f"/river/api/tasks/{server_id}")["task"]
        assert task["state"] in ("queued", "assigning", "running"), (json.dumps(task), lines)
        assert time.monotonic() < deadline, "the server task did not listen in 30 s"
        time.sleep(0.1)
    # It bound the reserved address in a namespace of its own (not r2's, which has river-br):
    assert "interfaces ['eth0', 'lo']" in lines
    (namespace,) = river_namespaces(net.runner2)

    asked = api.request(
        "POST",
        "/river/api/tasks",
        json={"kind": "python", "script": ASK.format(ip=ip), "target": "r1"},
    )
    assert asked.status_code == 201, asked.text
    client = api.finished(asked.json()["task"]["id"], 30)
    assert client["state"] == "completed", (client, api.task_lines(client["id"]))
    runner1_ip = net.allocations["r1"]["runner_ip"]  # r1's tasks share r1's network
    assert f"pong from {ip} to {runner1_ip}" in api.task_lines(client["id"])
    assert api.finished(server_id, 30)["state"] == "completed"
    # The namespace and its veth go with the task.
    wait_for(lambda: not river_namespaces(net.runner2), 10, "the task's namespace to go")
    assert workload_veth(namespace) not in links_of(net.runner2)


def run_magics(lines: list[str]) -> list[str]:
    """Run %river lines in an IPython shell; the text each printed or displayed."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from river_magics import load_ipython_extension

    shell = InteractiveShell.instance()
    load_ipython_extension(shell)  # a fresh magic, not connected yet
    outputs = []
    for line in lines:
        with capture_output() as captured:
            shell.run_line_magic("river", line)
        shown = "".join(o.data.get("text/plain", "") for o in captured.outputs)
        outputs.append(captured.stdout + captured.stderr + shown)
    return outputs


def test_magics_show_the_overlay_and_hand_out_addresses(overlay_net: OverlayNet) -> None:
    net, api = overlay_net, overlay_net.cluster.api
    where = net.cluster.host.thread()  # the notebook kernel sits on the host machine here
    connect = f"connect {api.base} --token {api.headers['Authorization'].split()[1]}"
    connected, shown, reserved = where.call(
        run_magics, [connect, "overlay", "ip reserve --node r1 --ttl 60"]
    )
    assert "2 of 2 node(s) online" in connected
    assert "r1" in shown and "r2" in shown and "10.128.0.0/12/6/14" in shown
    assert net.allocations["r1"]["subnet"] in shown
    token = reserved.split("token (shown once): ")[1].split()[0]
    address = reserved.split("reserved ")[1].split()[0]
    listed, ran = where.call(
        run_magics,
        [
            connect,
            "ip list",
            f"run --ip-token {token} -- python3 -c "
            "\"import os; print('task at', os.environ['RIVER_OVERLAY_IP'])\"",
        ],
    )[1:]
    assert address in listed and "reserved" in listed
    assert f"task at {address}" in ran
    after = {r["ip"]: r for r in api.get("/river/api/overlay/reservations")["reservations"]}
    assert after[address]["task_id"] is not None  # spent by the task the magic ran
    spare = api.reserve("r1")
    released = where.call(run_magics, [connect, f"ip release {spare['id']}"])[1]
    assert f"released {spare['ip']}" in released


def test_host_restart_keeps_allocations_and_traffic(overlay_net: OverlayNet) -> None:
    net, cluster = overlay_net, overlay_net.cluster
    w2_ip = workloads(net)
    assert wait_for(lambda: echo_works(net.w1, w2_ip), 10, "echo before the restart")
    cluster.stop_host(signal.SIGKILL)
    # Links live in the kernel: workloads keep talking while the host process is down.
    assert echo_works(net.w1, w2_ip)
    # Now the host machine "reboots": its kernel state is gone too.
    for allocation in net.allocations.values():
        cluster.host.ip("link", "del", f"rvh-vx{allocation['index']}")
        cluster.host.ip("link", "del", f"rvh-br{allocation['index']}")
    assert echo_fails(net.w1, w2_ip)
    cluster.start_host()
    # No manual step: the host rebuilds its links from the DB, runners register again.
    after = cluster.wait_links_up("r1", "r2")
    for name, before in net.allocations.items():
        assert {k: after[name][k] for k in IDENTITY} == {k: before[k] for k in IDENTITY}
    assert wait_for(lambda: echo_works(net.w1, w2_ip), 10, "echo after the host restart")
    cluster.wait_online("r1", "r2")
    final = {a["node"]: a for a in cluster.overlay()["allocations"]}
    assert {n: {k: a[k] for k in IDENTITY} for n, a in final.items()} == {
        n: {k: a[k] for k in IDENTITY} for n, a in net.allocations.items()
    }


def test_released_runner_loses_its_host_links(overlay_net: OverlayNet) -> None:
    net, cluster = overlay_net, overlay_net.cluster
    api = cluster.api
    busy = api.request("DELETE", "/river/api/overlay/allocations/r1")
    assert busy.status_code == 409 and "online" in busy.json()["message"]
    cluster.runner_processes["r1"].terminate()
    cluster.runner_processes["r1"].wait(10)
    wait_for(lambda: (cluster.node("r1") or {}).get("state") == "offline", 15, "r1 offline")
    released = api.request("DELETE", "/river/api/overlay/allocations/r1")
    assert released.status_code == 200, released.text
    index = released.json()["released"]["index"]
    host_links = wait_for(
        lambda: (
            (links := links_of(cluster.host))
            and not {f"rvh-vx{index}", f"rvh-br{index}"} & set(links)
            and links
        ),
        10,
        "r1's host links removed",
    )
    assert f"rvh-vx{net.allocations['r2']['index']}" in host_links  # r2 untouched
    assert [a["node"] for a in cluster.overlay()["allocations"]] == ["r2"]
