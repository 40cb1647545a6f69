"""Task handles and groups, written once for both clients (see river_magics/bridge.py).

`TaskHandle`/`TaskGroup` (blocking) and `AsyncTaskHandle`/`AsyncTaskGroup` are these
classes with a marker; the views that need no request (ids, labels, states, kill order,
results decoding) come from river_magics/handles.py.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from river_runner.protocol import EVENT_LOG, LOG_STREAM_RIVER, PULL_BLOB

from .bridge import io_iterator, io_method, io_property
from .common import is_terminal
from .dataplane import DATA_SCRIPT_ERROR, unframe
from .errors import RiverError
from .handles import GroupBase, HandleBase, missing_pull_blob, pulled_values
from .payload import PayloadError

if TYPE_CHECKING:
    from .core import ClientCore, Event


class HandleCore(HandleBase):
    """A submitted task: its state, its output, and a way to wait for or stop it."""

    def __init__(
        self,
        client: ClientCore,
        id: str | int,
        task: dict[str, Any] | None = None,
        pull: Sequence[str] = (),
    ) -> None:
        super().__init__(id, task, pull)
        self.client = client

    @io_property
    async def status(self) -> str:
        """The task's state now (one request)."""
        return str((await self.info())["state"])

    @io_method
    async def info(self) -> dict[str, Any]:
        """The task's full current record (one request)."""
        return await self._keep(self.client.task(self.id))

    async def _keep(self, answer: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The task record a request answers, kept as the last one seen."""
        self.last = await answer
        return self.last

    @io_method
    async def kill(self) -> dict[str, Any]:
        return await self._keep(self.client.kill(self.id))

    @io_method
    async def pause(self) -> dict[str, Any]:
        return await self._keep(self.client.pause(self.id))

    @io_method
    async def resume(self) -> dict[str, Any]:
        return await self._keep(self.client.resume(self.id))

    @io_method
    async def logs(self, since: int = 0) -> list[dict[str, Any]]:
        """All log lines written so far (pages through the host's answers)."""
        lines: list[dict[str, Any]] = []
        while True:
            page = [x for x in await self.client.logs(self.id, since=since) if x["seq"] > since]
            if not page:
                return lines
            lines.extend(page)
            since = page[-1]["seq"]

    @io_method
    async def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the task is terminal; its final record.

        Raises TimeoutError after `timeout` seconds. Uses the event stream and polls
        (with bounded backoff) while the stream is unavailable.
        """
        if self.last and is_terminal(self.last.get("state")):
            return self.last
        async for _event in self.client.watch([self], logs=False, timeout=timeout):
            pass
        return self.last or {}

    @io_iterator
    async def stream(
        self, since: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Output lines (stdout/stderr) in order, each once, live, until the task is
        terminal. (Host notes on the "river" stream are left out; `logs()` has them.)"""
        async for kind, data in self.client.watch([self], since=since, timeout=timeout):
            if kind == EVENT_LOG and data.get("stream") != LOG_STREAM_RIVER:
                yield data

    @io_iterator
    async def watch(
        self, *, logs: bool = True, since: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        """("task", record) on each change and ("log", line) per new line, in order.

        Ends after the terminal record, which comes after the task's last line (see
        Client.watch for reconnection and timeouts).
        """
        async for event in self.client.watch([self], logs=logs, since=since, timeout=timeout):
            yield event

    @io_method
    async def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The variables the task pulled (`pull=[...]` / `--pull`), once it has finished.

        Waits up to `timeout` seconds. Raises PayloadError naming the variable when one
        could not be sent or loaded, and RiverError when the task did not complete.
        """
        final = await self.wait(timeout)
        if final.get("state") == "completed":
            framed = await self.client._download_pulled(self.id)
            if framed is not None:
                return dict(unframe(framed))
        elif self.pull:
            # The data plane's remote script says on stderr which value it could not send
            # back (or load): that, not "it has no results", is what the user must fix.
            for line in reversed(await self.client.logs(self.id)):
                text = str(line.get("text", ""))
                if line.get("stream") == "stderr" and text.startswith(DATA_SCRIPT_ERROR):
                    raise PayloadError(f"task {self.id}: {text.removeprefix('river: ')}")
        blob: bytes | None = None
        try:
            blob = await self.client.get_blob(self.id, PULL_BLOB)
        except RiverError as exc:
            missing_pull_blob(self.id, exc)
        return pulled_values(self, final, blob)


Handle = TypeVar("Handle", bound=HandleCore)


class GroupCore(GroupBase[Handle]):
    """Several tasks handled together: an array (`submit_array`) or one task per target."""

    def __init__(
        self,
        client: ClientCore,
        handles: Sequence[Handle],
        labels: Sequence[str] | None = None,
        *,
        array_id: str | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(handles, labels, array_id)
        self.client = client
        self.limit = limit

    @io_method
    async def refresh(self) -> dict[str, str | None]:
        """Fetch every member's record; label -> state."""
        for handle in self.handles:
            await handle.info()
        return self.states()

    @io_iterator
    async def watch(
        self, *, logs: bool = True, timeout: float | None = None
    ) -> AsyncGenerator[Event, None]:
        async for event in self.client.watch(self.handles, logs=logs, timeout=timeout):
            yield event

    @io_method
    async def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        async for _event in self.client.watch(self.handles, logs=False, timeout=timeout):
            pass
        return [h.last or {} for h in self.handles]

    @io_method
    async def kill(self) -> list[dict[str, Any]]:
        """Kill every member that has not ended (queued ones end at once)."""
        out = []
        for handle in self.kill_order():
            if is_terminal((handle.last or {}).get("state")):
                continue
            try:
                out.append(await handle.kill())
            except RiverError as exc:
                if exc.status != 409:  # 409: it ended meanwhile
                    raise
        return out

    @io_method
    async def results(self, timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """label -> pulled variables of each member (see TaskHandle.result)."""
        await self.wait(timeout)
        return {label: await h.result() for label, h in zip(self.labels, self.handles, strict=True)}
