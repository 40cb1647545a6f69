"""Every answer of the user API matches its river_runner.wire response model.

A live cluster (a docker runner with a fake GPU, a process runner) is filled with one of
each thing: tasks (finished, queued, in an array), logs, a blob, a VPS with a generated SSH
key, an app and a snapshot, an environment, a user with a quota, a token, an invitation,
a group. Then every GET operation of the OpenAPI document is called and each answer is
checked against the document's envelope (no key it does not list) and each item against
its model with unknown fields forbidden, so a field the host starts sending without a
model fails here. A few answers only a POST gives (a new VPS's private key, exec results)
are checked too. Overlay allocations and reservations need the overlay (network
namespaces): tests/unit/test_response_shapes.py checks those serializers.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from river_runner.wire import Response, responses
from river_server.openapi import API, openapi_document
from tests.cluster import Cluster, wait_for
from tests.docker.conftest import PAIR_DOCK, PAIR_PROC, PYTHON_IMAGE

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
# The shared docker pair (tests/docker/conftest.py): a docker runner with a fake GPU and a
# one-core process runner. This module holds the process runner's core to the end (a
# queued task needs a reason), so it is the pair's last user.
DOCK, PROC = PAIR_DOCK, PAIR_PROC
pytestmark = pytest.mark.uses_up("docker_pair")
ENV = f"shape-{RUN}"
# Every model the document names, nested ones (NodeFree, VpsPort, ...) included.
MODELS: dict[str, type[Response]] = {
    name: getattr(responses, name)
    for name in openapi_document()["components"]["schemas"]
    if isinstance(getattr(responses, name, None), type)
}
# Answers that are not JSON, or never end.
NOT_JSON = {
    f"{API}/events",
    f"{API}/tasks/{{id}}/blobs/{{name}}",
    f"{API}/openapi.json",
    # The data plane's bytes (a blob; a task's pulled-values frame): tests/integration/
    # test_data_plane.py checks them.
    f"{API}/data/{{digest}}",
    f"{API}/tasks/{{id}}/pulled",
    # WebSocket upgrades (river forward / river attach): tested in test_forward_attach.
    f"{API}/vps/{{id}}/forward/{{port}}",
    f"{API}/tasks/{{id}}/attach",
}


@pytest.fixture(scope="module")
def filled(docker_pair: Cluster, docker_client: Any) -> Iterator[Any]:
    cluster = docker_pair
    vps_id = None
    try:
        done = cluster.submit(command=["sh", "-c", "echo out; echo err >&2"], target=PROC)
        cluster.wait_task(done["id"], "completed", timeout=60)
        array = {"id": f"a{RUN}", "index": 0, "size": 2, "limit": 1}
        cluster.submit(command=["true"], target=PROC, array=array)
        cluster.submit(command=["sleep", "600"], target=PROC)  # holds PROC's one core
        cluster.submit(command=["true"], target=PROC)  # so this one waits, with a reason
        cluster.ok("PUT", f"{API}/tasks/{done['id']}/blobs/notes", content=b"x")
        vps = cluster.ok("POST", f"{API}/vps", json={"ssh": "generate", "target": DOCK})["vps"]
        vps_id = vps["id"]
        MODELS["Vps"].model_validate(vps)
        assert vps["private_key"]
        wait_for(
            lambda: cluster.get(f"{API}/vps/{vps_id}")["vps"]["state"] == "running",
            60,
            what="the VPS to run",
        )
        ran = cluster.ok("POST", f"{API}/vps/{vps_id}/exec", json={"command": ["true"]})
        detached = cluster.ok(
            "POST", f"{API}/vps/{vps_id}/exec", json={"command": ["true"], "detach": True}
        )
        for answer in (ran, detached):
            MODELS["ExecResult"].model_validate(answer)
        cluster.ok("POST", f"{API}/vps/{vps_id}/snapshot")
        cluster.ok("POST", f"{API}/users", json={"name": f"u{RUN}", "max_cores": 4})
        cluster.ok("POST", f"{API}/tokens", json={"label": "shapes"})
        cluster.ok("POST", f"{API}/invitations", json={})
        cluster.ok("POST", f"{API}/groups", json={"name": f"g{RUN}", "max_gpus": 1})
        cluster.ok("PUT", f"{API}/groups/g{RUN}/members/u{RUN}")
        cluster.ok("POST", f"{API}/environments", json={"name": ENV, "image": PYTHON_IMAGE})
        result = cluster.ok("POST", f"{API}/environments/{ENV}/exec", json={"command": "true"})
        MODELS["EnvironmentExecResult"].model_validate(result)
        yield (
            cluster,
            {
                "/tasks/{id}": done["id"],
                "/vps/{id}": vps_id,
                "/environments/{name}": ENV,
                "/users/{name}": f"u{RUN}",
                "/groups/{name}": f"g{RUN}",
                "/nodes/{name}": PROC,  # a node's metrics history
            },
        )
    finally:
        if vps_id is not None:
            cluster.request("DELETE", f"{API}/vps/{vps_id}")
        cluster.request("DELETE", f"{API}/environments/{ENV}")
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.containers.get(f"river-env-{ENV}").remove(force=True)
        if vps_id is not None:
            for image in docker_client.images.list(name=f"river-vps/{vps_id}"):
                for tag in image.tags:
                    with contextlib.suppress(docker.errors.APIError):
                        docker_client.images.remove(tag, force=True)


def _concrete(path: str, values: dict[str, str]) -> str:
    for prefix, value in values.items():
        path = path.replace(f"{API}{prefix}", f"{API}{prefix.rsplit('/', 1)[0]}/{value}")
    assert "{" not in path, f"no value for a parameter of {path}"
    return path


def _model_of(schema: dict[str, Any]) -> tuple[type[Response], bool] | None:
    """The response model a schema names, and whether it is a list of them."""
    if "$ref" in schema:
        return MODELS[schema["$ref"].rsplit("/", 1)[1]], False
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        return MODELS[schema["items"]["$ref"].rsplit("/", 1)[1]], True
    return None


def check_answer(schema: dict[str, Any], answer: Any, where: str) -> set[str]:
    """Validate `answer` against a documented 200 schema; the models it used."""
    found = _model_of(schema)
    if found is not None:
        shape, is_list = found
        items = answer if is_list else [answer]
        empty_ok = where.endswith(".reservations")  # the overlay is off here
        assert not is_list or items or empty_ok, f"{where}: an empty list checks nothing"
        for item in items:
            shape.model_validate(item)
        return {shape.__name__}
    if schema.get("type") != "object":  # a scalar beside the items: `next`, `deleted`
        assert answer is not None or schema.get("nullable"), f"{where}: null, not documented"
        scalar = {"string": str, "integer": int, "boolean": bool}.get(schema.get("type", ""))
        assert answer is None or scalar is None or isinstance(answer, scalar), where
        return set()
    listed = set(schema["properties"])
    assert set(answer) <= listed, f"{where}: keys {set(answer) - listed} not in the document"
    used: set[str] = set()
    for key, value in answer.items():
        used |= check_answer(schema["properties"][key], value, f"{where}.{key}")
    return used


def test_every_get_answer_matches_its_model(filled: Any) -> None:
    cluster, values = filled
    document = openapi_document()
    used: set[str] = set()
    for path, item in document["paths"].items():
        if "get" not in item or path in NOT_JSON:
            continue
        url = _concrete(path, values)
        answer = cluster.ok("GET", url)
        schema = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        used |= check_answer(schema, answer, url)
    for listing in ("tasks", "vps"):  # everyone's lists, as an operator sees them
        answer = cluster.ok("GET", f"{API}/{listing}", params={"all": "1"})
        schema = document["paths"][f"{API}/{listing}"]["get"]["responses"]["200"]
        used |= check_answer(schema["content"]["application/json"]["schema"], answer, listing)
    expected = {
        "Task", "LogLine", "Blob", "Node", "Vps", "Snapshot", "Environment", "Overlay",
        "User", "Token", "Invitation", "Group",
    }  # fmt: skip
    assert expected <= used, f"models no GET answer exercised: {expected - used}"


def test_a_field_the_model_does_not_know_fails(filled: Any) -> None:
    """The check has teeth: an answer with one more field is refused by its model."""
    cluster, values = filled
    task = cluster.get(f"{API}/tasks/{values['/tasks/{id}']}")["task"]
    with pytest.raises(ValueError, match="extra_field"):
        MODELS["Task"].model_validate({**task, "extra_field": 1})
    assert re.fullmatch(r"[0-9]+", task["id"])
