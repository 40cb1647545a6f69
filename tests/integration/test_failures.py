"""Crashes and bad input: runners and the host die mid-run; requests are malformed."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import sqlalchemy

from tests.cluster import Cluster, wait_for

LONG_TASK = "import time\nprint('started', flush=True)\ntime.sleep(30)\n"


def _db_rows(cluster: Cluster) -> list[tuple]:
    engine = sqlalchemy.create_engine(cluster.db_url)
    try:
        with engine.connect() as db:
            rows = db.exec_driver_sql("select id, state, node from tasks").fetchall()
            return sorted(tuple(row) for row in rows)
    finally:
        engine.dispose()


def _log_lines(cluster: Cluster, task_id: str) -> list[str]:
    return [line["text"] for line in cluster.get(f"/river/api/tasks/{task_id}/logs")["lines"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One host for the crash tests: each adds a runner of its own and pins its tasks to
    it, and what a crash leaves (an offline node, a restarted host) is what the next one
    must cope with anyway. A host start per test cost 10-15 s on CI's loaded cores."""
    c = Cluster(tmp_path_factory.mktemp("failures"))
    c.start_host()
    try:
        yield c
    finally:
        c.close()


def test_killed_runner_goes_offline_and_its_tasks_are_lost(cluster: Cluster) -> None:
    runner = cluster.start_runner("doomed")
    task = cluster.submit(kind="python", script=LONG_TASK, target="doomed")
    cluster.wait_task(task["id"], "running")
    killed_at = time.monotonic()
    runner.kill(signal.SIGKILL)
    timeout = cluster.heartbeat_interval * cluster.heartbeat_misses
    lost = cluster.wait_task(task["id"], "lost", timeout=timeout + 5)
    assert time.monotonic() - killed_at <= timeout + 5
    assert "offline" in lost["reason"]
    cluster.wait_node("doomed", "offline", timeout=5)


def test_host_restart_loses_nothing_and_runners_report_again(cluster: Cluster) -> None:
    cluster.start_runner("steady")
    script = (
        "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\n"
    )
    running = cluster.submit(kind="python", script=script, target="steady")
    finished = cluster.submit(command=["echo", "early"], target="steady")
    cluster.wait_task(finished["id"], "completed")
    cluster.wait_task(running["id"], "running")
    before = _db_rows(cluster)

    cluster.stop_host(signal.SIGKILL)
    cluster.start_host()

    # Every record is still there, and nothing went backwards.
    after = {row[0]: row for row in _db_rows(cluster)}
    assert set(after) == {row[0] for row in before}
    assert after[int(finished["id"])][1] == "completed"
    # The runner registers again and delivers the rest of the output and the final state.
    cluster.wait_node("steady", "online", timeout=15)
    done = cluster.wait_task(running["id"], "completed", timeout=30)
    assert done["exit_code"] == 0
    assert _log_lines(cluster, running["id"]) == [f"tick {i}" for i in range(6)]
    # And it can take new work.
    again = cluster.submit(command=["echo", "after restart"], target="steady")
    cluster.wait_task(again["id"], "completed")


def test_runner_restart_keeps_its_task(cluster: Cluster) -> None:
    """A restarted runner adopts its running task and reports its real exit status."""
    runner = cluster.start_runner("phoenix")
    script = "import time, sys\nprint('a', flush=True)\ntime.sleep(2)\nprint('b')\nsys.exit(5)\n"
    task = cluster.submit(kind="python", script=script, target="phoenix")
    wait_for(lambda: _log_lines(cluster, task["id"]) == ["a"], 20, what="first line")
    runner.kill(signal.SIGKILL)
    cluster.start_runner("phoenix")
    done = cluster.wait_task(task["id"], {"failed", "lost"}, timeout=30)
    assert done["state"] == "failed" and done["exit_code"] == 5
    assert _log_lines(cluster, task["id"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"command": ["true"], "target": "nowhere"}, 400, "unknown node"),
        ({"command": ["true"], "target": "solo:x"}, 400, "NUMA"),
        ({"command": ["true"], "target": "solo::a"}, 400, "GPU list"),
        ({"command": ["true"], "cores": -2}, 400, "cores"),
        ({"command": ["true"], "cores": 64}, 400, "cores"),
        ({"command": ["true"], "gpus": 1}, 400, "GPU"),
        ({"command": ["true"], "memory": "12Q"}, 400, "memory"),
        ({"command": []}, 400, "command"),
        ({"kind": "python"}, 400, "script"),
        ({"kind": "rust", "command": ["true"]}, 400, "kind"),
        ({"command": ["true"], "env": ["A=1"]}, 400, "env"),
    ],
)
def test_bad_submissions_are_refused_and_change_nothing(
    solo_cluster: Cluster, body: dict, status: int, fragment: str
) -> None:
    cluster = solo_cluster
    before = _db_rows(cluster)
    response = cluster.request("POST", "/river/api/tasks", json=body)
    assert response.status_code == status, response.text
    assert fragment.lower() in response.json()["message"].lower()
    assert _db_rows(cluster) == before


def test_bad_requests_get_clear_errors(solo_cluster: Cluster) -> None:
    cluster = solo_cluster
    before = _db_rows(cluster)
    cases = [
        ("GET", "/river/api/tasks/12345", 404, "no task"),
        ("GET", "/river/api/tasks/abc", 400, "number"),
        ("POST", "/river/api/tasks/12345/kill", 404, "no task"),
        ("GET", "/river/api/tasks/12345/logs", 404, "no task"),
    ]
    for method, path, status, fragment in cases:
        response = cluster.request(method, path)
        assert response.status_code == status, (path, response.text)
        assert fragment in response.json()["message"]
    response = cluster.request("POST", "/river/api/tasks", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["message"]
    # No credentials, or a wrong one: refused, and nothing is stored.
    for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
        response = cluster.request(
            "POST", "/river/api/tasks", json={"command": ["true"]}, headers=headers
        )
        assert response.status_code == 403
        assert cluster.request("GET", "/river/api/nodes", headers=headers).status_code == 403
    # A user token is no runner credential, and the join token alone cannot heartbeat.
    for secret in (f"token {cluster.token}", "river-runner test-join-token", "river-runner nope"):
        response = cluster.request(
            "POST", "/river/api/runner/heartbeat", json={}, headers={"Authorization": secret}
        )
        assert response.status_code == 401
    assert _db_rows(cluster) == before
