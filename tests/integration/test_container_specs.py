"""Container options of a task (image, environment, mounts, privileged) at the host's door:
validation, who may use them, and refusal where no docker node can run them. No Docker
daemon needed: a real host with a process runner answers all of it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from river_server import db
from river_server.auth import create_token, ensure_user
from tests.cluster import Cluster


@pytest.fixture(scope="module")
def proc_cluster(solo_cluster: Cluster) -> Cluster:
    return solo_cluster


@pytest.fixture(scope="module")
def user_token(proc_cluster: Cluster) -> str:
    """An API token of a plain `user` (the cluster's own token acts as admin)."""
    engine = db.make_engine(proc_cluster.db_url)
    sessions = db.make_sessionmaker(engine)
    try:
        ensure_user(sessions, "carol", "user")
        return create_token(sessions, "carol", label="container-spec tests")
    finally:
        engine.dispose()


def post(cluster: Cluster, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return cluster.request("POST", "/river/api/tasks", json=body, headers=headers)


def refused(response: httpx.Response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"], response.json()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"mounts": ["relative:/data"]}, "absolute path"),
        ({"mounts": ["/data"]}, "SRC:DST"),
        ({"mounts": ["/data:/data:rx"]}, "ro or rw"),
        ({"mounts": ["/data/../etc:/data"]}, "'..'"),
        ({"mounts": ["/tmp:/shared"]}, "River's own mount"),
        ({"mounts": "/a:/b"}, "list"),
        ({"privileged": "yes"}, "true or false"),
        ({"image": "bad image!"}, "docker image reference"),
        ({"environment": "Bad/Name"}, "environment name"),
        ({"image": "python:3.12", "environment": "ml"}, "not both"),
    ],
)
def test_bad_container_options_are_refused(
    proc_cluster: Cluster, extra: dict[str, Any], fragment: str
) -> None:
    refused(post(proc_cluster, {"command": ["true"], **extra}), 400, fragment)


def test_privileged_and_host_mounts_need_an_operator(
    proc_cluster: Cluster, user_token: str
) -> None:
    body = {"command": ["true"], "image": "python:3.12-slim"}
    refused(
        post(proc_cluster, {**body, "privileged": True}, user_token),
        403,
        "privileged containers need the operator role; you are user",
    )
    refused(
        post(proc_cluster, {**body, "mounts": ["/etc:/host-etc:ro"]}, user_token),
        403,
        "mounting /etc needs the operator role",
    )
    # An admin passes the role check; here no docker node exists, so it is refused for that.
    refused(
        post(proc_cluster, {**body, "privileged": True, "mounts": ["/etc:/host-etc:ro"]}),
        400,
        "no registered node runs the docker backend",
    )


def test_container_tasks_are_refused_without_a_docker_node(proc_cluster: Cluster) -> None:
    refused(
        post(proc_cluster, {"command": ["true"], "image": "python:3.12-slim"}),
        400,
        "no registered node runs the docker backend",
    )
    refused(
        post(proc_cluster, {"command": ["true"], "image": "python:3.12-slim", "target": "solo"}),
        400,
        "node 'solo' runs tasks as plain processes",
    )
    # Plain tasks are unaffected.
    assert post(proc_cluster, {"command": ["true"]}).status_code == 201


def test_an_environment_must_be_exported_first(proc_cluster: Cluster) -> None:
    refused(
        post(proc_cluster, {"command": ["true"], "environment": "never-exported"}),
        400,
        "environment 'never-exported' is not exported",
    )


def test_a_container_task_waits_for_a_docker_node(cluster: Cluster) -> None:
    """Submitted before any node joined, it queues; a process node joining does not take it."""
    task = cluster.submit(command=["true"], image="python:3.12-slim")
    cluster.start_runner("plain", "--cpus", "0")
    plain = cluster.submit(command=["true"])
    cluster.wait_task(plain["id"], "completed")  # the process node works, and was scheduled
    waiting = cluster.task(task["id"])
    assert waiting["state"] == "queued" and waiting["node"] is None
    assert "docker backend" in waiting["wait_reason"], waiting


def test_a_vps_passes_its_ip_token_to_the_overlay(proc_cluster: Cluster) -> None:
    """A VPS's ip_token goes through the same reservation check as a task's (here the
    overlay is off, so it is refused with the setting to change)."""
    response = proc_cluster.request(
        "POST", "/river/api/vps", json={"cores": 0, "ip_token": "rip_made_up"}
    )
    refused(response, 400, "c.RiverHost.overlay_enabled")
