"""Every JSON body the host takes is checked against its river_runner.wire model: a
misspelled field, a wrong type or an out-of-range value is a 400 that names the field, and
nothing is created. The routes come from the app's own route table and the models from
the handlers' declarations, so a new POST/PATCH/PUT route without a model fails here."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import web

from river_runner.wire import EmptyBody, Request
from river_runner.wire import requests as wire
from river_server.app import RiverHost
from river_server.openapi import openapi_document
from tests.cluster import Cluster

BODY_METHODS = ("post", "patch", "put")
# Not JSON bodies of the user API: runner reports take runner credentials (their shapes are
# the next step of issue #14), the proxy passes bodies through, a blob is raw bytes (task
# blobs and the data plane's /data/{digest}), the sign-up page takes an HTML form.
NOT_JSON = re.compile(
    r"^/river/api/runner/|^/river/proxy/|^/river/api/tasks/.*/blobs/|^/river/api/data/"
    r"|^/river/join$"
)
# A body each route would accept, so that the only fault is the one a case adds: without
# the models these requests succeed and create something.
VALID: dict[type[Request], dict[str, Any]] = {
    EmptyBody: {},
    wire.TaskSubmit: {"command": ["true"]},
    wire.TaskDecision: {"reason": "fine"},
    wire.VpsCreate: {"image": "busybox"},
    wire.VpsExec: {"command": ["true"]},
    wire.VpsAppStart: {"app": "jupyter"},
    wire.EnvironmentCreate: {"name": "contract-env", "image": "busybox"},
    wire.EnvironmentExec: {"command": "true"},
    wire.ReservationCreate: {},
    wire.ReservationRelease: {"token": "rip_x"},
    wire.UserCreate: {"name": "contract-user"},
    wire.UserUpdate: {},
    wire.TokenCreate: {"label": "contract"},
    wire.InvitationCreate: {},
    wire.InvitationRedeem: {"code": "x", "name": "contract-r", "password": "password123"},
    wire.LoginRequest: {"username": "admin", "password": "wrong-password"},
    wire.GroupCreate: {"name": "contract-group"},
    wire.GroupUpdate: {},
    wire.DataCheck: {"blobs": []},
    wire.FilePut: {"path": "x", "digest": "0" * 64},
    wire.FileGet: {"path": "x"},
}
PATH_VALUES = {"tasks": "12345", "vps": "12345", "users": "admin", "groups": "contract-group"}


def _concrete(pattern: str) -> list[tuple[str, tuple[str, ...]]]:
    """Each URL a route pattern serves (one per alternative of a group like
    `(kill|pause|resume)`), with the path arguments the handler receives."""
    urls: list[tuple[str, tuple[str, ...]]] = [("", ())]
    for part in re.split(r"(\([^)]*\))", pattern):
        if not part.startswith("("):
            urls = [(url + part.replace("\\", ""), args) for url, args in urls]
            continue
        choices = part[1:-1].split("|")
        expanded = []
        for url, args in urls:
            if choices == ["[^/]+"]:
                choices_here = [PATH_VALUES.get(url.rstrip("/").rsplit("/", 1)[-1], "x")]
            else:
                choices_here = choices
            expanded += [(url + choice, (*args, choice)) for choice in choices_here]
        urls = expanded
    return urls


def body_routes() -> list[tuple[str, str, type[Request]]]:
    """(METHOD, url, model) for every route of the extension that takes a JSON body."""
    host = RiverHost()
    host.initialize_handlers()
    found = []
    undeclared = []
    for spec in host.handlers:
        pattern, handler = spec[0], spec[1]
        if NOT_JSON.match(pattern):
            continue
        for method in BODY_METHODS:
            if getattr(handler, method) is getattr(web.RequestHandler, method):
                continue
            for url, args in _concrete(pattern):
                model = handler.request_model(method, args)
                if model is None:
                    undeclared.append(f"{method.upper()} {url} ({handler.__name__})")
                else:
                    found.append((method.upper(), url, model))
    assert not undeclared, (
        f"routes that take a body with no model: {undeclared}; declare one from "
        "river_runner.wire in the handler's `bodies` (EmptyBody when it takes none)"
    )
    return found


def misspell(name: str) -> str:
    return name[:-1] if len(name) > 2 else name + name[-1]


def wrong_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type") or next(
        (o.get("type") for o in schema.get("anyOf", []) if o.get("type")), None
    )
    return {"string": 12345, "integer": "many", "number": "soon", "boolean": "yes"}.get(
        kind, {"object": [1], "array": {"a": 1}}.get(kind, 12345)
    )


def out_of_range(schema: dict[str, Any]) -> Any | None:
    options = [schema, *schema.get("anyOf", [])]
    for option in options:
        if "maximum" in option:
            return option["maximum"] + 1
        if "maxLength" in option:
            return "x" * (option["maxLength"] + 1)
        if "minimum" in option:
            return option["minimum"] - 1
    return None


def cases() -> Iterator[tuple[str, str, type[Request], dict[str, Any], str]]:
    """(method, url, model, body, the field the answer must name)."""
    for method, url, model in body_routes():
        base = VALID[model]
        properties = model.model_json_schema()["properties"] if model.model_fields else {}
        for field in [*model.model_fields, "force"]:
            wrong = misspell(field) if field in model.model_fields else field
            if wrong in model.model_fields:
                continue
            yield method, url, model, {**base, wrong: 1}, wrong
        typed = next((f for f in properties if wrong_type(properties[f]) is not None), None)
        if typed is not None:
            yield method, url, model, {**base, typed: wrong_type(properties[typed])}, typed
        for field, schema in properties.items():
            value = out_of_range(schema)
            if value is not None:
                yield method, url, model, {**base, field: value}, field
                break


def test_every_body_route_has_a_model_and_the_document_shows_it() -> None:
    routes = body_routes()
    assert len(routes) >= 20, routes
    document = openapi_document()
    for method, url, model in routes:
        if model is EmptyBody:
            continue
        operation = next(
            item[method.lower()]
            for path, item in document["paths"].items()
            if method.lower() in item and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), url)
        )
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model.__name__}"}, (method, url)
        assert document["components"]["schemas"][model.__name__]["additionalProperties"] is False


@pytest.fixture(scope="module")
def host(bare_host: Cluster) -> Cluster:
    """The shared host with no runners (tests/integration/conftest.py): a body that
    slipped through would queue, never run."""
    bare_host.ok("POST", "/river/api/groups", json={"name": "contract-group"})
    return bare_host


def _rows(cluster: Cluster) -> dict[str, int]:
    """Row count of every table: what any route could have created."""
    with sqlite3.connect(cluster.root / "host" / "river.db") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return {t: db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables}


def test_bad_fields_are_refused_by_name_and_create_nothing(host: Cluster) -> None:
    before = _rows(host)
    failures = []
    count = 0
    for method, url, _model, body, field in cases():
        count += 1
        response = host.request(method, url, json=body)
        message = response.json().get("message", "") if response.content else ""
        if response.status_code != 400 or f"'{field}'" not in message and field not in message:
            failures.append(f"{method} {url} {body} -> {response.status_code} {message[:200]}")
    assert not failures, f"{len(failures)} of {count} cases:\n" + "\n".join(failures[:30])
    assert _rows(host) == before
    assert count >= 100, count


def test_a_misspelled_field_gets_a_suggestion(host: Cluster) -> None:
    """The issue's two examples: the answer names the field meant, and nothing is queued."""
    before = _rows(host)
    for wrong, meant in (("gpu", "gpus"), ("cpus", "cores")):
        response = host.request("POST", "/river/api/tasks", json={"command": ["true"], wrong: 1})
        assert response.status_code == 400, response.text
        message = response.json()["message"]
        assert f"unknown field '{wrong}' (did you mean '{meant}'?)" in message, message
        assert "allowed: array, command, cores" in message, message
    assert _rows(host) == before
