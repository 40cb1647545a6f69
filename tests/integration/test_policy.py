"""Policy on a live cluster: approval of `user` submissions, per-user and group quotas in the
scheduler, and a task that tries to drive its own runner (or steal its node's name)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import JOIN_TOKEN, Cluster, wait_for

A = "/river/api"
SLEEP = {"command": ["sleep", "60"], "cores": 1}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        Path(tmp_path_factory.mktemp("policy")),
        extra_host_args=["--RiverHost.require_approval=True"],
    )
    cluster.start_host()
    try:
        cluster.start_runner("pol", "--cpus", "0-1")
        yield cluster
    finally:
        cluster.close()


class As:
    """Calls the API with one user's token."""

    def __init__(self, cluster: Cluster, token: str) -> None:
        self.cluster = cluster
        self.headers = {"Authorization": f"token {token}"}

    def __call__(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.cluster.url}{A}{path}", headers=self.headers, timeout=30, **kw
        )

    def ok(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = self(method, path, **kw)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json()


def user(cluster: Cluster, name: str, role: str = "user") -> As:
    admin = As(cluster, cluster.token)
    if admin("GET", f"/users/{name}").status_code == 404:
        admin.ok("POST", "/users", json={"name": name, "role": role})
    return As(cluster, admin.ok("POST", "/tokens", json={"user": name})["token"])


def approved(cluster: Cluster, who: As, body: dict[str, Any]) -> dict[str, Any]:
    task = who.ok("POST", "/tasks", json=body)["task"]
    if task["state"] == "pending_approval":
        task = As(cluster, cluster.token).ok("POST", f"/tasks/{task['id']}/approve", json={})[
            "task"
        ]
    return task


def kill_all(cluster: Cluster) -> None:
    admin = As(cluster, cluster.token)
    for task in admin.ok("GET", "/tasks?all=1")["tasks"]:
        if task["state"] in ("pending_approval", "queued", "assigning", "running", "paused"):
            admin("POST", f"/tasks/{task['id']}/kill")
    wait_for(
        lambda: not admin.ok("GET", "/tasks?all=1&state=queued,assigning,running,paused")["tasks"],
        timeout=30,
        what="every task to end",
    )


def test_user_submissions_wait_for_an_operator(policy: Cluster) -> None:
    alice = user(policy, "alice")
    operator = user(policy, "oscar", "operator")
    task = alice.ok("POST", "/tasks", json={"command": ["echo", "approved"]})["task"]
    assert task["state"] == "pending_approval" and task["queue_position"] is None
    # Not the owner, nor a viewer, nor another user may decide; an operator may.
    assert alice("POST", f"/tasks/{task['id']}/approve", json={}).status_code == 403
    decided = operator.ok("POST", f"/tasks/{task['id']}/approve", json={"reason": "fine"})
    assert decided["task"]["state"] == "queued"
    done = policy.wait_task(task["id"], "completed")
    assert done["exit_code"] == 0
    assert operator("POST", f"/tasks/{task['id']}/approve", json={}).status_code == 409

    rejected = alice.ok("POST", "/tasks", json={"command": ["echo", "no"]})["task"]
    answer = operator.ok(
        "POST", f"/tasks/{rejected['id']}/reject", json={"reason": "use the big queue"}
    )["task"]
    assert answer["state"] == "killed"
    assert answer["reason"] == "rejected by oscar: use the big queue"
    assert alice.ok("GET", f"/tasks/{rejected['id']}/logs")["lines"] == []
    # Operators' own tasks do not wait for approval.
    own = operator.ok("POST", "/tasks", json={"command": ["true"]})["task"]
    assert own["state"] in ("queued", "assigning", "running", "completed")
    policy.wait_task(own["id"], "completed")


def test_user_and_group_quotas_hold_tasks_in_the_queue(policy: Cluster) -> None:
    admin = As(policy, policy.token)
    quinn = user(policy, "quinn")
    admin.ok("PATCH", "/users/quinn", json={"max_cores": 1})
    first = approved(policy, quinn, SLEEP)
    policy.wait_task(first["id"], "running")
    second = approved(policy, quinn, SLEEP)
    waiting = wait_for(
        lambda: (t := policy.task(second["id"]))["wait_reason"] and t,
        timeout=10,
        what="a wait reason",
    )
    assert waiting["state"] == "queued"
    assert waiting["wait_reason"].startswith("over quota: user quinn may hold at most 1 cores")
    # The node has a free core: only the quota holds the task. Raising it lets it start.
    node = policy.get("/river/api/nodes")["nodes"][0]
    assert node["free"]["cores"] == 1
    admin.ok("PATCH", "/users/quinn", json={"max_cores": None})
    policy.wait_task(second["id"], "running")
    kill_all(policy)

    # A group's quota is shared by its members.
    gina, gus = user(policy, "gina"), user(policy, "gus")
    admin.ok("POST", "/groups", json={"name": "lab", "max_cores": 1, "members": ["gina", "gus"]})
    running = approved(policy, gina, SLEEP)
    policy.wait_task(running["id"], "running")
    held = approved(policy, gus, SLEEP)
    waiting = wait_for(
        lambda: (t := policy.task(held["id"]))["wait_reason"] and t, timeout=10, what="a reason"
    )
    assert waiting["wait_reason"].startswith("over quota: group lab may hold at most 1 cores")
    admin.ok("POST", f"/tasks/{running['id']}/kill")
    policy.wait_task(held["id"], "running")
    kill_all(policy)


ATTACK = """
import json, os, urllib.request, urllib.error
port = int(os.environ["RUNNER_PORT"])
def call(method, path, auth=None, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
launch = {"task_id": "1", "kind": "command", "command": ["touch", os.environ["MARK"]],
          "cpus": [0], "memory": 0, "gpus": []}
victim = os.environ["VICTIM"]
codes = {}
for auth in (None, "river-runner guessed", "river-runner " + os.environ["JOIN"],
             "token " + os.environ["USER_TOKEN"]):
    codes[f"health {auth}"] = call("GET", "/api/health", auth)
    codes[f"launch {auth}"] = call("POST", "/api/tasks", auth, launch)
    codes[f"kill {auth}"] = call("POST", f"/api/tasks/{victim}/kill", auth, {})
secrets = [k for k, v in os.environ.items() if v == os.environ["JOIN"] and k != "JOIN"]
print("RESULT " + json.dumps({"codes": codes, "leaked": secrets}))
"""


def test_a_task_gets_401_from_its_runner_and_changes_nothing(
    policy: Cluster, tmp_path: Path
) -> None:
    admin = As(policy, policy.token)
    victim = admin.ok("POST", "/tasks", json=SLEEP)["task"]
    policy.wait_task(victim["id"], "running")
    mark = tmp_path / "launched-by-attacker"
    attacker = admin.ok(
        "POST",
        "/tasks",
        json={
            "kind": "python",
            "script": ATTACK,
            "cores": 1,
            "env": {
                "RUNNER_PORT": str(policy.runners["pol"].port),
                "VICTIM": victim["id"],
                "JOIN": JOIN_TOKEN,
                "USER_TOKEN": policy.token,
                "MARK": str(mark),
            },
        },
    )["task"]
    done = policy.wait_task(attacker["id"], {"completed", "failed"})
    lines = [line["text"] for line in policy.get(f"{A}/tasks/{attacker['id']}/logs")["lines"]]
    assert done["state"] == "completed", lines
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    assert result["codes"] and set(result["codes"].values()) == {401}, result["codes"]
    # No effect: nothing launched, the victim still runs, no runner secret in the task's env.
    assert not mark.exists()
    assert policy.task(victim["id"])["state"] == "running"
    assert result["leaked"] == []
    admin.ok("POST", f"/tasks/{victim['id']}/kill")
    policy.wait_task(victim["id"], "killed")


def test_re_registering_a_node_name_needs_that_runners_credential(policy: Cluster) -> None:
    before = {n["name"]: n for n in policy.get(f"{A}/nodes")["nodes"]}["pol"]
    body = {"name": "pol", "url": "http://127.0.0.1:9", "inbound_secret": "attacker", "cpus": [0]}
    for auth, code in (
        (f"river-runner {JOIN_TOKEN}", 409),  # the join token makes new nodes, not this one
        ("river-runner rrc_guessed", 401),
        (f"token {policy.token}", 401),  # user tokens are never runner credentials
        (None, 401),
    ):
        headers = {"Authorization": auth} if auth else {}
        response = httpx.post(
            f"{policy.url}{A}/runner/register", json=body, headers=headers, timeout=30
        )
        assert response.status_code == code, (auth, response.text)
        beat = httpx.post(f"{policy.url}{A}/runner/heartbeat", json={}, headers=headers, timeout=30)
        assert beat.status_code == 401
    after = {n["name"]: n for n in policy.get(f"{A}/nodes")["nodes"]}["pol"]
    assert after["url"] == before["url"] and after["state"] == "online"
    assert after["cores"] == before["cores"]
    # The node still takes work from the host: its credential and address are unchanged.
    task = As(policy, policy.token).ok("POST", "/tasks", json={"command": ["true"]})["task"]
    policy.wait_task(task["id"], "completed")


def _stream_until_second_task(cluster: Cluster, who: As, first: str, second: str) -> list[str]:
    """Event kinds (with task IDs) up to the second named task's state: for each named task
    the host sends its state and then its replayed lines, so this shows every line sent."""
    seen: list[str] = []
    with httpx.stream(
        "GET",
        f"{cluster.url}{A}/events?task={first}&task={second}&since=0",
        headers=who.headers,
        timeout=httpx.Timeout(30, read=30),
    ) as response:
        assert response.status_code == 200
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("task", "log"):
                data = json.loads(line[6:])
                task_id = data["task"]["id"] if kind == "task" else data["task_id"]
                seen.append(f"{kind} {task_id}")
                if kind == "task" and task_id == second:
                    return seen
    return seen


def test_viewers_and_other_users_see_states_but_never_output(policy: Cluster) -> None:
    alice, vera, bob = user(policy, "alice"), user(policy, "vera", "viewer"), user(policy, "bob")
    secret = approved(
        policy, alice, {"command": ["echo", "private output"], "env": {"KEY": "hunter2"}}
    )
    policy.wait_task(secret["id"], "completed")
    public = As(policy, policy.token).ok("POST", "/tasks", json={"command": ["true"]})["task"]
    policy.wait_task(public["id"], "completed")
    owner_view = _stream_until_second_task(policy, alice, secret["id"], public["id"])
    assert f"log {secret['id']}" in owner_view
    for who in (vera, bob):
        view = _stream_until_second_task(policy, who, secret["id"], public["id"])
        assert view == [f"task {secret['id']}", f"task {public['id']}"], view
        assert who("GET", f"/tasks/{secret['id']}/logs").status_code == 404
        assert "hunter2" not in who("GET", f"/tasks/{secret['id']}").text
