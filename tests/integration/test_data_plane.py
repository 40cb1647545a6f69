"""The data plane (issue #17): pushed values and pulled results as blobs by digest.

Real host and runner processes (tests/cluster.py), real numpy arrays, real sockets.
"""

from __future__ import annotations

import re
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from river_magics import Client
from river_magics.dataplane import frame
from river_magics.errors import RiverError
from river_runner import digest as blob_digest
from river_runner.data import cache_dir_name
from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"
GiB = 1024**3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("data"))
    # The default bounds (8 GiB a user): a 1 GiB push and its 1 GiB result fit together.
    # The runner fetches over HTTP as from another machine (tests/integration/
    # test_data_link.py covers the hard link a runner on the host's machine makes).
    with running_cluster(root, ("n1", "--cpus", "0", "--no-data-link")) as made:
        yield made


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A host that keeps at most 1.5 GiB per user (no runner: nothing runs there)."""
    root = Path(tmp_path_factory.mktemp("data-small"))
    with running_cluster(
        root, extra_host_args=[f"--RiverHost.data_user_max_bytes={int(1.5 * GiB)}"]
    ) as made:
        yield made


@pytest.fixture(scope="module")
def tokens(cluster: Cluster) -> dict[str, str]:
    return cluster.make_users("alice", "bob")


def _received(cluster: Cluster) -> list[int]:
    log = (cluster.root / "host.log").read_text(errors="replace")
    return [int(n) for n in re.findall(r"data plane: received blob \w+ \((\d+) bytes\)", log)]


def _objects(cluster: Cluster) -> list[Path]:
    return list((cluster.root / "host" / "data" / "objects").glob("*/*"))


def _temps(cluster: Cluster) -> list[Path]:
    return list((cluster.root / "host" / "data" / "tmp").iterdir())


def test_a_1gib_array_goes_out_and_comes_back_equal_with_host_memory_bounded(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    array = np.arange(GiB // 8, dtype=np.float64)
    host = psutil.Process(cluster.host_process.pid)
    peak = [host.memory_info().rss]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], host.memory_info().rss)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with Client(cluster.url, tokens["alice"]) as client:
            handle = client.submit(script="y = x * 2\ny[0] = -1.0", push={"x": array}, pull=["y"])
            values = handle.result(timeout=300)
    finally:
        done.set()
        watcher.join()
    expected = array * 2
    expected[0] = -1.0
    assert np.array_equal(values["y"], expected)
    assert _received(cluster)[-1] >= GiB  # it travelled as a blob, not inside the script
    # 1 GiB went in and 1 GiB came out; the host process never held either in memory.
    assert peak[0] < 400 * 1024**2, f"host RSS peaked at {peak[0] / 2**20:.0f} MiB"


def test_the_same_array_for_8_array_members_is_uploaded_once(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    array = np.random.default_rng(8).random(4 * 1024**2 // 8)  # 4 MiB
    before = len(_received(cluster))
    with Client(cluster.url, tokens["alice"]) as client:
        group = client.submit_array(
            "0-7", script="import os; s = float(x.sum())", push={"x": array}, pull=["s"]
        )
        results = group.results(timeout=120)
        again = client.submit(script="s = float(x.sum())", push={"x": array}, pull=["s"])
        assert again.result(timeout=60)["s"] == pytest.approx(float(array.sum()))
    assert len(results) == 8
    assert all(r["s"] == pytest.approx(float(array.sum())) for r in results.values())
    uploads = _received(cluster)[before:]
    pushed = [n for n in uploads if n >= 4 * 1024**2]
    assert len(pushed) == 1, f"the host received {uploads}"


def test_a_push_over_the_users_limit_is_refused_before_any_byte(small: Cluster) -> None:
    cluster = small
    tokens = cluster.make_users("bob")
    digest = "ab" * 32
    with httpx.Client(base_url=cluster.url, **as_user(tokens["bob"])) as http:
        checked = http.post(f"{A}/data", json={"blobs": [{"digest": digest, "size": 2 * GiB}]})
        assert checked.status_code == 413
        assert "c.RiverHost.data_user_max_bytes" in checked.json()["message"]
        assert "1.5 GiB" in checked.json()["message"]
    # A raw PUT that declares 2 GiB is answered from its headers alone.
    with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
        sock.sendall(
            (
                f"PUT {A}/data/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
                f"Authorization: token {tokens['bob']}\r\nContent-Length: {2 * GiB}\r\n\r\n"
            ).encode()
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "data_user_max_bytes" in answer
    assert not _temps(cluster)


def test_an_interrupted_upload_leaves_nothing_behind(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    payload = np.random.default_rng(1).bytes(8 * 1024**2)
    digest = blob_digest.of_bytes(payload)
    with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
        sock.sendall(
            (
                f"PUT {A}/data/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
                f"Authorization: token {tokens['bob']}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            + payload[: len(payload) // 2]
        )
        wait_for(lambda: _temps(cluster), 10, what="the upload to begin")
    wait_for(lambda: not _temps(cluster), 10, what="the partial upload to be removed")
    assert not any(p.name == digest for p in _objects(cluster))
    with httpx.Client(base_url=cluster.url, **as_user(tokens["bob"])) as http:
        assert http.head(f"{A}/data/{digest}").status_code == 404
        # A body whose bytes do not hash to its name is refused and not kept either.
        wrong = http.put(f"{A}/data/{'0' * 64}", content=payload)
        assert wrong.status_code == 400 and "BLAKE3" in wrong.json()["message"]
    assert not _temps(cluster)
    assert not any(p.name == "0" * 64 for p in _objects(cluster))


def test_another_user_can_neither_read_a_blob_nor_learn_it_exists(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    made = frame(np.arange(1000))
    with Client(cluster.url, tokens["alice"]) as client:
        client.push_values({"secret": made})
    url = f"{A}/data/{made.digest}"
    with httpx.Client(base_url=cluster.url, **as_user(tokens["alice"])) as alice:
        assert alice.head(url).status_code == 200
        assert alice.get(url).content[:8] == made.header[:8]
    with httpx.Client(base_url=cluster.url, **as_user(tokens["bob"])) as bob:
        assert bob.head(url).status_code == 404
        assert bob.get(url).status_code == 404
        have = bob.post(f"{A}/data", json={"blobs": [{"digest": made.digest, "size": made.size}]})
        assert have.json()["missing"] == [made.digest]  # "upload it": no hint alice has it
        task = {"script": "pass", "data": {"push": {"x": {"digest": made.digest, "size": 1}}}}
        refused = bob.post(f"{A}/tasks", json=task)
        assert refused.status_code == 400 and "upload it first" in refused.json()["message"]
    # Sending the bytes gives bob his own reference (without a second copy).
    with Client(cluster.url, tokens["bob"]) as client:
        client.push_values({"mine": made})
    assert sum(p.name == made.digest for p in _objects(cluster)) == 1


def test_an_unpicklable_push_is_named_before_anything_is_sent(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    with Client(cluster.url, tokens["alice"]) as client, pytest.raises(RiverError, match="'f'"):
        client.submit(script="pass", push={"f": threading.Lock()})


def test_a_blob_that_arrives_damaged_fails_the_task_with_the_reason(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    made = frame(np.arange(300_000))
    with Client(cluster.url, tokens["alice"]) as client:
        client.push_values({"x": made})
        stored = next(p for p in _objects(cluster) if p.name == made.digest)
        with open(stored, "r+b") as handle:  # the host's copy rots on disk
            handle.seek(made.size // 2)
            handle.write(b"rot")
        try:
            handle_ = client.submit(script="y = 1", push={"x": made}, pull=["y"])
            final = handle_.wait(timeout=60)
        finally:
            stored.unlink()  # the next push of these bytes uploads them again
    assert final["state"] == "failed", final
    assert "could not fetch pushed data" in final["reason"], final
    assert "damaged" in final["reason"], final


def test_a_task_killed_while_its_runner_fetches_never_starts(
    cluster: Cluster, tokens: dict[str, str]
) -> None:
    array = np.full(512 * 1024**2 // 8, 7.0)  # a fetch of seconds
    marker = cluster.root / "started-after-kill"
    runner_log = cluster.root / "runner-n1.log"
    with Client(cluster.url, tokens["alice"]) as client:
        handle = client.submit(
            script=f"open({str(marker)!r}, 'w').close()", push={"x": array}, name="cut-fetch"
        )
        wait_for(lambda: handle.status == "assigning", 60, interval=0.02, what="placement")
        handle.kill()
        final = handle.wait(timeout=30)
    assert final["state"] == "killed", final
    # Either the kill reaches the runner mid-fetch (it cancels the fetch) or the host already
    # refuses the blob to a killed task (the fetch fails): either way it never starts.
    ended = (
        f"task {handle.id}: killed while fetching its pushed data",
        f"task {handle.id}: pushed blob",
    )
    wait_for(
        lambda: any(line in runner_log.read_text() for line in ended),
        30,
        what="the runner to stop the fetch",
    )
    assert f"task {handle.id}: pushed data ready" not in runner_log.read_text()
    assert not marker.exists()


def _runner_cache(cluster: Cluster) -> Path:
    """The runner's blob cache: beside scratch dirs (tasks as another account) or its own."""
    for root in (
        Path(tempfile.gettempdir()) / cache_dir_name("n1", cluster.root / "runners" / "n1"),
        cluster.root / "runners" / "n1" / "data",
    ):
        if (root / "cache").is_dir():
            return root / "cache"
    raise AssertionError("the runner has no blob cache")


def test_a_shortened_cache_file_is_fetched_again(cluster: Cluster, tokens: dict[str, str]) -> None:
    """Cache files are not fsynced (river_runner/blobwrite.py): a power loss may leave one
    shorter under its digest's name. A cached file of another size than the task's
    reference is fetched again instead of handed to the task."""
    array = np.arange(200_000, dtype=np.float64)
    with Client(cluster.url, tokens["alice"]) as client:
        first = client.submit(script="y = float(x.sum())", push={"x": array}, pull=["y"])
        assert first.result(timeout=120)["y"] == float(array.sum())
        digest = frame(array, "x").digest
        cached = _runner_cache(cluster) / digest
        with open(cached, "r+b") as handle:  # what a power loss may leave
            handle.truncate(cached.stat().st_size // 2)
        # Fetched over HTTP (--no-data-link): a file of its own, not the host's.
        stored = next(p for p in _objects(cluster) if p.name == digest)
        assert cached.stat().st_ino != stored.stat().st_ino
        again = client.submit(script="y = float(x.sum())", push={"x": array}, pull=["y"])
        assert again.result(timeout=120)["y"] == float(array.sum())
    assert cached.stat().st_size == frame(array, "x").size


def test_a_download_is_sent_whole_and_readers_that_leave_cost_the_host_nothing(
    small: Cluster,
) -> None:
    """Downloads are sendfile'd by a worker thread on a detached connection
    (river_server/fileserve.py): the body arrives whole, the connection is closed after it,
    and a reader that leaves mid-body leaves no descriptor open in the host."""
    cluster = small
    token = cluster.make_users("carol")["carol"]
    payload = np.random.default_rng(7).bytes(32 * 1024**2)
    digest = blob_digest.of_bytes(payload)
    host = psutil.Process(cluster.host_process.pid)
    with httpx.Client(base_url=cluster.url, **as_user(token)) as http:
        assert http.put(f"{A}/data/{digest}", content=payload).status_code == 201
        fds = host.num_fds()
        for _ in range(6):  # readers that take the head and 1 MiB, then hang up
            with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
                sock.sendall(
                    (
                        f"GET {A}/data/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
                        f"Authorization: token {token}\r\n\r\n"
                    ).encode()
                )
                got = b""
                while len(got) < 1024**2:
                    piece = sock.recv(65536)
                    assert piece, "the host closed the connection before 1 MiB"
                    got += piece
                assert got.startswith(b"HTTP/1.1 200")
        with http.stream("GET", f"{A}/data/{digest}") as answer:
            assert answer.status_code == 200
            assert answer.headers["content-length"] == str(len(payload))
            assert answer.headers["connection"] == "close"  # the detached, sendfile'd path
            body = answer.read()
        assert body == payload
    wait_for(lambda: host.num_fds() <= fds, 30, what="the host to close the readers' sockets")
