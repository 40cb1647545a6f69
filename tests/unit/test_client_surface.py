"""The blocking and asyncio clients are one API: same public methods, same signatures.

Both are built on river_magics/core.py and task_handles.py; this test keeps anyone from
adding a method to only one of them (the drift issue #14 found: AsyncClient lacked 19).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from river_magics import (
    AsyncClient,
    AsyncTaskGroup,
    AsyncTaskHandle,
    Client,
    TaskGroup,
    TaskHandle,
)
from river_magics.bridge import io_property, run_blocking

# Names that differ by design, as in httpx: the asyncio client closes with `aclose` (and
# keeps `close` as an awaitable alias); context managers are `with` / `async with`.
ASYNC_ONLY = {"aclose"}


def _public(obj: object) -> dict[str, Any]:
    names = [n for n in dir(obj) if not n.startswith("_")]
    members = {}
    for name in names:
        if isinstance(inspect.getattr_static(obj, name), (io_property, property)):
            members[name] = "property"
            continue
        value = getattr(obj, name)
        if callable(value):
            members[name] = value
    return members


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


@pytest.fixture
def pairs() -> Any:
    sync_client, async_client = Client("http://127.0.0.1:9"), AsyncClient("http://127.0.0.1:9")
    try:
        yield [
            (sync_client, async_client),
            (TaskHandle(sync_client, "1"), AsyncTaskHandle(async_client, "1")),
            (TaskGroup(sync_client, []), AsyncTaskGroup(async_client, [])),
        ]
    finally:
        sync_client.close()
        asyncio.run(async_client.aclose())


def test_same_public_methods_with_the_same_signatures(pairs: Any) -> None:
    for blocking, awaited in pairs:
        sync_members, async_members = _public(blocking), _public(awaited)
        assert set(async_members) - ASYNC_ONLY == set(sync_members), type(blocking)
        for name, sync_fn in sync_members.items():
            async_fn = async_members[name]
            if sync_fn == "property":
                assert async_fn == "property", name
                continue
            assert inspect.signature(sync_fn) == inspect.signature(async_fn), name
            assert not _is_async(sync_fn), f"{type(blocking).__name__}.{name} is async"


def test_every_io_call_is_async_on_the_async_side(pairs: Any) -> None:
    # Calls that need no request (handle(), proxy_url(), labels and states) are plain on both.
    plain = {"clone", "handle", "proxy_url", "label_of", "states", "counts", "kill_order"}
    for _blocking, awaited in pairs:
        for name, fn in _public(awaited).items():
            if fn == "property" or name in plain:
                continue
            assert _is_async(fn), f"{type(awaited).__name__}.{name} should be async"


def test_the_clients_have_what_issue_14_found_missing(pairs: Any) -> None:
    _client, awaited = pairs[0]
    for name in ("login", "me", "vps_list", "vps_create", "environments", "wait_url", "clone"):
        assert hasattr(awaited, name), name


def test_blocking_code_that_awaits_a_loop_fails_loudly() -> None:
    """Shared code must do its I/O through the client's _io_* methods: awaiting anything
    else (here a bare yield to the loop) cannot run without one, and says so."""
    with pytest.raises(RuntimeError, match="needs an event loop"):
        run_blocking(asyncio.sleep(0))


def test_clone_keeps_the_kind_and_the_push_limit() -> None:
    with Client("http://127.0.0.1:9", "t") as client:
        client.push_limit = 123
        with client.clone() as twin:
            assert type(twin) is Client and twin.push_limit == 123 and twin._token == "t"
