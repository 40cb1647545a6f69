"""Per-task blobs over HTTP: list, read and write (owner or operator only; see docs/api.md).

Uploads may be larger than the server-wide body bound (c.RiverHost.max_request_body), so
this route streams its body: who is asking, and whether the blob fits the per-blob and
per-user bounds, is settled in `prepare`, before a byte of the body is read; only then is
the connection's body limit raised to blob_max_bytes.
"""

from __future__ import annotations

import inspect

from sqlalchemy import select
from tornado import web

from river_server import db
from river_server.blobs import BlobError, check_name
from river_server.handlers.base import RiverAPIHandler


class TaskBlobsHandler(RiverAPIHandler):
    @web.authenticated
    def get(self, task_id: str) -> None:
        task = self.load_task(task_id, action="logs")
        self.write_json({"blobs": self.river.blobs.list(task.id)})


@web.stream_request_body
class TaskBlobHandler(RiverAPIHandler):
    _chunks: list[bytes]
    _refusal: web.HTTPError | None = None  # answered once a small body has been read
    _used = 0  # the owner's blob bytes when the upload began

    async def prepare(self) -> None:  # type: ignore[override]
        self._chunks = []
        uploading = self.request.method == "PUT"
        declared = self._declared_length() if uploading else 0
        try:
            result = super().prepare()  # Jupyter's: who is asking (and XSRF)
            if inspect.isawaitable(result):
                await result
            if self._finished or not uploading:
                return
            self._check_upload(declared)
        except web.HTTPError as exc:
            if not uploading or declared > self.river.config.max_request_body:
                raise  # refused before a byte of a body the server would not take anyway
            # A small body is read (and dropped) first: closing a connection with unread
            # bytes resets it, and the client would lose the answer.
            self._refusal = exc
            return
        self.request.connection.set_max_body_size(self.river.blobs.max_bytes)

    def _check_upload(self, declared: int) -> None:
        """Who asks, for which task, and whether `declared` bytes fit both bounds."""
        if self.current_user is None:
            raise web.HTTPError(403, "log in (or send an API token) to upload a blob")
        task_id, name = self.path_args
        self.require_role("user")
        task = self.load_task(task_id, action="control")
        store = self.river.blobs
        try:
            check_name(name, writing=True)
            if declared > store.max_bytes:
                raise store.too_large(name, declared)
            with self.river.sessions() as session:
                mine = session.scalars(select(db.Task.id).where(db.Task.owner == task.owner))
                used = store.usage(mine)
            store.check_user_total(task.owner, used, declared)
        except BlobError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self._used = used

    def _declared_length(self) -> int:
        try:
            return int(self.request.headers.get("Content-Length") or 0)
        except ValueError:
            raise web.HTTPError(400, "Content-Length must be a number of bytes") from None

    def data_received(self, chunk: bytes) -> None:
        if self._refusal is None:
            self._chunks.append(chunk)

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
        if self._refusal is not None:
            raise self._refusal
        task = self.load_task(task_id, action="control")
        data = b"".join(self._chunks)
        try:  # the per-user total again: a chunked body declares no length up front
            self.river.blobs.check_user_total(task.owner, self._used, len(data))
            info = self.river.blobs.put(task.id, name, data)
        except BlobError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"blob": info}, status=201)
