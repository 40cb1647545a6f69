"""How one asyncio implementation of the client also serves the blocking `Client`.

The client is written once, as asyncio code (river_magics/core.py). A blocking class runs
those same coroutines without an event loop: its I/O primitives (blocking httpx, time.sleep)
are `async def` functions that never suspend, so a coroutine built on them finishes on its
first `send(None)`. The socket read then happens on the caller's own thread, where a kernel
interrupt (KeyboardInterrupt) stops it as before, and no loop is needed (a Jupyter kernel
already runs one, so `asyncio.run` is unavailable there).

`io_method`, `io_iterator` and `io_property` mark the public calls of the shared classes. On
an asyncio class they are the coroutine function (async iterator, awaitable) itself. On a
`Blocking` class, called from the user's code, they run it to the end (or step through it);
called from inside the shared code they stay awaitable, so that code reads as plain asyncio
whichever class runs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# True while this thread runs shared client code for a blocking class: calls made from
# there must stay awaitable.
_running_shared: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "river_running_shared", default=False
)


class Blocking:
    """Marks a client, handle or group class whose I/O calls block and return results."""


@contextlib.contextmanager
def _shared_code() -> Iterator[None]:
    token = _running_shared.set(True)
    try:
        yield
    finally:
        _running_shared.reset(token)


def run_blocking(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine of the shared code whose I/O blocks instead of suspending."""
    with _shared_code():
        try:
            coroutine.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        coroutine.close()
    raise RuntimeError(
        "the blocking client awaited something that needs an event loop: shared client "
        "code must do its I/O through the client's _io_* methods"
    )


def iterate_blocking(steps: AsyncGenerator[T, None]) -> Iterator[T]:
    """Step through an async generator of the shared code; closing this closes it (and
    any stream it holds open)."""
    try:
        while True:
            try:
                item = run_blocking(steps.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        run_blocking(steps.aclose())


def _blocks(obj: object) -> bool:
    return isinstance(obj, Blocking) and not _running_shared.get()


def _bind(fn: Callable[..., Any], obj: object, owner: type, drive: Callable[[Any], Any]) -> Any:
    """`fn` bound to `obj`: as is for asyncio code, or wrapped so that `drive` runs what
    it returns (same name, docstring and signature, so the two surfaces compare equal)."""
    bound = fn.__get__(obj, owner)
    if not _blocks(obj):
        return bound

    @functools.wraps(bound)
    def blocking(*args: Any, **kwargs: Any) -> Any:
        return drive(bound(*args, **kwargs))

    return blocking


class io_method(Generic[P, R]):
    """A public call written once as a coroutine: awaited on asyncio classes, run to the
    end on blocking ones."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]  # a descriptor, not a callable

    @overload
    def __get__(self, obj: None, owner: type) -> io_method[P, R]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        return self if obj is None else _bind(self.fn, obj, owner, run_blocking)


class io_iterator(Generic[P, T]):
    """A public stream written once as an async generator: `async for` on asyncio classes,
    a plain iterator on blocking ones."""

    def __init__(self, fn: Callable[Concatenate[Any, P], AsyncGenerator[T, None]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]  # a descriptor, not a callable

    @overload
    def __get__(self, obj: None, owner: type) -> io_iterator[P, T]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, AsyncGenerator[T, None]]: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        return self if obj is None else _bind(self.fn, obj, owner, iterate_blocking)


class io_property(Generic[R]):
    """A read-only property that needs a request: `await handle.status` on asyncio
    classes, `handle.status` on blocking ones."""

    def __init__(self, fn: Callable[[Any], Coroutine[Any, Any, R]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]  # a descriptor, not a callable

    @overload
    def __get__(self, obj: None, owner: type) -> io_property[R]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type) -> R: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Coroutine[Any, Any, R]: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return self
        if _blocks(obj):
            return run_blocking(self.fn(obj))
        return self.fn(obj)
