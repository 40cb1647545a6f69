"""GET /tasks/{id}/transitions (issue #21's task view): a task's recorded states in order,
with their reasons, for its owner and operators only (like its logs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, as_user, running_cluster

A = "/river/api"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("transitions"), ("n1", "--cpus", "0")) as c:
        yield c


def _states(cluster: Cluster, task_id: str, token: str) -> list[dict]:
    answer = cluster.ok("GET", f"{A}/tasks/{task_id}/transitions", **as_user(token))
    return answer["transitions"]


def test_the_owner_reads_the_timeline_in_order_with_the_end_reason(cluster: Cluster) -> None:
    tokens = cluster.make_users("tara", "otto")
    viewer = cluster.make_users("vic", role="viewer")["vic"]
    operator = cluster.make_users("opal", role="operator")["opal"]

    def submit(command: list[str]) -> str:
        response = cluster.request(
            "POST", f"{A}/tasks", json={"command": command}, **as_user(tokens["tara"])
        )
        assert response.status_code == 201, response.text
        return response.json()["task"]["id"]

    holder = submit(["sleep", "600"])  # holds n1's one core
    cluster.wait_task(holder, "running")
    done = submit(["echo", "hi"])  # waits behind it
    cluster.ok("POST", f"{A}/tasks/{holder}/kill", json={})
    cluster.wait_task(holder, "killed")
    cluster.wait_task(done, "completed")

    timeline = _states(cluster, done, tokens["tara"])
    states = [t["state"] for t in timeline]
    assert states[0] == "queued" and states[-1] == "completed", states
    assert states.index("assigning") < states.index("running"), states
    ats = [t["at"] for t in timeline]
    assert ats == sorted(ats)
    killed = _states(cluster, holder, tokens["tara"])
    assert killed[-1]["state"] == "killed" and killed[-1]["detail"], killed

    # Operators read anyone's; another user and a viewer are told it does not exist.
    assert _states(cluster, done, operator) == timeline
    for stranger in (tokens["otto"], viewer):
        response = cluster.request("GET", f"{A}/tasks/{done}/transitions", **as_user(stranger))
        assert response.status_code == 404, response.text
        assert f"no task {done}" in response.json()["message"]
    bad = cluster.request("GET", f"{A}/tasks/not-an-id/transitions")
    assert bad.status_code == 400 and "not-an-id" in bad.json()["message"]
