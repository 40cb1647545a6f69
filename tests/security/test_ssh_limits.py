"""The SSH proxy's bound on connections: each is a thread before anyone has logged in, so
an anonymous flood must stop at `c.RiverHost.ssh_max_connections` instead of growing the
host without bound, and a freed slot serves the next caller."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, free_port, running_cluster, wait_for

BOUND = 2


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    port = free_port()
    args = [f"--RiverHost.ssh_max_connections={BOUND}"]
    with running_cluster(tmp_path, ssh_proxy_port=port, extra_host_args=args) as cluster:
        yield cluster, port


def _greeting(sock: socket.socket) -> bytes:
    """What the proxy says first: its SSH banner, or b'' when it closed the connection."""
    sock.settimeout(10)
    try:
        return sock.recv(64)
    except ConnectionResetError:
        return b""


def test_connections_past_the_bound_are_closed_and_a_freed_slot_serves(
    ssh_host: tuple[Cluster, int],
) -> None:
    cluster, port = ssh_host
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(BOUND)]
    try:
        for sock in held:
            assert _greeting(sock).startswith(b"SSH-2.0-")
        with socket.create_connection(("127.0.0.1", port)) as extra:
            assert _greeting(extra) == b"", "a connection past the bound was served"
        # The host serves its API meanwhile.
        assert cluster.request("GET", "/river/api/nodes").status_code == 200
        held.pop().close()

        def served() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as again:
                return _greeting(again).startswith(b"SSH-2.0-")

        wait_for(served, 20, what="a freed slot to serve a new SSH connection")
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
