"""Every list route pages with `?before=CURSOR&limit=N` and answers `next` (issue #14):
tasks beyond the newest 1,000 are reachable, and the clients follow the cursor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from river_magics.aclient import AsyncClient
from river_magics.client import Client
from tests.cluster import Cluster, as_user, running_cluster

COUNT = 2500
OWNER = "pager"


def _insert_finished_tasks(cluster: Cluster, owner: str, count: int) -> list[str]:
    """`count` finished tasks straight in the host's database (as Cluster.make_users does
    for users): submitting them would take minutes on this machine. Time-ordered IDs."""
    from river_server import db

    engine = db.make_engine(cluster.db_url)
    base = int(time.time() * 1000) << 22
    ids = [base + i for i in range(count)]
    try:
        with db.make_sessionmaker(engine).begin() as session:
            now = time.time()
            session.add_all(
                db.Task(
                    id=task_id,
                    name=f"t{i}",
                    owner=owner,
                    kind="command",
                    spec={"command": ["true"], "env": {}},
                    request={"cores": 1, "memory": 0, "gpus": 0},
                    state="completed",
                    exit_code=0,
                    submitted_at=now,
                    finished_at=now,
                )
                for i, task_id in enumerate(ids)
            )
    finally:
        engine.dispose()
    return [str(task_id) for task_id in ids]


@pytest.fixture(scope="module")
def paged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, list[str]]]:
    with running_cluster(tmp_path_factory.mktemp("paging")) as cluster:
        token = cluster.make_users(OWNER)[OWNER]
        ids = _insert_finished_tasks(cluster, OWNER, COUNT)
        yield cluster, token, ids


def test_task_pages_return_each_task_once_newest_first(paged) -> None:
    cluster, token, ids = paged
    newest_first = list(reversed(ids))
    seen: list[str] = []
    params: dict[str, str] = {}
    sizes = []
    while True:
        page = cluster.ok("GET", "/river/api/tasks", params=params, **as_user(token))
        sizes.append(len(page["tasks"]))
        seen += [t["id"] for t in page["tasks"]]
        if page["next"] is None:
            break
        params = {"before": page["next"]}
    assert sizes == [1000, 1000, 500]  # the default (and largest) page is 1,000
    assert seen == newest_first

    seen, params = [], {"limit": "333"}
    while True:
        page = cluster.ok("GET", "/river/api/tasks", params=params, **as_user(token))
        assert len(page["tasks"]) <= 333
        seen += [t["id"] for t in page["tasks"]]
        if page["next"] is None:
            break
        params = {"limit": "333", "before": page["next"]}
    assert seen == newest_first


def test_clients_follow_the_cursor_to_every_task(paged) -> None:
    cluster, token, ids = paged
    newest_first = list(reversed(ids))
    client = Client(cluster.url, token)
    assert len(client.tasks()) == 1000  # the newest page, as before
    assert [t["id"] for t in client.iter_tasks()] == newest_first
    assert [t["id"] for t in client.iter_tasks(page_size=777)] == newest_first

    async def collect() -> list[str]:
        async with AsyncClient(cluster.url, token) as aclient:
            return [t["id"] async for t in aclient.iter_tasks(page_size=900)]

    assert asyncio.run(collect()) == newest_first


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-5", "limit"),
        ("before=abc", "before"),
        ("before=-1", "before"),
    ],
)
def test_bad_paging_values_are_400_naming_the_parameter(paged, query: str, named: str) -> None:
    cluster, _, _ = paged
    for path in ("tasks", "vps", "tokens", "invitations", "overlay/reservations"):
        response = cluster.request("GET", f"/river/api/{path}?{query}")
        assert response.status_code == 400, (path, query, response.text)
        assert named in response.json()["message"], (path, response.text)
    for path in ("users", "groups", "environments"):  # cursors are names there
        response = cluster.request("GET", f"/river/api/{path}?limit=0")
        assert response.status_code == 400, (path, response.text)
        assert "limit" in response.json()["message"]


def test_name_and_id_keyed_lists_page_too(paged) -> None:
    cluster, _, _ = paged
    names = [f"pager-{i:02d}" for i in range(5)]
    cluster.make_users(*names)
    for label in ("a", "b", "c"):
        cluster.ok("POST", "/river/api/tokens", json={"label": label})
    everyone = cluster.get("/river/api/users")["users"]
    tokens = cluster.get("/river/api/tokens")["tokens"]
    assert len(everyone) >= 7 and len(tokens) >= 3
    for path, key, full in (("users", "name", everyone), ("tokens", "id", tokens)):
        seen, params = [], {"limit": "2"}
        while True:
            page = cluster.ok("GET", f"/river/api/{path}", params=params)
            assert len(page[path]) <= 2
            seen += [item[key] for item in page[path]]
            if page["next"] is None:
                break
            params = {"limit": "2", "before": page["next"]}
        assert seen == [item[key] for item in full], path
