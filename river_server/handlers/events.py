"""Server-sent event stream of task states, log lines and node changes.

A subscription is made before the backlog is read, and every log line carries its sequence
number, so replayed and live lines join without gaps or duplicates.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError

from river_runner.ids import parse_id
from river_runner.protocol import EVENT_HELLO, EVENT_LOG, EVENT_NODE, EVENT_TASK
from river_runner.wire.queries import EventsQuery
from river_server import db
from river_server.auth import role_at_least
from river_server.handlers.base import RiverAPIHandler
from river_server.limits import LimitReached

KEEPALIVE_SECONDS = 15.0


class EventsHandler(RiverAPIHandler):
    queries = {"get": EventsQuery}
    _closed = False

    def on_connection_close(self) -> None:
        self._closed = True
        subscription = getattr(self, "_subscription", None)
        if subscription is not None:
            subscription.queue.put_nowait(None)

    def _task_ids(self) -> list[int]:
        try:
            return [parse_id(value) for value in self.query(EventsQuery).task]
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None

    @web.authenticated
    async def get(self) -> None:
        task_ids = self._task_ids()
        since = self.query(EventsQuery).since
        privileged = role_at_least(self.role, "operator")
        all_tasks = self.query(EventsQuery).tasks == "all"
        tasks = [self.load_task(str(tid), action="see") for tid in task_ids]
        log_ids = {str(t.id) for t in tasks if t.owner == self.username or privileged}
        watched = {str(t.id) for t in tasks}
        me = self.username

        # A stream that names tasks gets only those (a waiting cell must not pay for every
        # other task of its owner: with many clients that is quadratic); a stream that
        # names none gets the caller's tasks (or all with tasks=all) and node changes.
        def accepts(kind: str, data: dict[str, Any]) -> bool:
            if kind == EVENT_LOG:
                return data["task_id"] in log_ids
            if kind == EVENT_TASK:
                if all_tasks:
                    return True
                return data["task"]["id"] in watched if watched else data.get("owner") == me
            return kind == EVENT_NODE and (all_tasks or not watched)

        try:  # each open stream holds a socket, a queue and a coroutine: bounded per user
            self.river.streams.acquire(me)
        except LimitReached as exc:
            raise web.HTTPError(429, str(exc)) from None
        bus = self.river.bus
        self._subscription = bus.subscribe(accepts)
        try:
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.set_header("X-Accel-Buffering", "no")
            sent: dict[str, int] = {}
            await self._send(EVENT_HELLO, {"server_time": time.time()})
            for task in tasks:
                # State first, then lines, but sent lines-then-state: a task's final status
                # is stored after its last line, so a client may stop at a terminal state.
                with self.river.sessions() as session:
                    fresh = session.get(db.Task, task.id) or task
                state = self.river.tasks.to_json(fresh)
                if str(task.id) in log_ids:
                    for line in self.river.logs.read(task.id, since):
                        await self._send_log(str(task.id), line, sent)
                await self._send(EVENT_TASK, {"task": state})
            await self._pump(sent)
        except StreamClosedError:
            pass
        finally:
            bus.unsubscribe(self._subscription)
            self.river.streams.release(me)

    async def _pump(self, sent: dict[str, int]) -> None:
        queue = self._subscription.queue
        while not self._closed:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                self.write(": keepalive\n\n")
                await self.flush()
                continue
            if item is None:
                return
            kind, data = item
            if kind == EVENT_LOG:
                await self._send_log(data["task_id"], data, sent)
            elif kind == EVENT_TASK:
                await self._send(kind, {"task": data["task"]})
            else:
                await self._send(kind, data)

    async def _send_log(self, task_id: str, line: dict[str, Any], sent: dict[str, int]) -> None:
        if line["seq"] <= sent.get(task_id, 0):
            return
        sent[task_id] = line["seq"]
        event = {"task_id": task_id, **{k: line[k] for k in ("seq", "stream", "text", "ts")}}
        if line.get("continued"):  # a chunk of a longer line (river_runner.loglines)
            event["continued"] = True
        await self._send(EVENT_LOG, event)

    async def _send(self, kind: str, data: dict[str, Any]) -> None:
        self.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n")
        await self.flush()
