"""A download sent on a detached connection (river_server/fileserve.py) leaves one line in
the host's access log, as Jupyter's own requests do, with the bytes sent: Tornado logs a
request in `finish()`, which a detached handler never reaches (river_server/access_log.py).

A real host process (tests/cluster.py) at debug level, where Jupyter logs its successes;
real blobs uploaded and downloaded over loopback; the host's log file read back.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"
MiB = 1024**2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("download-log"))
    with running_cluster(root, extra_host_args=["--ServerApp.log_level=DEBUG"]) as made:
        yield made


@pytest.fixture(scope="module")
def token(cluster: Cluster) -> str:
    return cluster.make_users("dora")["dora"]


def _blob(cluster: Cluster, token: str, size: int, seed: int) -> str:
    payload = np.random.default_rng(seed).bytes(size)
    digest = hashlib.sha256(payload).hexdigest()
    with httpx.Client(base_url=cluster.url, **as_user(token)) as http:
        assert http.put(f"{A}/data/{digest}", content=payload).status_code == 201
    return digest


def _log_lines(cluster: Cluster, needle: str) -> list[str]:
    text = (cluster.root / cluster.host_log).read_text(errors="replace")
    return [line for line in text.splitlines() if needle in line]


def test_a_whole_download_logs_its_line_with_the_bytes_sent(cluster: Cluster, token: str) -> None:
    size = 8 * MiB
    digest = _blob(cluster, token, size, seed=1)
    with (
        httpx.Client(base_url=cluster.url, **as_user(token)) as http,
        http.stream("GET", f"{A}/data/{digest}") as answer,
    ):
        assert answer.headers["connection"] == "close"  # the detached, sendfile'd path
        assert len(answer.read()) == size
    needle = f"GET {A}/data/{digest} "
    lines = wait_for(lambda: _log_lines(cluster, needle), 30, what=f"a log line with {needle}")
    assert len(lines) == 1, lines  # one line, not one per chunk or none
    assert re.search(
        rf"200 GET {A}/data/{digest} \(dora@127\.0\.0\.1\) \d+\.\d\dms {size} bytes sent$",
        lines[0],
    ), lines[0]


def test_a_reader_that_leaves_gets_a_cut_off_line_with_what_it_got(
    cluster: Cluster, token: str
) -> None:
    size = 64 * MiB  # far more than loopback's socket buffers hold
    digest = _blob(cluster, token, size, seed=2)
    with socket.create_connection(("127.0.0.1", cluster.port)) as sock:
        sock.sendall(
            (
                f"GET {A}/data/{digest} HTTP/1.1\r\nHost: 127.0.0.1:{cluster.port}\r\n"
                f"Authorization: token {token}\r\n\r\n"
            ).encode()
        )
        got = 0
        while got < MiB:
            piece = sock.recv(65536)
            assert piece, "the host closed the connection before 1 MiB"
            got += len(piece)
    needle = f"GET {A}/data/{digest} "
    lines = wait_for(lambda: _log_lines(cluster, needle), 30, what=f"a log line with {needle}")
    assert len(lines) == 1, lines
    found = re.search(rf"\(dora@127\.0\.0\.1\) \S+ (\d+) of {size} bytes sent \(cut off", lines[0])
    assert found and MiB <= int(found.group(1)) < size, lines[0]
    assert "[I " in lines[0] or " INFO " in lines[0], lines[0]  # seen at the default level


def test_the_querys_secrets_stay_out_of_the_line(cluster: Cluster, token: str) -> None:
    digest = _blob(cluster, token, MiB, seed=3)
    answer = httpx.get(f"{cluster.url}{A}/data/{digest}?token={token}", timeout=30)
    assert answer.status_code == 200 and len(answer.content) == MiB
    needle = f"GET {A}/data/{digest}?token="
    lines = wait_for(lambda: _log_lines(cluster, needle), 30, what=f"a log line with {needle}")
    assert "token=[secret] (dora@127.0.0.1)" in lines[0] and token not in lines[0], lines
