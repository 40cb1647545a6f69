"""Per-task blobs over HTTP: list, read and write (owner or operator only; see docs/api.md)."""

from __future__ import annotations

from tornado import web

from river_server.blobs import BlobError, check_name
from river_server.handlers.base import RiverAPIHandler


class TaskBlobsHandler(RiverAPIHandler):
    @web.authenticated
    def get(self, task_id: str) -> None:
        task = self.load_task(task_id, action="logs")
        self.write_json({"blobs": self.river.blobs.list(task.id)})


class TaskBlobHandler(RiverAPIHandler):
    @web.authenticated
    def get(self, task_id: str, name: str) -> None:
        task = self.load_task(task_id, action="logs")
        try:
            data = self.river.blobs.get(task.id, name)
        except BlobError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)

    @web.authenticated
    def put(self, task_id: str, name: str) -> None:
        self.require_role("user")
        task = self.load_task(task_id, action="control")
        store = self.river.blobs
        try:
            declared = int(self.request.headers.get("Content-Length") or 0)
            if declared > store.max_bytes:
                raise store.too_large(name, declared)
            check_name(name, writing=True)
            info = store.put(task.id, name, self.request.body)
        except BlobError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"blob": info}, status=201)
