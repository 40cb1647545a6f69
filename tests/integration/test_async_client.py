"""AsyncClient against a real cluster, for the calls it gained when both clients became one
implementation (river_magics/core.py): tasks, logs, kill, groups, accounts and tokens, VPS
and environment lists, and the event stream. Each scenario runs on its own loop
(`asyncio.run`), as asyncio code using River would."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from river_magics import AsyncClient, AsyncTaskHandle, RiverError
from tests.cluster import Cluster


def run(cluster: Cluster, scenario: Callable[[AsyncClient], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with AsyncClient(cluster.url, cluster.token) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_submit_wait_logs_and_kill(solo_cluster: Cluster) -> None:
    async def scenario(client: AsyncClient) -> None:
        done = await client.submit(["sh", "-c", "echo one; echo two >&2"], name="two-lines")
        assert isinstance(done, AsyncTaskHandle)
        final = await done.wait(timeout=30)
        assert final["state"] == "completed" and final["exit_code"] == 0
        texts = [(line["stream"], line["text"]) for line in await done.logs()]
        assert ("stdout", "one") in texts and ("stderr", "two") in texts
        assert [line["text"] for line in await client.logs(done.id)][:1] != []
        assert (await client.task(done.id))["name"] == "two-lines"
        assert done.id in [t["id"] for t in await client.tasks(state="completed")]

        long = await client.submit(script="import time\nprint('up', flush=True)\ntime.sleep(60)")
        async for line in long.stream(timeout=30):
            assert line["text"] == "up"
            break
        assert (await long.info())["state"] == "running"
        await long.kill()
        assert (await long.wait(timeout=15))["state"] == "killed"
        again = client.handle(long.id)
        assert await again.status == "killed"

    run(solo_cluster, scenario)


def test_groups_refresh_and_kill_queued_members(solo_cluster: Cluster) -> None:
    async def scenario(client: AsyncClient) -> None:
        # One core: the first member runs, the others wait in the queue.
        group = await client.submit_array("0-2%1", script="import time\ntime.sleep(60)")
        assert group.limit == 1 and len(group) == 3
        states = await group.refresh()
        assert set(states) == {"0", "1", "2"}
        await group.kill()
        finals = await group.wait(timeout=20)
        assert {f["state"] for f in finals} == {"killed"}

    run(solo_cluster, scenario)


def test_accounts_tokens_and_login(solo_cluster: Cluster) -> None:
    password = secrets.token_urlsafe(12)
    solo_cluster.ok(
        "POST", "/river/api/users", json={"name": "ada", "role": "user", "password": password}
    )

    async def scenario(admin: AsyncClient) -> None:
        token = await admin.login("ada", password, label="async-test")
        async with AsyncClient(solo_cluster.url, token) as ada:
            assert (await ada.me())["name"] == "ada"
            made = await ada.create_token(label="second")
            assert made["token"].startswith("rvt_")
            labels = {t["label"] for t in await ada.tokens()}
            assert {"async-test", "second"} <= labels
            await ada.revoke_token(made["info"]["id"])
            async with AsyncClient(solo_cluster.url, made["token"]) as revoked:
                with pytest.raises(RiverError) as refused:
                    await revoked.me()
                assert refused.value.status in (401, 403)
            assert (await ada.me())["name"] == "ada"  # the login token still works

    run(solo_cluster, scenario)


def test_vps_and_environment_lists_and_nodes(solo_cluster: Cluster) -> None:
    async def scenario(client: AsyncClient) -> None:
        assert [n["name"] for n in await client.nodes()] == ["solo"]
        assert await client.vps_list() == []
        assert await client.vps_list(all_users=True) == []
        assert isinstance(await client.environments(), list)
        with pytest.raises(RiverError, match="environment"):
            await client.environment("no-such-env")

    run(solo_cluster, scenario)


def test_event_stream_says_hello_and_closes(solo_cluster: Cluster) -> None:
    async def scenario(client: AsyncClient) -> tuple[str, Any]:
        events = client.events(all_tasks=True)
        try:
            return await asyncio.wait_for(events.__anext__(), 10)
        finally:
            await events.aclose()

    kind, _data = run(solo_cluster, scenario)
    assert kind == "hello"
