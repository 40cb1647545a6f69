"""The client's raw-socket download (river_magics/rawget.py) against a real host.

Pulled values of a real task, small and multi-MiB, come back equal through both clients
and land in one mmap'd buffer; an error answer gives the same RiverError text as httpx's
path; an interrupted or cancelled download leaves no socket and no thread behind.
"""

from __future__ import annotations

import asyncio
import mmap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from river_magics import AsyncClient, Client
from river_magics.bridge import run_blocking
from river_magics.common import error_from_response
from river_magics.core import UPLOAD_TIMEOUT
from river_magics.progress import Progress
from river_magics.rawget import Download, direct
from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"
MiB = 1024**2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("rawget")), ("n1", "--cpus", "0")) as made:
        yield made


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    return cluster.make_users("alice", "bob")


@pytest.fixture(scope="module")
def big_task(cluster: Cluster, tokens: dict[str, str]) -> str:
    """A completed task that pulled a 64 MiB array (bigger than any socket buffer)."""
    with Client(cluster.url, tokens["alice"]) as client:
        script = "import numpy as np\ny = np.arange(8 * 1024 * 1024, dtype=np.float64)"
        handle = client.submit(script=script, pull=["y"])
        handle.wait(timeout=120)
        return str(handle.id)


class Counted:
    """A Progress stand-in that records what the download reported."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.total, self.done, self.stop_after = 0, 0, stop_after
        self.closed = False

    def add(self, size: int) -> None:
        self.done += size
        if self.stop_after is not None and self.done >= self.stop_after:
            raise KeyboardInterrupt

    def close(self) -> None:
        self.closed = True


def _open_to(port: int) -> list[psutil._common.pconn]:
    return [c for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr[1] == port]


def _downloads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "river-download"]


def test_small_and_multi_mib_pulled_values_come_back_equal_in_one_mmap(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    array = np.random.default_rng(17).random(24 * MiB // 8)
    with Client(cluster.url, tokens["alice"]) as client:
        small = client.submit(script="s = {'answer': 42}", pull=["s"]).result(timeout=120)
        big = client.submit(script="y = x * 2", push={"x": array}, pull=["y"])
        values = big.result(timeout=120)
    assert small == {"s": {"answer": 42}}
    assert np.array_equal(values["y"], array * 2)
    # The array is a view into the one buffer the socket filled: no copy after recv_into.
    base = values["y"].base
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def test_the_async_client_pulls_equal_values(cluster: Cluster, tokens: dict[str, str]) -> None:
    array = np.random.default_rng(18).random(8 * MiB // 8)

    async def go() -> dict[str, object]:
        async with AsyncClient(cluster.url, tokens["alice"]) as client:
            handle = await client.submit(script="y = x + 1", push={"x": array}, pull=["y"])
            return await handle.result(timeout=120)

    values = asyncio.run(go())
    assert np.array_equal(values["y"], array + 1)
    assert not _downloads()


def test_a_download_reports_its_size_and_every_byte(
    cluster: Cluster, tokens: dict[str, str], big_task: str
) -> None:
    with httpx.Client(**as_user(tokens["alice"])) as http:
        request = http.build_request("GET", f"{cluster.url}{A}/tasks/{big_task}/pulled")
    assert direct(str(request.url))
    progress = Counted()
    response, body = Download(request, UPLOAD_TIMEOUT).run(progress)
    assert response.status_code == 200
    assert progress.total == progress.done == len(body) > 64 * MiB
    with httpx.Client(**as_user(tokens["alice"])) as http:
        assert http.get(str(request.url)).content == body.tobytes()


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_an_error_answer_gives_the_same_text_as_the_httpx_path(
    cluster: Cluster, tokens: dict[str, str], big_task: str, who: str
) -> None:
    # bob may not read alice's task (403/404); nobody holds this digest (404).
    path = f"{A}/tasks/{big_task}/pulled" if who == "bob" else f"{A}/data/{'ab' * 32}"
    with httpx.Client(**as_user(tokens[who])) as http:
        expected = http.get(f"{cluster.url}{path}")
        request = http.build_request("GET", f"{cluster.url}{path}")
    response, body = Download(request, UPLOAD_TIMEOUT).run(Counted())
    assert response.status_code == expected.status_code >= 400
    assert len(body) == 0
    assert response.json() == expected.json()
    ours, theirs = (str(error_from_response(r, "GET", path)) for r in (response, expected))
    assert ours == theirs
    # Through the client's own download (the path `result()` and `get_file` take).
    with Client(cluster.url, tokens[who]) as client:
        answer, _ = run_blocking(client._download(path.removeprefix(A), Progress("t", 0)))
    assert str(error_from_response(answer, "GET", path)) == theirs


def test_an_interrupted_download_leaves_no_socket_behind(
    cluster: Cluster, tokens: dict[str, str], big_task: str
) -> None:
    with Client(cluster.url, tokens["alice"]) as client:
        progress = Counted(stop_after=4 * MiB)  # the kernel's interrupt, mid-body
        with pytest.raises(KeyboardInterrupt):
            run_blocking(client._download(f"/tasks/{big_task}/pulled", progress))  # type: ignore[arg-type]
        assert 0 < progress.done < progress.total
        assert progress.closed  # the bar is marked cancelled
        assert not _open_to(cluster.port)


def test_a_cancelled_async_download_leaves_no_thread_or_socket_behind(
    cluster: Cluster, tokens: dict[str, str], big_task: str
) -> None:
    async def go() -> Counted:
        progress = Counted()
        async with AsyncClient(cluster.url, tokens["alice"]) as client:
            url = f"{client._api}/tasks/{big_task}/pulled"
            started = asyncio.get_running_loop().create_future()
            add = progress.add

            def first(size: int) -> None:
                add(size)
                if size and not started.done():
                    started.set_result(None)

            progress.add = first  # type: ignore[method-assign]
            fetch = asyncio.ensure_future(client._io_download(url, progress))  # type: ignore[arg-type]
            await started
            fetch.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetch
            assert not _downloads()  # the thread ended before the cancellation returned
        return progress

    progress = asyncio.run(go())
    assert 0 < progress.done < progress.total
    wait_for(lambda: not _open_to(cluster.port) or None, timeout=10)
