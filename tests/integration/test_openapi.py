"""The OpenAPI document at /river/api/openapi.json: it covers every user route of the
extension, and schemathesis fuzzing against it (at least 1,000 cases) finds no 5xx and no
answer outside the documented codes and schemas."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import requests

from river_runner.wire.queries import TRANSPORT, is_cache_buster
from river_server.openapi import openapi_document
from tests.cluster import Cluster
from tests.integration.test_route_access import app_routes

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

# Runner routes take runner credentials only; the proxy's answers are whatever the app
# behind it says (its access rules are in test_route_access and test_proxy).
# Not the user's JSON API: the runners' routes, proxied apps, and the sign-up page (an
# HTML form a person fills in; its refusals are tested in test_join_page).
NOT_USER_API = re.compile(r"^/river/api/runner/|^/river/proxy/|^/river/join$")
MIN_CASES = {"positive": 1000, "negative": 1000}
EXAMPLES_PER_OPERATION = 18
# Not fuzzed: the event stream never ends by design (its access rules are in
# test_route_access), and environment changes drive the host's real Docker daemon.
NOT_FUZZED = {
    ("GET", "/river/api/events"),
    ("POST", "/river/api/environments"),
    ("DELETE", "/river/api/environments/{name}"),
    ("POST", "/river/api/environments/{name}/export"),
    ("POST", "/river/api/environments/{name}/exec"),
}


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_the_document_covers_every_user_route_and_nothing_else() -> None:
    document = openapi_document()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    routes = {(m, p) for m, p in app_routes() if not NOT_USER_API.match(p)}
    missing = [
        f"{method} {pattern}"
        for method, pattern in sorted(routes)
        if not any(m == method and re.fullmatch(pattern, _concrete(path)) for m, path in operations)
    ]
    assert not missing, (
        f"user routes with no operation in river_server/openapi.py: {missing}; "
        "describe them there (request and response schemas)"
    )
    phantom = [
        f"{m} {path}"
        for m, path in sorted(operations)
        if not any(method == m and re.fullmatch(p, _concrete(path)) for method, p in routes)
    ]
    assert not phantom, f"operations in the document that the app does not serve: {phantom}"
    assert document["components"]["securitySchemes"]["token"]["in"] == "header"


@pytest.fixture
def fuzz_host(bare_host: Cluster) -> Cluster:
    """The shared host with no runners (tests/integration/conftest.py): submitted tasks
    queue and never run fuzzed commands. The fuzz leaves whatever it made, so this module
    is the host's last user."""
    return bare_host


pytestmark = pytest.mark.uses_up("bare_host")


def only_outside_the_contract(case: Any) -> bool:
    """Whether every query parameter the case adds beyond the document is one the host
    lets through on purpose for every route: Jupyter's credentials (`token`, `_xsrf`) and
    JupyterLab's `?<milliseconds>` cache buster (river_runner/wire/queries.py), or one
    that never went on the wire (a null value). Accepting those is the contract, not a
    route failing to reject invalid data."""
    operation = openapi_document()["paths"].get(case.operation.path, {}).get(case.method.lower())
    declared = {p["name"] for p in (operation or {}).get("parameters", []) if p["in"] == "query"}
    query = case.query or {}
    extra = set(query) - declared
    if not extra:
        return False
    # A parameter whose value is null is never sent (requests drops it): the host saw none.
    sent = [name for name in extra if query[name] is not None]
    return all(
        name in TRANSPORT or is_cache_buster(name, [str(query[name]).encode()]) for name in sent
    )


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_errors(fuzz_host: Cluster, mode: str) -> None:
    """Positive cases follow the document (answers must match it too); negative cases break
    it on purpose (wrong types, missing or unknown fields, out-of-range values): none may
    get a 5xx."""
    served = httpx.get(f"{fuzz_host.url}/river/api/openapi.json", timeout=30)
    assert served.status_code == 200  # public: no credentials needed
    schema = schemathesis.openapi.from_dict(served.json())
    # Fuzz as a plain user (a real token), so role checks, not admin powers, are exercised,
    # plus the server token (the admin) for the admin-only routes.
    name = f"fuzzer-{mode}"
    user = fuzz_host.request("POST", "/river/api/users", json={"name": name})
    assert user.status_code == 201
    token = fuzz_host.request("POST", "/river/api/tokens", json={"user": name}).json()["token"]
    identities = [token, fuzz_host.token]
    if mode == "positive":
        generation = GenerationMode.POSITIVE
        checks = [
            st_checks.not_a_server_error,
            st_checks.status_code_conformance,
            st_checks.content_type_conformance,
            st_checks.response_schema_conformance,
        ]
    else:
        generation = GenerationMode.NEGATIVE
        # No 5xx for any of them, and each is refused (a 4xx): a route that accepts what
        # its document forbids, in a body or a query parameter, fails here.
        checks = [st_checks.not_a_server_error, st_checks.negative_data_rejection]
    session = requests.Session()
    cases = 0
    failures: list[str] = []

    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in NOT_FUZZED:
            continue

        @given(case=operation.as_strategy(generation))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal cases
            secret = identities[cases % 2]
            headers = {"Authorization": f"token {secret}"}
            response = case.call(
                base_url=fuzz_host.url, session=session, headers=headers, timeout=30
            )
            cases += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )
                return
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except st_checks.FailureGroup as exc:  # record it, keep fuzzing
                if only_outside_the_contract(case):
                    return
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query!r}: "
                    f"{exc.exceptions[0]}"[:600]
                )

        try:
            run()
        except Unsatisfiable:
            if mode == "positive":
                raise
            # An operation with nothing to break (no parameters, no body) has no negative case.
    session.close()
    assert not failures, f"{len(failures)} failing case(s):\n" + "\n".join(failures[:20])
    print(f"schemathesis ({mode}): {cases} cases")
    assert cases >= MIN_CASES[mode], f"only {cases} {mode} cases ran"
