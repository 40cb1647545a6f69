"""Priorities, preemption and the share view, attacked as a plain user (docs/security.md).

- `priority` over the role's bound must be refused on every way in, not only a single
  task: a multi-node job, an array member (a VPS goes through the same submit); malformed values are a 400, not a 500;
- the runner's `terminate` action (preemption's SIGTERM) is reachable only with the
  runner credential: a user's token or a task's own code gets 401 and the task runs on;
- `GET /share` tells a viewer usage figures per user and nothing about tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster import Cluster, as_user, running_cluster

A = "/river/api"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("priority-paths"))
    with running_cluster(root, ("n1", "--cpus", "0")) as made:
        yield made


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    made = cluster.make_users("mallory", "alice", label="priority paths")
    made.update(cluster.make_users("vic", role="viewer", label="priority paths"))
    return made


@pytest.mark.parametrize(
    "body",
    [
        {"command": ["true"], "nodes": 2, "priority": 50},
        {"command": ["true"], "array": {"id": "sweep", "index": 0, "size": 4}, "priority": 50},
        {"command": ["true"], "priority": 10**30},
        {"command": ["true"], "priority": "50"},
        {"command": ["true"], "priority": 10.5},
        {"command": ["true"], "priority": True},
        {"command": ["true"], "preemptible": "yes"},
    ],
    ids=["job", "array", "huge", "string", "float", "bool", "preemptible-string"],
)
def test_a_priority_over_the_bound_or_malformed_is_refused_on_the_task_paths(
    cluster: Cluster, tokens: dict[str, str], body: dict
) -> None:
    answer = cluster.request("POST", f"{A}/tasks", json=body, **as_user(tokens["mallory"]))
    assert answer.status_code == 400, answer.text
    mine = cluster.get(f"{A}/tasks", **as_user(tokens["mallory"]))["tasks"]
    assert all((task.get("priority") or 0) <= 10 for task in mine)


def test_the_runners_terminate_needs_the_runner_credential(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    body = {"command": ["sh", "-c", "echo up; sleep 300"]}
    task = cluster.request("POST", f"{A}/tasks", json=body, **as_user(tokens["alice"])).json()
    task_id = task["task"]["id"] if "task" in task else task["id"]
    cluster.wait_task(task_id, "running", 60)
    runner = f"http://127.0.0.1:{cluster.runners['n1'].port}"
    try:
        for headers in (
            {},
            {"Authorization": f"token {tokens['mallory']}"},
            {"Authorization": "river-runner guessed"},
            {"Authorization": "Bearer x"},
        ):
            answer = httpx.post(
                f"{runner}/api/tasks/{task_id}/terminate",
                json={"grace": 0},
                headers=headers,
                timeout=10,
            )
            assert answer.status_code == 401, (headers, answer.text)
        assert cluster.task(task_id)["state"] == "running"
    finally:
        cluster.request("POST", f"{A}/tasks/{task_id}/kill", **as_user(tokens["alice"]))


def test_the_share_view_shows_figures_per_user_and_no_task(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    body = {"command": ["sh", "-c", "echo secret-command-line"], "name": "secret-name"}
    answer = cluster.request("POST", f"{A}/tasks", json=body, **as_user(tokens["alice"]))
    assert answer.status_code in (200, 201), answer.text
    shown = cluster.request("GET", f"{A}/share", **as_user(tokens["vic"]))
    assert shown.status_code == 200, shown.text
    text = shown.text
    for secret in ("secret-command-line", "secret-name", "sleep", "task"):
        assert secret not in text, secret
    for row in shown.json()["share"].get("users", []):
        assert set(row) <= {"user", "core_seconds", "gpu_seconds", "charge", "share", "priority"}
