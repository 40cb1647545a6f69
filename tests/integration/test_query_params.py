"""Query parameters are checked like bodies (issue #14): every route's parameters are a
river_runner.wire.queries model, a misspelled, unknown, wrongly typed or out-of-range one
is a 400 naming it, and the OpenAPI document's parameters are generated from the same
models. Routes come from the app's own table, so a new route cannot be left out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tornado import web

from river_runner.wire.queries import NoQuery, Query
from river_server.app import RiverHost
from river_server.handlers.base import RiverAPIHandler
from river_server.openapi import openapi_document
from river_server.openapi_models import query_parameters
from tests.cluster import Cluster
from tests.integration.test_request_models import _concrete, misspell

METHODS = ("get", "post", "put", "patch", "delete")
NOT_USER_API = re.compile(r"^/river/api/runner/|^/river/proxy/")


def query_routes() -> list[tuple[str, str, str, type[Query]]]:
    """(METHOD, pattern, url, model) for every method of every user API route."""
    host = RiverHost()
    host.initialize_handlers()
    found = []
    for spec in host.handlers:
        pattern, handler = spec[0], spec[1]
        if NOT_USER_API.match(pattern) or not issubclass(handler, RiverAPIHandler):
            continue
        for method in METHODS:
            if getattr(handler, method) is getattr(web.RequestHandler, method):
                continue
            url = _concrete(pattern)[0][0]
            found.append((method.upper(), pattern, url, handler.query_model(method)))
    return found


def wrong_value(schema: dict[str, Any]) -> str:
    """A value the parameter's schema does not allow."""
    if schema.get("type") in ("integer", "number"):
        return "many"
    if "enum" in schema or "pattern" in schema or schema.get("type") == "array":
        return "!nope!"
    if "minLength" in schema:
        return ""
    raise AssertionError(f"no wrong value for {schema}")


def test_the_document_shows_each_routes_query_model() -> None:
    document = openapi_document()
    routes = query_routes()
    with_params = 0
    for method, _pattern, url, model in routes:
        operation = next(
            item[method.lower()]
            for path, item in document["paths"].items()
            if method.lower() in item and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", path), url)
        )
        shown = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        assert shown == query_parameters(model), (method, url)
        with_params += bool(shown)
    assert with_params >= 13, with_params
    for list_route in ("tasks", "vps", "environments", "users", "tokens", "invitations", "groups"):
        names = [
            p["name"] for p in document["paths"][f"/river/api/{list_route}"]["get"]["parameters"]
        ]
        assert {"before", "limit"} <= set(names), (list_route, names)


@pytest.fixture
def host(bare_host: Cluster) -> Cluster:
    """The shared host without runners (tests/integration/conftest.py)."""
    return bare_host


def cases() -> Iterator[tuple[str, str, dict[str, str], str]]:
    """(method, url, query, the parameter the answer must name)."""
    for method, _pattern, url, model in query_routes():
        yield method, url, {"bogus": "1"}, "bogus"
        parameters = query_parameters(model)
        for parameter in parameters:
            name = parameter["name"]
            if misspell(name) not in [p["name"] for p in parameters]:
                yield method, url, {misspell(name): "1"}, misspell(name)
            yield method, url, {name: wrong_value(parameter["schema"])}, name


def test_bad_query_parameters_are_refused_by_name(host: Cluster) -> None:
    failures = []
    count = 0
    for method, url, query, name in cases():
        count += 1
        response = host.request(method, url, params=query)
        message = response.json().get("message", "") if response.content else ""
        # 'task[0]' names the first value of a repeated parameter.
        if response.status_code != 400 or not re.search(rf"'{name}(\[\d+\])?'", message):
            failures.append(f"{method} {url} {query} -> {response.status_code} {message[:200]}")
    assert not failures, f"{len(failures)} of {count} cases:\n" + "\n".join(failures[:30])
    assert count >= 100, count


def test_messages_say_what_is_allowed(host: Cluster) -> None:
    """The lenient readings the issue names are refused, and the answer says what to fix."""
    expect = {
        "all=x": "'all': must be one of 0, 1, true, false, not 'x'",
        "limit=-5": "'limit': Input should be greater than or equal to 1",
        "limit=abc": "'limit': Input should be a valid integer",
        "limt=5": "unknown query parameter 'limt' (did you mean 'limit'?); allowed: all, before",
        "state=runing": "'state': String should match pattern",
        "all=1&all=0": "query parameter 'all' is given 2 times; give it once",
    }
    for query, wanted in expect.items():
        response = host.request("GET", f"/river/api/tasks?{query}")
        assert response.status_code == 400, (query, response.text)
        assert wanted in response.json()["message"], (query, response.json())


def test_good_parameters_and_the_token_parameter_still_work(host: Cluster) -> None:
    for query in ("all=1&limit=5&state=queued,running", "all=true", "all=0", "limit=1000"):
        assert host.request("GET", f"/river/api/tasks?{query}").status_code == 200, query
    # Jupyter's `token` parameter (how an EventSource authenticates) is not a route's.
    response = httpx.get(f"{host.url}/river/api/tasks", params={"token": host.token}, timeout=30)
    assert response.status_code == 200, response.text
    assert NoQuery.model_fields == {}


def test_jupyterlabs_cache_buster_is_let_through_and_nothing_else_like_it(host: Cluster) -> None:
    """JupyterLab's ServerConnection appends `?<milliseconds>` to the lab panel's GETs
    (`cache: 'no-store'`): refusing it broke every request of the panel."""
    for path in ("/river/api/tasks?1796421630866", "/river/api/vps?1796421630866",
                 "/river/api/tasks?all=1&state=queued&1796421630866"):  # fmt: skip
        response = host.request("GET", path)
        assert response.status_code == 200, (path, response.text)
    for query in ("1796421630866=1", "12x=", "1796421630866&1796421630866=2", "0", "42="):
        response = host.request("GET", f"/river/api/tasks?{query}")
        assert response.status_code == 400, (query, response.text)
