"""The data plane over HTTP: blobs by digest for users, and the runner's side of them.

Uploads stream (`@stream_request_body`): who asks and whether the declared Content-Length
fits the per-task and per-user bounds is settled in `prepare`, before a byte of the body
is read; each piece is then counted on the loop and hashed and written to a temp file by a
worker thread (river_server/uploadsink.py, bounded memory), so the host never holds a blob
in memory. Downloads are `sendfile`d from the file by a worker thread
(river_server/fileserve.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from tornado import web

from river_runner.protocol import TERMINAL_STATES
from river_runner.samehost import FILE_HEADER, LINK_HEADER, PATH_HEADER, file_identity, same_machine
from river_runner.wire.requests import DataCheck
from river_server import db
from river_server.datastore import DataError, DataStore, Upload, check_digest
from river_server.fileserve import send_file
from river_server.handlers.base import RiverAPIHandler
from river_server.handlers.runner import RunnerAPIHandler
from river_server.uploadsink import SinkError, UploadSink

DIGEST_HEADER = "X-River-Digest"


def _http(exc: DataError) -> web.HTTPError:
    return web.HTTPError(exc.status, str(exc))


def declared_length(handler: web.RequestHandler) -> int:
    value = handler.request.headers.get("Content-Length")
    if value is None:
        raise web.HTTPError(
            411, "send Content-Length: the size is checked against the bounds first"
        )
    try:
        return int(value)
    except ValueError:
        raise web.HTTPError(400, "Content-Length must be a number of bytes") from None


class StreamedUpload:
    """Mixin for a handler whose PUT body is one blob: the Upload is opened in prepare.

    The loop only counts the body's pieces (the bounds); a worker thread hashes and writes
    them (river_server/uploadsink.py). Tornado's 64 KiB reads are kept: 1 MiB reads cost
    the host more CPU per GiB, not less (docs/performance.md, ninth session).
    """

    upload: Upload | None = None
    _sink: UploadSink | None = None

    def start_upload(self, upload: Upload) -> None:
        """Receive the body into `upload` (called from prepare, once the bounds hold)."""
        self.upload = upload
        self._sink = UploadSink(upload.absorb)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.upload is None or self._sink is None:
            return None
        try:
            self.upload.accept(len(chunk))
            return self._sink.put(chunk)  # a future when the thread is behind
        except DataError as exc:
            self._drop_upload()
            raise _http(exc) from None
        except SinkError as exc:
            self._drop_upload()
            raise _stored_http(exc) from None

    def _drop_upload(self) -> None:
        if self._sink is not None:
            self._sink.drop()
            self._sink = None
        if self.upload is not None:
            self.upload.abort()
            self.upload = None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Refused before its body was read (bounds, credentials, XSRF): tornado drops the
        # connection after answering, so tell the client not to send another request on it.
        self.set_header("Connection", "close")
        super().write_error(status_code, **kwargs)  # type: ignore[misc]

    def on_connection_close(self) -> None:  # an interrupted upload leaves nothing behind
        self._drop_upload()

    def on_finish(self) -> None:
        self._drop_upload()  # answered without finishing (an error): drop it

    async def finish_upload(self) -> tuple[Upload, dict[str, Any]]:
        """The whole body has arrived: store the blob (digest checked), or a 4xx."""
        upload, sink = self.upload, self._sink
        self.upload = self._sink = None
        assert upload is not None and sink is not None
        try:
            await sink.close()
        except SinkError as exc:
            upload.abort()
            raise _stored_http(exc) from None
        try:
            return upload, upload.finish()
        except DataError as exc:
            raise _http(exc) from None


def _stored_http(exc: SinkError) -> web.HTTPError:
    if isinstance(exc.cause, DataError):
        return _http(exc.cause)
    return web.HTTPError(507, f"the host could not store the blob ({exc.cause}); try again later")


class DataCheckHandler(RiverAPIHandler):
    """POST /data: which blobs the caller still has to upload; 413 if they cannot fit."""

    bodies = {"post": DataCheck}

    @web.authenticated
    def post(self) -> None:
        self.require_role("user")
        blobs = self.body(DataCheck).blobs
        store: DataStore = self.river.data
        missing = [b for b in blobs if not store.has(self.username, b.digest)]
        try:
            store.check_room(
                self.username, sum(b.size for b in missing), f"uploading {len(missing)} blob(s)"
            )
        except DataError as exc:
            raise _http(exc) from None
        self.write_json({"missing": [b.digest for b in missing]})


@web.stream_request_body
class DataBlobHandler(StreamedUpload, RiverAPIHandler):
    """HEAD/GET/PUT /data/{digest}: the caller's own blobs only."""

    async def prepare(self) -> None:  # type: ignore[override]
        result = super().prepare()  # Jupyter's: who is asking (and XSRF)
        if inspect.isawaitable(result):
            await result
        if self._finished or self.request.method != "PUT":
            return
        if self.current_user is None:
            raise web.HTTPError(403, "log in (or send an API token) to upload a blob")
        self.require_role("user")
        declared = declared_length(self)
        try:
            upload = self.river.data.begin(self.username, self.path_args[0], declared)
        except DataError as exc:
            raise _http(exc) from None
        self.start_upload(upload)
        self.request.connection.set_max_body_size(declared)

    def _path(self, digest: str) -> Path:
        try:
            return self.river.data.open_for(self.username, digest)
        except DataError as exc:
            raise _http(exc) from None

    @web.authenticated
    def head(self, digest: str) -> None:
        self.set_header("Content-Length", str(self._path(digest).stat().st_size))
        self.finish()

    @web.authenticated
    async def get(self, digest: str) -> None:
        await send_file(self, self._path(digest))

    @web.authenticated
    async def put(self, digest: str) -> None:
        upload, info = await self.finish_upload()
        self.river.log.info(
            "River data plane: received blob %s (%d bytes) from %s",
            digest,
            upload.received,
            self.username,
        )
        self.write_json({"blob": info}, status=201)


class TaskPulledHandler(RiverAPIHandler):
    """GET /tasks/{id}/pulled: the task's pulled values, as its runner uploaded them."""

    @web.authenticated
    async def get(self, task_id: str) -> None:
        task = self.load_task(task_id, action="logs")
        digest = self.river.data.result(task.id)
        if digest is None:
            raise web.HTTPError(404, f"task {task.id} has no pulled values (yet)")
        await send_file(self, self.river.data.object_path(digest))


def check_task_data(store: DataStore, owner: str, data: dict[str, Any] | None) -> None:
    """At submit: the caller holds every pushed blob, and together they fit one task."""
    if not data:
        return
    total = 0
    for name, ref in (data.get("push") or {}).items():
        if not name.isidentifier():
            raise web.HTTPError(400, f"data.push: {name!r} is not a variable name")
        check_digest(ref["digest"])
        if not store.has(owner, ref["digest"]):
            raise web.HTTPError(
                400, f"data.push.{name}: you have no blob {ref['digest']}: upload it first"
            )
        total += store.size(ref["digest"])
    for name in data.get("pull") or []:
        if not str(name).isidentifier():
            raise web.HTTPError(400, f"data.pull: {name!r} is not a variable name")
    for name, ref in (data.get("files") or {}).items():  # checked by the wire model too
        check_digest(ref["digest"])
        if not store.has(owner, ref["digest"]):
            raise web.HTTPError(
                400, f"data.files.{name}: you have no blob {ref['digest']}: upload it first"
            )
        total += store.size(ref["digest"])
    if total > store.task_max_bytes:
        raise web.HTTPError(
            413,
            f"the pushed values and files come to {total} bytes; this host takes at most "
            f"{store.task_max_bytes} per task (c.RiverHost.data_task_max_bytes)",
        )


# ---- runners --------------------------------------------------------------------------


def _runner_task(handler: RunnerAPIHandler, node: str, task_id: str) -> db.Task:
    """The task, if it is placed on `node` and not over (a runner sees only its own)."""
    if not task_id.isdigit():
        raise web.HTTPError(400, "give the task ID (digits)")
    with handler.river.sessions() as session:
        task = session.get(db.Task, int(task_id))
    terminal = {s.value for s in TERMINAL_STATES}
    if task is None or task.node != node or task.state in terminal:
        raise web.HTTPError(404, f"no task {task_id} of yours")
    return task


class RunnerDataHandler(RunnerAPIHandler):
    """GET /runner/data/{digest}?task=ID: a blob one of this runner's live tasks pushed."""

    async def get(self, digest: str) -> None:
        node = await self.authenticate_node()
        task = _runner_task(self, node, self.get_argument("task", ""))
        data = (task.spec or {}).get("data") or {}
        refs = [*(data.get("push") or {}).values(), *(data.get("files") or {}).values()]
        granted = self.river.data.granted(task.id, digest)  # a `river put` in flight
        if not granted and digest not in {ref.get("digest") for ref in refs}:
            raise web.HTTPError(404, f"task {task.id} pushed no blob {digest}")
        path = self.river.data.object_path(digest)
        if same_machine(self.request.headers.get(LINK_HEADER)) and path.exists():
            # A runner on this machine links the file instead (river_runner/samehost.py).
            self.set_status(204)
            self.set_header(PATH_HEADER, str(path))
            self.set_header(FILE_HEADER, file_identity(path))
            self.finish()
            return
        await send_file(self, path)


@web.stream_request_body
class RunnerPulledHandler(StreamedUpload, RunnerAPIHandler):
    """PUT /runner/tasks/{id}/pulled: a task's pulled values (header X-River-Digest)."""

    async def prepare(self) -> None:  # type: ignore[override]
        super().prepare()  # a standby refuses: runners talk to the leader only
        node = await self.authenticate_node()
        task = _runner_task(self, node, self.path_args[0])
        declared = declared_length(self)
        digest = self.request.headers.get(DIGEST_HEADER, "")
        try:
            upload = self.river.data.begin(task.owner, digest, declared)
        except DataError as exc:
            raise _http(exc) from None
        self.start_upload(upload)
        self.task_id = task.id
        self.request.connection.set_max_body_size(declared)

    async def put(self, task_id: str) -> None:
        upload, info = await self.finish_upload()
        self.river.data.set_result(self.task_id, upload.digest)
        self.set_status(201)
        self.finish({"blob": info})
