"""Multi-node jobs for real: three runners in their own machine namespaces, gangs of three
members on the overlay (river_server/jobs.py, issue #16).

The collective is a small TCP allreduce written in the task's script: rank 0 listens on
MASTER_ADDR:MASTER_PORT, the other ranks connect and send their values, rank 0 sends the
sum back to all. It crosses the overlay between every pair of runners (through the host
hub), with nothing but the rendezvous variables River sets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from river_runner import task_netns
from tests.cluster import _kill_leftover_tasks
from tests.netns.conftest import OverlayCluster
from tests.netns.topology import Topology, run_ip, wait_for

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverlayCluster]:
    """A host and runners r1..r3 (process backend, as root), all on the overlay."""
    root = tmp_path_factory.mktemp("jobs")
    topology = Topology().start()
    made = OverlayCluster(topology, root, topology.machine("host", 1))
    try:
        made.start_host()
        for i, name in enumerate(RUNNERS):
            made.start_runner(name, topology.machine(f"runner{i + 1}", i + 2))
        made.wait_online(*RUNNERS)
        made.wait_links_up(*RUNNERS)
        yield made
    finally:
        if made.host_process is not None:
            made.stop_host(signal.SIGKILL)
        topology.close()
        _kill_leftover_tasks(root)
        for name in RUNNERS:
            tasks = str(root / "runners" / name / "tasks")
            prefix = task_netns.namespace_name(tasks, 0).rsplit("-", 1)[0] + "-"
            for path in Path("/var/run/netns").glob(prefix + "*"):
                if os.path.ismount(path):
                    run_ip("netns", "delete", path.name, check=False)
                else:
                    path.unlink(missing_ok=True)


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
        ({"nodes": 3, "network": "host"}, "network 'host' is not yet available"),
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
