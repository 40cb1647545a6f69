"""A container task cannot drive its runner: it calls the runner API at its gateway address
(the docker host, port of the runner, which listens on every address here as on a real
cluster) with no credential, a guessed one, the join token and a user token, and every call
is refused (401, or the connection is refused) with no effect: nothing is launched and a
victim task keeps running. Skipped (by this directory's conftest) without a Docker daemon."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import JOIN_TOKEN, Cluster
from tests.docker.conftest import PYTHON_IMAGE, containers_of, remove_containers

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

NAME = f"guard-{uuid.uuid4().hex[:6]}"

ATTACK = """
import json, os, socket, struct, urllib.error, urllib.request
def gateway():
    with open("/proc/net/route") as routes:
        for line in routes.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
port = int(os.environ["RUNNER_PORT"])
base = f"http://{gateway()}:{port}"
def call(method, path, auth=None, body=None):
    request = urllib.request.Request(base + path, method=method,
        data=json.dumps(body).encode() if body is not None else None)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return "unreachable: " + type(error).__name__
launch = {"task_id": "1", "kind": "command", "command": ["sleep", "300"],
          "cpus": [0], "memory": 0, "gpus": [], "name": "planted"}
codes = {}
for auth in (None, "river-runner guessed", "river-runner " + os.environ["JOIN"],
             "token " + os.environ["USER_TOKEN"]):
    codes[f"health {auth}"] = call("GET", "/api/health", auth)
    codes[f"launch {auth}"] = call("POST", "/api/tasks", auth, launch)
    codes[f"kill {auth}"] = call("POST", "/api/tasks/" + os.environ["VICTIM"] + "/kill", auth, {})
print("RESULT " + json.dumps({"base": base, "codes": codes}))
"""


@pytest.fixture
def guarded(cluster: Cluster, docker_client: Any) -> Iterator[Cluster]:
    try:
        cluster.start_runner(
            NAME,
            "--backend",
            "docker",
            "--default-image",
            PYTHON_IMAGE,
            "--cpus",
            "0-1",
            "--bind",
            "0.0.0.0",
        )
        yield cluster
    finally:
        cluster.close()
        remove_containers(docker_client, NAME)


def test_a_container_task_gets_no_power_over_the_runner_api(
    guarded: Cluster, docker_client: Any
) -> None:
    victim = guarded.submit(command=["sleep", "120"], cores=1, image=PYTHON_IMAGE)
    guarded.wait_task(victim["id"], "running", timeout=60)
    attacker = guarded.submit(
        kind="python",
        script=ATTACK,
        cores=1,
        image=PYTHON_IMAGE,
        env={
            "RUNNER_PORT": str(guarded.runners[NAME].port),
            "VICTIM": victim["id"],
            "JOIN": JOIN_TOKEN,
            "USER_TOKEN": guarded.token,
        },
    )
    done = guarded.wait_task(attacker["id"], {"completed", "failed"}, timeout=90)
    lines = [
        line["text"] for line in guarded.get(f"/river/api/tasks/{attacker['id']}/logs")["lines"]
    ]
    assert done["state"] == "completed", lines
    result = json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])
    refused = {
        key: code
        for key, code in result["codes"].items()
        if code != 401 and not str(code).startswith("unreachable")
    }
    assert not refused, f"calls from a container to {result['base']} were not refused: {refused}"
    # No effect: the victim still runs, and no container was planted by the calls.
    assert guarded.task(victim["id"])["state"] == "running"
    names = [c.labels.get("river.task_id") for c in containers_of(docker_client, NAME)]
    assert "1" not in names, names
    guarded.request("POST", f"/river/api/tasks/{victim['id']}/kill")
    guarded.wait_task(victim["id"], "killed", timeout=60)
