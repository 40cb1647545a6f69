"""Multi-node jobs for real: three runners in their own machine namespaces, gangs of three
members on the overlay and in host mode (river_server/jobs.py, job_ports.py, issue #16).

The collective is a small TCP allreduce written in the task's script: rank 0 listens on
MASTER_ADDR:MASTER_PORT, the other ranks connect and send their values, rank 0 sends the
sum back to all. It crosses the overlay between every pair of runners (through the host
hub), with nothing but the rendezvous variables River sets.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from tests.netns.conftest import HOST_PORT, OverlayCluster
from tests.netns.topology import HostAPI, wait_for

RUNNERS = ("r1", "r2", "r3")

ALLREDUCE = r"""
import os, socket, time
rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
assert os.environ["RIVER_NODE_RANK"] == str(rank) == os.environ["NODE_RANK"]
assert os.environ["RIVER_NUM_NODES"] == str(size) and os.environ["LOCAL_RANK"] == "0"
hosts = open(os.environ["RIVER_HOSTFILE"]).read().split("\n")
print("hostfile", len([h for h in hosts if h]), hosts[0])
print("me", os.environ["RIVER_OVERLAY_IP"] if "RIVER_OVERLAY_IP" in os.environ else "-")
value = (rank + 1) * 10
if rank == 0:
    server = socket.create_server((addr, port))
    peers = [server.accept()[0] for _ in range(size - 1)]
    total = value + sum(int(p.makefile().readline()) for p in peers)
    for p in peers:
        p.sendall(f"{total}\n".encode())
else:
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    conn.sendall(f"{value}\n".encode())
    total = int(conn.makefile().readline())
print(f"rank {rank} allreduce sum={total}")
"""

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"


@pytest.fixture
def cluster(jobs_cluster: OverlayCluster) -> OverlayCluster:
    """The jobs machines (tests/netns/conftest.py), shared with test_job_launcher."""
    return jobs_cluster


def submit(cluster: OverlayCluster, **body: Any) -> dict[str, Any]:
    answer = cluster.api.request("POST", "/river/api/tasks", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def task(cluster: OverlayCluster, task_id: str) -> dict[str, Any]:
    return cluster.api.get(f"/river/api/tasks/{task_id}")["task"]


def cores_of(cluster: OverlayCluster, name: str) -> int:
    return len((cluster.node(name) or {})["cpus"])


def test_three_node_allreduce_over_the_overlay(cluster: OverlayCluster) -> None:
    answer = submit(cluster, script=ALLREDUCE, nodes=3, cores=1, name="allreduce")
    members = answer["members"]
    assert [m["job"]["rank"] for m in members] == [0, 1, 2]
    assert len({m["job"]["id"] for m in members}) == 1
    finished = [cluster.api.finished(m["id"], timeout=90) for m in members]
    logs = {m["id"]: cluster.api.task_lines(m["id"]) for m in members}
    assert [t["state"] for t in finished] == ["completed"] * 3, (finished, logs)
    assert sorted(t["node"] for t in finished) == list(RUNNERS)
    master = finished[0]["job"]["master_addr"]
    subnets = {a["node"]: a["subnet"] for a in cluster.overlay()["allocations"]}
    for rank, member in enumerate(finished):
        lines = logs[member["id"]]
        assert f"rank {rank} allreduce sum=60" in lines, lines
        assert f"hostfile 3 {master} slots=1" in lines, lines
        assert member["job"]["master_addr"] == master
        address = ipaddress.IPv4Address(member["overlay_ip"])
        assert address in ipaddress.IPv4Network(subnets[member["node"]])
    assert finished[0]["overlay_ip"] == master


def test_gang_that_does_not_fit_waits_then_starts_whole(cluster: OverlayCluster) -> None:
    cores = cores_of(cluster, "r3")
    blocker = submit(cluster, command=["sleep", "600"], cores=cores, target="r3")["task"]
    wait_for(lambda: task(cluster, blocker["id"])["state"] == "running", 30, "blocker runs")
    members = submit(cluster, script=ALLREDUCE, nodes=3, cores=cores)["members"]

    def waiting() -> str | None:
        return task(cluster, members[0]["id"]).get("wait_reason")

    reason = wait_for(lambda: (waiting() or "").startswith("2 of 3 nodes"), 20, "gang reason")
    assert reason
    for member in members:
        current = task(cluster, member["id"])
        assert current["state"] == "queued" and current["node"] is None, current
    assert "2 of 3 nodes with" in (task(cluster, members[2]["id"])["wait_reason"] or "")
    killed = cluster.api.request("POST", f"/river/api/tasks/{blocker['id']}/kill")
    assert killed.status_code == 200, killed.text
    finished = [cluster.api.finished(m["id"], timeout=90) for m in members]
    assert [t["state"] for t in finished] == ["completed"] * 3, finished
    assert sorted(t["node"] for t in finished) == list(RUNNERS)
    for rank, member in enumerate(members):
        assert f"rank {rank} allreduce sum=60" in cluster.api.task_lines(member["id"])


def test_member_killed_mid_run_ends_the_job_with_the_reason(cluster: OverlayCluster) -> None:
    members = submit(cluster, script=SLEEPER, nodes=3, cores=1)["members"]
    for member in members:
        wait_for(lambda m=member: "up" in cluster.api.task_lines(m["id"]), 60, "member prints up")
    victim = members[1]
    killed = cluster.api.request("POST", f"/river/api/tasks/{victim['id']}/kill")
    assert killed.status_code == 200, killed.text
    job_id = victim["job"]["id"]
    for member in (members[0], members[2]):
        ended = cluster.api.finished(member["id"], timeout=30)
        assert ended["state"] == "killed", ended
        assert f"job {job_id} ended: member {victim['id']} (rank 1) killed" in ended["reason"]


def test_bad_job_submissions_say_what_to_fix(cluster: OverlayCluster) -> None:
    cases = [
        ({"nodes": 3, "network": "hostnet"}, "network must be 'overlay' or 'host'"),
        ({"nodes": 4}, "a job of 4 nodes needs 4 distinct nodes"),
        ({"nodes": 2, "target": "r1"}, "cannot target one node"),
        ({"nodes": 0}, "nodes"),
    ]
    for extra, message in cases:
        answer = cluster.api.request(
            "POST", "/river/api/tasks", json={"command": ["true"], "cores": 1, **extra}
        )
        assert answer.status_code == 400, (extra, answer.text)
        assert message in answer.text, (extra, answer.text)


def test_magic_streams_every_rank_and_ends_with_the_job(
    cluster: OverlayCluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`%%river submit --nodes 3`: the members' lines reach the cell prefixed by rank and
    the cell returns once the job has ended (the magic runs in the host's namespace)."""
    from IPython.core.interactiveshell import InteractiveShell

    from river_magics import load_ipython_extension
    from tests.netns.conftest import ADMIN_TOKEN, HOST_PORT

    monkeypatch.setenv("RIVER_URL", f"http://{cluster.host.address}:{HOST_PORT}")
    monkeypatch.setenv("RIVER_TOKEN", ADMIN_TOKEN)
    shell = InteractiveShell.instance()
    load_ipython_extension(shell)
    cluster.host.thread().call(
        shell.run_cell_magic, "river", "submit --nodes 3 -c 1", ALLREDUCE, timeout=120
    )
    out = capsys.readouterr().out
    for rank in range(3):
        assert f"[rank {rank}] rank {rank} allreduce sum=60" in out, out


def test_client_submit_nodes_returns_the_members(cluster: OverlayCluster) -> None:
    from river_magics import Client
    from tests.netns.conftest import ADMIN_TOKEN, HOST_PORT

    def run() -> tuple[list[str], list[dict[str, Any]]]:
        client = Client(f"http://{cluster.host.address}:{HOST_PORT}", token=ADMIN_TOKEN)
        group = client.submit(script=ALLREDUCE, nodes=3, cores=1)
        return list(group.labels), group.wait(timeout=90)

    labels, ended = cluster.host.thread().call(run, timeout=120)
    assert labels == ["rank 0", "rank 1", "rank 2"]
    assert [t["state"] for t in ended] == ["completed"] * 3
    assert len({t["job"]["id"] for t in ended}) == 1


def test_shell_river_submit_nodes(
    cluster: OverlayCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.netns.conftest import ADMIN_TOKEN, HOST_PORT

    monkeypatch.setenv("RIVER_URL", f"http://{cluster.host.address}:{HOST_PORT}")
    monkeypatch.setenv("RIVER_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    done = cluster.host.python(
        "-m", "river_runner.cli", "submit", "--json", "--nodes", "3", "-c", "1", "--", "true"
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["job"]["rank"] for r in records] == [0, 1, 2]
    ended = [cluster.api.finished(r["id"], timeout=60)["state"] for r in records]
    assert ended == ["completed"] * 3


# A host-network member: holds the job's port on its node's own address for a while
# (so two jobs on the same nodes must have different ports), then prints what it held.
HOLD_PORT = r"""
import os, socket, time
port = int(os.environ["MASTER_PORT"])
me = socket.create_server(("0.0.0.0", port))
print("holding", port, flush=True)
time.sleep(float(os.environ.get("HOLD", "600")))
"""


def node_addresses(cluster: OverlayCluster) -> dict[str, str]:
    nodes = cluster.api.get("/river/api/nodes")["nodes"]
    return {n["name"]: n["url"].split("//", 1)[1].rsplit(":", 1)[0] for n in nodes}


def test_three_node_allreduce_in_host_mode(cluster: OverlayCluster) -> None:
    """Rank 0 binds MASTER_ADDR, its node's own underlay address: only possible in the
    node's own network stack (a member in an overlay namespace has no such address)."""
    answer = submit(cluster, script=ALLREDUCE, nodes=3, cores=1, network="host")
    members = answer["members"]
    assert {m["job"]["network"] for m in members} == {"host"}
    finished = [cluster.api.finished(m["id"], timeout=90) for m in members]
    logs = {m["id"]: cluster.api.task_lines(m["id"]) for m in members}
    assert [t["state"] for t in finished] == ["completed"] * 3, (finished, logs)
    addresses = node_addresses(cluster)
    master = finished[0]["job"]["master_addr"]
    assert master == addresses[finished[0]["node"]]
    port = finished[0]["job"]["master_port"]
    assert 29500 <= port <= 29999
    for rank, member in enumerate(finished):
        lines = logs[member["id"]]
        assert f"rank {rank} allreduce sum=60" in lines, lines
        assert f"hostfile 3 {master} slots=1" in lines, lines
        assert "me -" in lines, lines  # no overlay address: the node's own network
        assert member["overlay_ip"] is None
        assert (member["job"]["master_addr"], member["job"]["master_port"]) == (master, port)


def test_two_host_mode_jobs_get_distinct_ports_released_at_the_end(
    cluster: OverlayCluster,
) -> None:
    # cores=0 (an admin may): both jobs run at once on the same one-core runners
    first = submit(cluster, script=HOLD_PORT, nodes=3, cores=0, network="host")["members"]
    second = submit(cluster, script=HOLD_PORT, nodes=3, cores=0, network="host")["members"]
    for member in first + second:
        wait_for(
            lambda m=member: any(
                line.startswith("holding") for line in cluster.api.task_lines(m["id"])
            ),
            60,
            f"member {member['id']} holds its port",
        )
    running = [task(cluster, m["id"]) for m in first + second]
    assert {t["state"] for t in running} == {"running"}, running
    assert sorted(t["node"] for t in running) == sorted(RUNNERS * 2)  # same three nodes
    port_a = running[0]["job"]["master_port"]
    port_b = running[3]["job"]["master_port"]
    assert port_a != port_b
    for member, port in zip(first + second, [port_a] * 3 + [port_b] * 3, strict=True):
        assert f"holding {port}" in cluster.api.task_lines(member["id"])
    for group in (first, second):
        killed = cluster.api.request("POST", f"/river/api/tasks/{group[0]['id']}/kill")
        assert killed.status_code == 200, killed.text
        for member in group:
            assert cluster.api.finished(member["id"], timeout=30)["state"] == "killed"
    # Both jobs have ended, so their ports are free again: the next job gets the lowest.
    third = submit(cluster, script=HOLD_PORT, nodes=3, cores=1, network="host", env={"HOLD": "0"})[
        "members"
    ]
    ended = [cluster.api.finished(m["id"], timeout=60) for m in third]
    assert [t["state"] for t in ended] == ["completed"] * 3, ended
    assert ended[0]["job"]["master_port"] == min(port_a, port_b)


def test_host_mode_is_for_the_configured_role(cluster: OverlayCluster) -> None:
    """A `user` below c.RiverHost.host_network_role (default operator) gets a 403 that
    says what to do; the same user may run the job on the overlay."""
    from river_server import db
    from river_server.auth import create_token, ensure_user

    engine = db.make_engine(f"sqlite:///{cluster.root / 'host' / 'river.db'}")
    try:
        sessions = db.make_sessionmaker(engine)
        ensure_user(sessions, "hana", "user")
        token = create_token(sessions, "hana", label="host-network test")
    finally:
        engine.dispose()
    as_user = HostAPI(cluster.host, HOST_PORT, token)
    body = {"command": ["true"], "cores": 1, "nodes": 2}
    refused = as_user.request("POST", "/river/api/tasks", json={**body, "network": "host"})
    assert refused.status_code == 403, refused.text
    assert "c.RiverHost.host_network_role" in refused.text
    allowed = as_user.request("POST", "/river/api/tasks", json=body)
    assert allowed.status_code == 201, allowed.text
    for member in allowed.json()["members"]:
        assert cluster.api.finished(member["id"], timeout=60)["state"] == "completed"


def test_shell_river_submit_network_host(
    cluster: OverlayCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`river submit --nodes 2 --network host` (the magic shares the argument)."""
    from tests.netns.conftest import ADMIN_TOKEN

    monkeypatch.setenv("RIVER_URL", f"http://{cluster.host.address}:{HOST_PORT}")
    monkeypatch.setenv("RIVER_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    argv = ["submit", "--json", "--nodes", "2", "--network", "host", "-c", "0", "--", "true"]
    done = cluster.host.python("-m", "river_runner.cli", *argv)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["job"]["network"] for r in records] == ["host", "host"]
    ended = [cluster.api.finished(r["id"], timeout=60) for r in records]
    assert [t["state"] for t in ended] == ["completed"] * 2
    assert ended[0]["job"]["master_addr"] == node_addresses(cluster)[ended[0]["node"]]
