"""Expensive setups shared by several test modules, closed after the last one (docs/testing.md).

A booted VM or a JupyterLab host costs tens of seconds; where several modules need the same
one and do not change it in a way the others see, they share it. pytest's session scope would
keep it running to the end of the whole suite (an idle guest or lab competing with every later
test for the CI machine's two cores), and module scope cannot span modules. So each user
requests a module-scoped fixture that calls `shared(name, start)`: the first module starts the
resource, the others reuse it, and the teardown of the last module that selected it in this
run (counted once collection is final) closes it. `pytest_sessionfinish` closes anything a
skipped or failed module left open.

Registered from tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# The fixture names that are shared this way: their users are counted after collection.
NAMES: set[str] = set()


@dataclass
class _Open:
    value: Any
    stack: contextlib.ExitStack
    users: int = 1  # modules still to finish with it


@dataclass
class _State:
    modules: dict[str, int] = field(default_factory=dict)  # name -> modules selected
    open: dict[str, _Open] = field(default_factory=dict)


_STATE = _State()


def register(name: str) -> str:
    """Declare a fixture name as shared (call at import of the module defining it)."""
    NAMES.add(name)
    return name


@contextlib.contextmanager
def shared(name: str, start: Callable[[contextlib.ExitStack], Any]) -> Iterator[Any]:
    """The resource `name`, started with `start(stack)` by its first user (whatever it
    enters into `stack` is closed after the last user), within one module's fixture."""
    held = _STATE.open.get(name)
    if held is None:
        stack = contextlib.ExitStack()
        try:
            value = start(stack)
        except BaseException:
            stack.close()
            raise
        held = _STATE.open[name] = _Open(value, stack, max(1, _STATE.modules.get(name, 1)))
    try:
        yield held.value
    finally:
        held.users -= 1
        if held.users <= 0:
            _STATE.open.pop(name, None)
            held.stack.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "uses_up(name): this module changes the shared setup `name` for good (ends it, adds "
        "to it): it runs after the setup's other users",
    )


def _uses_up(item: pytest.Item, name: str) -> bool:
    return any(name in mark.args for mark in item.iter_markers("uses_up"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run each shared resource's users back to back, where the first of them was collected,
    in their collected order except that modules marked `uses_up(name)` come last: the
    setup then does not idle through unrelated modules, and no user sees it used up."""
    for name in sorted(NAMES):
        users = [i for i in items if name in getattr(i, "fixturenames", ())]
        if len(users) < 2:
            continue
        first = items.index(users[0])
        users.sort(key=lambda item: _uses_up(item, name))  # stable: collected order kept
        rest = [i for i in items if name not in getattr(i, "fixturenames", ())]
        items[:] = rest[:first] + users + rest[first:]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Count, per shared name, the modules whose selected, unskipped tests use it."""
    modules: dict[str, set[str]] = {name: set() for name in NAMES}
    for item in session.items:
        if item.get_closest_marker("skip") is not None:
            continue
        used = NAMES & set(getattr(item, "fixturenames", ()))
        for name in used:
            modules[name].add(str(item.fspath))
    _STATE.modules = {name: len(found) for name, found in modules.items()}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close what a skipped or failing module left open."""
    for name in list(_STATE.open):
        _STATE.open.pop(name).stack.close()
