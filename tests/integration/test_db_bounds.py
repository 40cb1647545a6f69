"""What PostgreSQL enforces and SQLite does not: values longer than their column.

SQLite stores a 100-character string in a VARCHAR(64); PostgreSQL refuses the row, which
surfaced as a 500 from the request that wrote it. Run with `--db postgresql` (dev.sh does)
for the real check; on SQLite these pin the same 4xx answers.
"""

from __future__ import annotations

import httpx
import pytest

from tests.cluster import JOIN_TOKEN, Cluster

A = "/river/api"
JOIN = {"Authorization": f"river-runner {JOIN_TOKEN}"}


def _register(cluster: Cluster, **fields: object) -> httpx.Response:
    body = {"name": "n1", "url": "http://127.0.0.1:9", "inbound_secret": "s", "cpus": [0]}
    return httpx.post(
        f"{cluster.url}{A}/runner/register", json={**body, **fields}, headers=JOIN, timeout=30
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("name", "n" * 65, "name"),
        ("url", "http://127.0.0.1:9/" + "p" * 300, "url"),
        ("backend", "b" * 17, "backend"),
    ],
)
def test_a_registration_with_a_value_too_long_is_a_400_and_registers_nothing(
    cluster: Cluster, field: str, value: str, says: str
) -> None:
    response = _register(cluster, **{field: value})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert says in message and "at most" in message, message
    assert cluster.get(f"{A}/nodes")["nodes"] == []
    # The host is unharmed: a proper registration still works.
    assert _register(cluster).status_code == 200
    assert [n["name"] for n in cluster.get(f"{A}/nodes")["nodes"]] == ["n1"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tasks", {"command": ["true"], "name": "a\x00b"}, "name"),
        ("/tokens", {"user": "admin", "label": "laptop\x00"}, "label"),
    ],
)
def test_text_with_a_nul_is_a_400_that_says_so(
    cluster: Cluster, path: str, body: dict, field: str
) -> None:
    """PostgreSQL's text types cannot hold NUL; the host answered 500 at the commit."""
    response = cluster.request("POST", f"{A}{path}", json=body)
    assert response.status_code in (400, 422), response.text
    message = response.json()["message"]
    assert field in message and "NUL" in message, message
    assert cluster.request("GET", f"{A}/tasks").status_code == 200
    assert all("\x00" not in t["name"] for t in cluster.get(f"{A}/tasks")["tasks"])
