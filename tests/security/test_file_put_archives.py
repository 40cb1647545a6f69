"""Hostile archives for `put` (POST /tasks/{id}/files/put), sent past the client.

The client always packs a plain tar; an attacker uploads any blob within their bounds and
names it in a put. The runner must refuse, before anything is written, every archive that
could do more than the bytes it holds: members that escape (absolute, `..`, symlinks,
hardlinks, devices) and compressed streams, whose expansion is not bounded by the blob's
size and which the runner would decompress on its event loop (a gzip of zeros expands a
thousandfold: a runner busy for minutes misses its heartbeats and every user's tasks on
the node are lost).
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from river_magics import Client
from river_runner import digest as blob_digest
from tests.cluster import Cluster, as_user, running_cluster, wait_for

A = "/river/api"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = Path(tmp_path_factory.mktemp("hostile-put"))
    with running_cluster(root, ("n1", "--cpus", "0")) as made:
        yield made


@pytest.fixture(scope="module")
def mallory(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """mallory's token and her running task (which lists its directory when asked)."""
    token = cluster.make_users("mallory", label="hostile put")["mallory"]
    with Client(cluster.url, token) as client:
        handle = client.submit(["/bin/sh", "-c", "echo ready; sleep 300"])
        wait_for(lambda: handle.status == "running", 60, what="mallory's task to run")
        yield token, handle.id
        handle.kill()


def _put_blob(cluster: Cluster, token: str, task: str, data: bytes, path: str) -> httpx.Response:
    """Upload `data` as mallory's blob and ask for it to be put at `path` in her task."""
    digest = blob_digest.of_bytes(data)
    auth = as_user(token)
    with httpx.Client(base_url=cluster.url, timeout=120, **auth) as http:
        wanted = {"blobs": [{"digest": digest, "size": len(data)}]}
        missing = http.post(f"{A}/data", json=wanted)
        assert missing.status_code == 200, missing.text
        if missing.json()["missing"]:
            stored = http.put(f"{A}/data/{digest}", content=data)
            assert stored.status_code in (200, 201), stored.text
        return http.post(f"{A}/tasks/{task}/files/put", json={"path": path, "digest": digest})


def _exists(cluster: Cluster, token: str, task: str, path: str) -> bool:
    with httpx.Client(base_url=cluster.url, timeout=60, **as_user(token)) as http:
        got = http.post(f"{A}/tasks/{task}/files/get", json={"path": path})
    assert got.status_code in (200, 404), got.text
    return got.status_code == 200


def _gzip_bomb(name: str, expanded: int) -> bytes:
    """A gzip'd tar of one file of `expanded` zero bytes (about expanded/1000 bytes)."""
    header = tarfile.TarInfo(name)
    header.size = expanded
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    out = [packer.compress(header.tobuf(format=tarfile.GNU_FORMAT))]
    zeros = bytes(1 << 20)
    for _ in range(expanded >> 20):
        out.append(packer.compress(zeros))
    out.append(packer.compress(bytes(1024)))  # the tar's end blocks
    out.append(packer.flush())
    return b"".join(out)


def test_a_compressed_archive_is_refused_and_nothing_is_unpacked(
    cluster: Cluster, mallory: tuple[str, str]
) -> None:
    token, task = mallory
    bomb = _gzip_bomb("bomb", 256 << 20)
    assert len(bomb) < 1 << 20  # a quarter GiB from under a MiB of blob
    answer = _put_blob(cluster, token, task, bomb, "bomb")
    assert answer.status_code == 400, answer.text
    assert "plain (uncompressed) tar" in answer.json()["message"]
    assert not _exists(cluster, token, task, "bomb")
    assert cluster.wait_node("n1", "online")["state"] == "online"


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if data is not None:
        info.size = len(data)
    return info, data


@pytest.mark.parametrize(
    "members",
    [
        [_member("x", data=b"a"), _member("/tmp/river-hostile-abs", data=b"a")],
        [_member("x", tarfile.DIRTYPE), _member("x/../../river-hostile-dots", data=b"a")],
        [_member("x", tarfile.SYMTYPE, link="/etc")],
        [_member("x", tarfile.DIRTYPE), _member("x/h", tarfile.LNKTYPE, link="/etc/passwd")],
        [_member("x", tarfile.CHRTYPE)],
        [_member("x", tarfile.FIFOTYPE)],
        [_member("x", data=b"a"), _member("y", data=b"b")],  # a second top-level name
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device", "fifo", "two-tops"],
)
def test_members_that_escape_or_are_not_files_are_refused(
    cluster: Cluster, mallory: tuple[str, str], members: list
) -> None:
    token, task = mallory
    answer = _put_blob(cluster, token, task, _tar(*members), "x")
    assert answer.status_code == 400, answer.text
    assert not _exists(cluster, token, task, "x")
    assert not Path("/tmp/river-hostile-abs").exists()
