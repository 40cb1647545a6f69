"""A standby host (issue #15): two hosts on one PostgreSQL database, one leads.

Real processes throughout: two Jupyter hosts on one database and one data directory,
runner processes given both URLs, the Python client as a notebook uses it, and a SIGKILL
of the leader with tasks in flight. The PostgreSQL tests run under `pytest --db
postgresql` (the second pass of `./dev.sh test`); the SQLite test under the default.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from river_magics import Client
from river_runner.protocol import LEADER_HEADER, ROLE_HEADER
from river_server import db
from river_server.nodes import Connection
from river_server.services import HostConfig, River
from tests.cluster import Cluster, GaveUp, database_url, wait_for

PRE, POST = 5, 5  # numbered lines each task prints before and after the leader dies


@pytest.fixture
def postgresql(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--db") != "postgresql":
        pytest.skip("a standby host needs PostgreSQL: run with --db postgresql")


@pytest.fixture
def leader(tmp_path: Path, postgresql: None) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    cluster.start_host()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def standby(leader: Cluster) -> Iterator[Cluster]:
    twin = leader.second_host()
    try:
        yield twin
    finally:
        twin.close()


def role(cluster: Cluster) -> str:
    return cluster.request("GET", "/river/api/nodes").headers.get(ROLE_HEADER, "")


def test_a_standby_serves_reads_and_refuses_writes_naming_the_leader(
    leader: Cluster, standby: Cluster
) -> None:
    leader.start_runner("r1", "--cpus", "0")
    task = leader.submit(command="echo from-the-leader", cores=1)
    leader.wait_task(task["id"], "completed")

    assert role(leader) == "leader" and role(standby) == "standby"
    # Reads come from the shared database and data dir.
    assert standby.task(task["id"])["state"] == "completed"
    assert [n["name"] for n in standby.get("/river/api/nodes")["nodes"]] == ["r1"]
    assert standby.get("/river/api/nodes")["nodes"][0]["state"] == "online"
    lines = standby.get(f"/river/api/tasks/{task['id']}/logs")["lines"]
    assert [line["text"] for line in lines if line["stream"] == "stdout"] == ["from-the-leader"]

    # Writes, event streams and runner routes: 503 naming the leader.
    for method, path in (
        ("POST", "/river/api/tasks"),
        ("GET", "/river/api/events"),
        ("POST", "/river/api/runner/heartbeat"),
    ):
        response = standby.request(method, path, json={"command": "true"})
        assert response.status_code == 503, (path, response.text)
        assert response.headers[LEADER_HEADER] == leader.url
        assert leader.url in response.json()["message"]
        assert "standby" in response.json()["message"]
    assert standby.get("/river/api/tasks")["tasks"][0]["id"] == task["id"]  # nothing added


def test_a_runner_given_both_urls_registers_with_the_leader(
    leader: Cluster, standby: Cluster
) -> None:
    # The standby first, both in one comma-separated --host: it must follow the 503's header.
    leader.runner_hosts = [f"{standby.url},{leader.url}"]
    runner = leader.start_runner("r1", "--cpus", "0")
    assert runner.log_path is not None
    # The runner logs it after the host has recorded the node online: wait for the line.
    log_path = runner.log_path
    wait_for(
        lambda: f"registered with {leader.url}" in log_path.read_text(),
        30,
        what="the runner to log its registration with the leader",
    )
    task = leader.submit(command="echo ok", cores=1)
    assert leader.wait_task(task["id"], "completed")["node"] == "r1"


def test_a_second_host_on_sqlite_refuses_to_start(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--db") != "sqlite":
        pytest.skip("the SQLite refusal is checked in the SQLite pass")
    cluster = Cluster(tmp_path)
    cluster.start_host()
    try:
        twin = Cluster(tmp_path, token=cluster.token, db_url=cluster.db_url, host_log="host2.log")
        with pytest.raises(GaveUp, match="host exited with 3"):
            twin.start_host(timeout=60)
        log = (tmp_path / "host2.log").read_text()
        assert "another River host" in log and "needs PostgreSQL" in log
        assert role(cluster) == "leader"  # the first one is untouched
    finally:
        cluster.close()


# ---- the scheduler's assignment cannot be applied twice -----------------------------------


def test_two_hosts_never_apply_one_assignment_twice(tmp_path: Path, postgresql: None) -> None:
    """Host B's pass meets a queued task that another host's pass is assigning (its row
    lock held, not committed yet): B must wait and then find it no longer queued, rather
    than write a second placement over the first."""
    url = database_url(tmp_path)
    river = River(HostConfig(data_dir=tmp_path / "b", db_url=url, runner_token="join"))
    other = create_engine(url)
    try:
        with river.sessions.begin() as session:
            session.add(
                db.Node(
                    name="n1", url="http://127.0.0.1:9", credential_hash="x", state="online",
                    cpus=[0, 1], numa=[[0, 1]], memory=2**30,
                )
            )  # fmt: skip
            session.add(
                db.Task(
                    id=1, owner="admin", kind="command", spec={"command": "true"},
                    request={"cores": 1, "memory": 0, "gpus": 0}, state="queued",
                    submitted_at=time.time(),
                )
            )  # fmt: skip
        river.connections.live["n1"] = Connection("n1", "http://127.0.0.1:9", "s", time.monotonic())
        assert river.leadership.try_lead()

        placed: dict[str, int] = {}

        async def one_pass() -> None:
            placed["n"] = river.dispatcher.schedule_pass()

        with other.connect() as connection:
            transaction = connection.begin()  # the other host's pass, mid-way
            connection.execute(text("SELECT state FROM tasks WHERE id = 1 FOR UPDATE"))
            thread = threading.Thread(target=lambda: asyncio.run(one_pass()))
            thread.start()

            def b_waits_on_the_row() -> bool:
                with other.connect() as probe:
                    return bool(
                        probe.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                "'Lock' AND datname = current_database()"
                            )
                        ).scalar()
                    )

            wait_for(b_waits_on_the_row, 20, what="host B's pass to wait on the task's row")
            connection.execute(
                text("UPDATE tasks SET state = 'assigning', node = 'n1' WHERE id = 1")
            )
            connection.execute(
                text("INSERT INTO task_transitions (task_id, state, at) VALUES (1, 'assigning', 0)")
            )
            transaction.commit()
        thread.join(30)
        assert not thread.is_alive()
        assert placed["n"] == 0
        with river.sessions() as session:
            states = session.scalars(
                select(db.TaskTransition.state).where(db.TaskTransition.task_id == 1)
            ).all()
        assert states == ["assigning"]
    finally:
        other.dispose()
        asyncio.run(river.close())


# ---- the failover ---------------------------------------------------------------------------


def _script(gate: Path) -> str:
    return (
        f"for i in $(seq 1 {PRE}); do echo pre $i; done; "
        f"while [ ! -e {gate} ]; do sleep 0.1; done; "
        f"for i in $(seq 1 {POST}); do echo post $i; done"
    )


EXPECTED = [f"pre {i}" for i in range(1, PRE + 1)] + [f"post {i}" for i in range(1, POST + 1)]


def _follow(
    url: list[str], token: str, task_id: str, seen: list[str], done: threading.Event
) -> None:
    """A notebook's `handle.stream()` in a thread, on a client that knows both hosts."""
    try:
        for line in Client(url=url, token=token).handle(task_id).stream(timeout=120):
            seen.append(line["text"])
    finally:
        done.set()


def test_the_standby_takes_over_when_the_leader_is_killed(
    leader: Cluster, standby: Cluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    leader.runner_hosts = [leader.url, standby.url]
    leader.start_runner("r1")
    leader.start_runner("r2")
    tasks = [
        leader.submit(command=_script(gate), cores=0, target=f"r{1 + i % 2}")["id"]
        for i in range(30)
    ]

    def all_printed_their_first_lines() -> bool:
        for task_id in tasks:
            lines = leader.get(f"/river/api/tasks/{task_id}/logs")["lines"]
            if [x["text"] for x in lines if x["stream"] == "stdout"] != EXPECTED[:PRE]:
                return False
        return True

    wait_for(all_printed_their_first_lines, 60, what="30 tasks running, first lines printed")
    assert {leader.task(t)["node"] for t in tasks} == {"r1", "r2"}

    # A notebook follows one task's output through a client given both URLs.
    seen: list[str] = []
    done = threading.Event()
    follower = threading.Thread(
        target=_follow, args=([leader.url, standby.url], leader.token, tasks[0], seen, done)
    )
    follower.start()
    wait_for(lambda: seen == EXPECTED[:PRE], 30, what="the client to stream the first lines")

    assert leader.host_process is not None
    killed = time.monotonic()
    leader.host_process.send_signal(signal.SIGKILL)
    leader.host_process.wait(10)
    wait_for(lambda: role(standby) == "leader", 15, what="the standby to take over")
    takeover = time.monotonic() - killed
    assert takeover < 10, f"the standby led only {takeover:.1f}s after the kill"
    print(f"takeover: the standby leads {takeover:.2f}s after the leader's SIGKILL")

    gate.touch()  # the tasks print their later lines and end, under the new leader
    for task_id in tasks:
        standby.wait_task(task_id, "completed", timeout=60)
    done.wait(60)
    follower.join(10)

    # Every task started once and ended once, as it should: the audit trail says so.
    engine = create_engine(standby.db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(db.TaskTransition.task_id, db.TaskTransition.state).order_by(
                    db.TaskTransition.id
                )
            ).all()
    finally:
        engine.dispose()
    by_task: dict[int, list[str]] = {}
    for task_id, state in rows:
        by_task.setdefault(task_id, []).append(state)
    for task_id in tasks:
        states = by_task[int(task_id)]
        counts = Counter(states)
        assert counts["assigning"] == 1 and counts["running"] == 1, (task_id, states)
        assert states[-1] == "completed" and counts["completed"] == 1, (task_id, states)
        assert not {"lost", "failed", "killed"} & set(states), (task_id, states)

    # No log line lost or repeated, on any task; and the follower saw them all, once.
    for task_id in tasks:
        lines = standby.get(f"/river/api/tasks/{task_id}/logs")["lines"]
        assert [x["text"] for x in lines if x["stream"] == "stdout"] == EXPECTED, task_id
    assert seen == EXPECTED

    # The runners follow the new leader; new work runs there.
    after = standby.submit(command="echo after", cores=0)
    assert standby.wait_task(after["id"], "completed", timeout=30)["node"] in {"r1", "r2"}
