"""`river put` / `river get`: files into and out of a running task or VPS, as blobs.

The client uploads the files (a tar stream) as an ordinary data-plane blob (same bounds,
same progress), then POSTs /tasks/{id}/files/put; the host lets the task's runner fetch
that one blob while the call lasts and asks it to place it. A get asks the runner to pack
PATH and upload it as a blob of the task's owner (PUT /runner/tasks/{id}/files, bounded
like any upload); the client then downloads /data/{digest}. Only the owner may copy files
(others get 404, as if the task did not exist; a viewer 403), and only while it runs.
"""

from __future__ import annotations

from typing import Any

from tornado import web

from river_runner.ids import parse_id
from river_runner.protocol import TaskState
from river_runner.wire.requests import FileGet, FilePut
from river_server import db
from river_server.handlers.base import RiverAPIHandler
from river_server.handlers.data import RunnerPulledHandler
from river_server.runner_client import RunnerUnreachable

LIVE = (TaskState.RUNNING.value, TaskState.PAUSED.value)
FILES_TIMEOUT = 600.0  # a runner call that moves a blob: as long as an upload may take


class TaskFilesBase(RiverAPIHandler):
    def _lookup(self, number: int) -> db.Task | None:
        with self.river.sessions() as session:
            task = session.get(db.Task, number)
            if task is not None:
                session.expunge(task)
        if task is None or task.spec.get("vps"):
            # A VPS ID names its current incarnation (a task of its own).
            return self.river.vps.current(number) or task
        return task

    async def live_task(self, ref: str) -> db.Task:
        """The caller's own running task (or VPS), or the 4xx that says why not."""
        self.require_role("user")
        try:
            number = parse_id(ref)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        task = await self.river.db.read(self._lookup, number)
        if task is None or task.owner != self.username:
            raise web.HTTPError(404, f"no task or VPS {ref} of yours")
        if task.state not in LIVE:
            raise web.HTTPError(
                409, f"task {task.id} is {task.state}: files are copied only while it runs"
            )
        return task

    async def runner_call(self, task: db.Task, action: str, body: dict[str, Any]) -> dict:
        node = self.river.connections.get(task.node or "")
        if node is None:
            raise web.HTTPError(409, f"node {task.node} is offline; try again when it is back")
        try:
            return await self.river.runner_client.call(
                node.url,
                node.secret,
                f"/api/tasks/{task.id}/files/{action}",
                body,
                timeout=FILES_TIMEOUT,
            )
        except RunnerUnreachable as exc:
            status = exc.status if exc.status in (400, 404, 409, 413) else 502
            message = str(exc).split(": ", 1)[-1] if exc.status else str(exc)
            raise web.HTTPError(status, message) from None


class TaskFilePutHandler(TaskFilesBase):
    """POST /tasks/{id}/files/put {path, digest}: place an uploaded tar blob at path."""

    bodies = {"post": FilePut}

    @web.authenticated
    async def post(self, ref: str) -> None:
        self.require_role("user")
        body = self.body(FilePut)  # a bad body is named before the task is looked up
        task = await self.live_task(ref)
        store = self.river.data
        if not store.has(self.username, body.digest):
            raise web.HTTPError(400, f"you have no blob {body.digest}: upload it first")
        store.grant(task.id, body.digest)
        try:
            placed = await self.runner_call(task, "put", {"path": body.path, "digest": body.digest})
        finally:
            store.revoke(task.id, body.digest)
        self.write_json({"task": str(task.id), "path": placed.get("path", body.path)})


class TaskFileGetHandler(TaskFilesBase):
    """POST /tasks/{id}/files/get {path}: pack path into a blob of yours; its digest."""

    bodies = {"post": FileGet}

    @web.authenticated
    async def post(self, ref: str) -> None:
        self.require_role("user")
        body = self.body(FileGet)
        task = await self.live_task(ref)
        blob = await self.runner_call(task, "get", {"path": body.path})
        self.write_json(
            {"task": str(task.id), "blob": {"digest": blob["digest"], "size": blob["size"]}}
        )


class RunnerFilesHandler(RunnerPulledHandler):
    """PUT /runner/tasks/{id}/files: files a runner packed for `river get` (X-River-Digest),
    stored as a blob of the task's owner under the same bounds as any upload."""

    async def put(self, task_id: str) -> None:
        _upload, info = await self.finish_upload()
        self.set_status(201)
        self.finish({"blob": info})
