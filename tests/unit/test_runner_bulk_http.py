"""The runner's raw-socket data-plane legs (river_runner/bulkhttp.py through
river_runner/data.py `DataCache`) against a real Tornado server on loopback: a blob arrives
whole and verified, a short or damaged one is refused and leaves no file, an error's text
reaches the task, a result upload is sent whole, and a refusal answered from the headers
is reported with the host's own message."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tornado import httpserver, ioloop, netutil, web

from river_runner import digest as blob_digest
from river_runner.blobwrite import BUFFER
from river_runner.data import DIGEST_HEADER, DataCache, DataFetchError
from tests.cluster import wait_for

BLOB = os.urandom(2 * BUFFER + 4321)
GOOD = blob_digest.of_bytes(BLOB)
DAMAGED, SHORT, MISSING, STALLED = "0" * 64, "1" * 64, "2" * 64, "3" * 64
received: dict[str, bytes] = {}


class Blob(web.RequestHandler):
    async def get(self, digest: str) -> None:
        if digest == MISSING:
            raise web.HTTPError(404, reason="task 7 pushed no blob 2222")
        self.set_header("Content-Length", str(len(BLOB)))
        body = bytearray(BLOB)
        if digest == DAMAGED:
            body[-1] ^= 1
        if digest == STALLED:  # half, then nothing for longer than the test waits
            self.write(bytes(body[: len(BLOB) // 2]))
            await self.flush()
            await asyncio.sleep(60)
            return
        if digest == SHORT:
            self.write(bytes(body[: len(BLOB) // 2]))
            await self.flush()
            self.request.connection.stream.close()  # type: ignore[attr-defined]
            return
        self.write(bytes(body))


@web.stream_request_body
class Pulled(web.RequestHandler):
    def prepare(self) -> None:
        self.hash, self.size = blob_digest.hasher(), 0
        if self.path_args[0] == "2":  # refused from the headers, before the body
            self.set_header("Connection", "close")
            raise web.HTTPError(413, reason="over data_user_max_bytes (1.0 GiB)")
        self.request.connection.set_max_body_size(1 << 31)  # type: ignore[attr-defined]

    def data_received(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        self.size += len(chunk)

    def put(self, task_id: str) -> None:
        received[task_id] = self.request.headers[DIGEST_HEADER].encode()
        if self.hash.hexdigest() != self.request.headers[DIGEST_HEADER]:
            raise web.HTTPError(400, reason="digest mismatch")
        self.set_status(201)
        self.finish({"blob": {"digest": self.hash.hexdigest(), "size": self.size}})


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    """A Tornado server in a thread of its own; its base URL."""
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    started = threading.Event()
    holder: dict[str, ioloop.IOLoop] = {}

    def serve() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        app = web.Application(
            [
                (r"/river/api/runner/data/(\w+)", Blob),
                (r"/river/api/runner/tasks/(\d+)/pulled", Pulled),
            ]
        )
        server = httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        holder["loop"] = ioloop.IOLoop.current()
        started.set()
        holder["loop"].start()
        server.stop()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{port}"
    holder["loop"].add_callback(holder["loop"].stop)
    thread.join(10)


def _fetch(cache: DataCache, base: str, digest: str) -> Path:
    async def run() -> Path:
        async with httpx.AsyncClient() as http:
            return await cache.fetch(http, {}, 7, digest, base)

    return asyncio.run(run())


def _send(cache: DataCache, base: str, task: int) -> str | None:
    async def run() -> str | None:
        async with httpx.AsyncClient() as http:
            return await cache.send_result(http, {}, task, base)

    return asyncio.run(run())


def test_a_blob_arrives_whole_and_verified(tmp_path: Path, base: str) -> None:
    cache = DataCache(tmp_path)
    path = _fetch(cache, base, GOOD)
    assert path.read_bytes() == BLOB
    assert cache.fetched_bytes == len(BLOB)
    assert list(cache.tmp.iterdir()) == []


@pytest.mark.parametrize(("digest", "why"), [(DAMAGED, "damaged"), (SHORT, "of")])
def test_a_damaged_or_short_blob_is_refused_and_leaves_nothing(
    tmp_path: Path, base: str, digest: str, why: str
) -> None:
    cache = DataCache(tmp_path)
    with pytest.raises(DataFetchError, match=why):
        _fetch(cache, base, digest)
    assert list(cache.tmp.iterdir()) == [] and list(cache.root.iterdir()) == []


def test_the_hosts_refusal_reaches_the_task(tmp_path: Path, base: str) -> None:
    with pytest.raises(DataFetchError, match="404 .*pushed no blob"):
        _fetch(DataCache(tmp_path), base, MISSING)


def _result(cache: DataCache, task: int, data: bytes) -> None:
    directory = cache.out / str(task)
    directory.mkdir()
    (directory / "pulled").write_bytes(data)


def test_a_result_is_sent_whole(tmp_path: Path, base: str) -> None:
    cache = DataCache(tmp_path)
    _result(cache, 1, BLOB)
    assert _send(cache, base, 1) is None
    assert received["1"] == GOOD.encode()
    assert not (cache.out / "1").exists()


def test_a_refusal_from_the_headers_is_reported_with_the_hosts_message(
    tmp_path: Path, base: str
) -> None:
    """The host answers 413 and closes before reading a 64 MiB body: the runner reports
    the host's reason, not a broken pipe."""
    cache = DataCache(tmp_path)
    _result(cache, 2, b"\0" * (64 << 20))
    problem = _send(cache, base, 2)
    assert problem is not None and "over data_user_max_bytes" in problem, problem


def test_a_cancelled_fetch_cuts_the_transfer_off_and_leaves_nothing(
    tmp_path: Path, base: str
) -> None:
    """A task killed while its blob arrives: the fetch ends at once (the socket is shut
    down, not left to its 60 s timeout), its thread with it, and no partial file stays."""
    cache = DataCache(tmp_path)

    async def run() -> float:
        async with httpx.AsyncClient() as http:
            fetch = asyncio.ensure_future(cache.fetch(http, {}, 7, STALLED, base))
            deadline = time.monotonic() + 30
            while not list(cache.tmp.iterdir()):  # the transfer has begun
                assert time.monotonic() < deadline and not fetch.done()
                await asyncio.sleep(0.02)
            cancelled = time.monotonic()
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
            return time.monotonic() - cancelled

    assert asyncio.run(run()) < 10
    # The thread hands its end to the loop just before it returns: allow it that moment.
    wait_for(
        lambda: "river-transfer" not in {t.name for t in threading.enumerate()},
        5,
        interval=0.01,
        what="the transfer thread to end",
    )
    assert list(cache.tmp.iterdir()) == [] and list(cache.root.iterdir()) == []
