"""`river forward` and `river attach` against a real cluster with the docker backend.

The CLI runs as a subprocess (`python -m river_runner.cli`, as tests/integration/
test_shell_cli.py does) with this checkout on PYTHONPATH:

- forward carries real TCP protocols into a VPS: the OpenSSH client to the VPS's own sshd
  (`ssh -p LOCAL root@127.0.0.1`), and a line echo server started in the VPS with exec,
  over two connections open at once, with a 1 MiB payload and a half-close (the server's
  last words come after the client's EOF);
- another user's forward (and attach) is refused by the host's route, and by the CLI;
- attach runs `hostname` in a running container task (stdin not a TTY) and prints the
  container's hostname.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tornado import httpclient, websocket

from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import containers_of, vps_cluster

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
NODE = f"fwd-{RUN}"
RIVER = [sys.executable, "-m", "river_runner.cli"]
ECHO_PORT = 7007
ECHO_SERVER = f"""
import socketserver
class Lines(socketserver.StreamRequestHandler):
    def handle(self):
        total = 0
        for line in self.rfile:
            total += len(line)
            self.wfile.write(line.upper())
            self.wfile.flush()
        self.wfile.write(b"total=%d\\n" % total)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", {ECHO_PORT}), Lines).serve_forever()
"""


@pytest.fixture(scope="module")
def fcluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    with vps_cluster(tmp_path_factory.mktemp("fwd"), docker_client, NODE) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def users(fcluster: Cluster) -> dict[str, str]:
    return fcluster.make_users("ivy", "jon", label="forward tests")


@pytest.fixture(scope="module")
def vps(fcluster: Cluster, users: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """Ivy's running VPS with a generated key (saved for ssh) and the echo server."""
    token = users["ivy"]
    created = fcluster.ok(
        "POST", "/river/api/vps", json={"cores": 1, "ssh": "generate"}, **as_user(token)
    )["vps"]
    vps_id = created["id"]

    def up() -> dict[str, Any] | None:
        found = fcluster.get(f"/river/api/vps/{vps_id}", **as_user(token))["vps"]
        return found if found["state"] == "running" else None

    try:
        found = wait_for(up, 60, what=f"VPS {vps_id} running")
        key = tmp_path_factory.mktemp("fwdkey") / "id"
        key.write_text(created["private_key"])
        key.chmod(0o600)
        fcluster.ok(
            "POST",
            f"/river/api/vps/{vps_id}/exec",
            json={"command": ["python3", "-c", ECHO_SERVER], "detach": True},
            **as_user(token),
        )
        yield {**found, "key_file": str(key)}
    finally:
        fcluster.request("DELETE", f"/river/api/vps/{vps_id}", **as_user(token))


def cli_env(cluster: Cluster, token: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RIVER_URL", "RIVER_TOKEN")}
    env.update(RIVER_URL=cluster.url, RIVER_TOKEN=token, XDG_CONFIG_HOME=str(home))
    return env


@contextmanager
def forwarding(cluster: Cluster, token: str, home: Path, *args: str) -> Iterator[int]:
    """`river forward ARGS` running; yields the local port it says it listens on."""
    process = subprocess.Popen(
        [*RIVER, "forward", *args],
        env=cli_env(cluster, token, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    reader = threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    )
    reader.start()
    seen: list[str] = []

    def listening() -> int | None:
        while not lines.empty():
            seen.append(lines.get())
            if "forwarding 127.0.0.1:" in seen[-1]:
                return int(seen[-1].split("127.0.0.1:")[1].split()[0])
        assert process.poll() is None, f"river forward ended: {seen}"
        return None

    try:
        yield wait_for(listening, 30, what="river forward listening")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, seen


def echo_ready(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping\n")
        return sock.recv(16) == b"PING\n"


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"connection ended after {len(data)} of {count} bytes"
        data += chunk
    return bytes(data)


def recv_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_forward_carries_two_echo_connections_at_once(
    fcluster: Cluster, users: dict[str, str], vps: dict[str, Any], tmp_path: Path
) -> None:
    with forwarding(fcluster, users["ivy"], tmp_path, vps["id"], str(ECHO_PORT), "0") as port:
        wait_for(lambda: echo_ready(port), 60, what="the echo server through the forward")
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as one,
            socket.create_connection(("127.0.0.1", port), timeout=30) as two,
        ):
            one.sendall(b"first\n")
            two.sendall(b"second\n")
            assert recv_exactly(two, 7) == b"SECOND\n"
            assert recv_exactly(one, 6) == b"FIRST\n"
            # Bytes both ways in bulk, while the other connection stays open and usable.
            blob = (b"x" * 1023 + b"\n") * 1024  # 1 MiB
            sender = threading.Thread(target=one.sendall, args=(blob,))
            sender.start()
            assert recv_exactly(one, len(blob)) == blob.upper()
            sender.join(timeout=30)
            two.sendall(b"still here\n")
            assert recv_exactly(two, 11) == b"STILL HERE\n"
            # Half-close: the server answers after the client's EOF.
            one.shutdown(socket.SHUT_WR)
            assert recv_all(one) == f"total={6 + len(blob)}\n".encode()
            two.shutdown(socket.SHUT_WR)
            assert recv_all(two) == b"total=18\n"


def test_forward_carries_openssh_to_the_vps_sshd(
    fcluster: Cluster,
    users: dict[str, str],
    vps: dict[str, Any],
    docker_client: Any,
    tmp_path: Path,
) -> None:
    with forwarding(fcluster, users["ivy"], tmp_path, vps["id"], "22", "0") as port:
        command = [
            "ssh", "-p", str(port), "-i", vps["key_file"],
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "root@127.0.0.1", "hostname",
        ]  # fmt: skip
        result: list[subprocess.CompletedProcess[str]] = []

        def attempt() -> bool:  # sshd starts a moment after the container
            result[:] = [subprocess.run(command, capture_output=True, text=True, timeout=60)]
            return result[0].returncode == 0

        wait_for(attempt, 60, interval=0.5, what=f"ssh through the forward ({result})")
    container = next(
        c for c in containers_of(docker_client, NODE) if c.labels["river.task_id"] == vps["task_id"]
    )
    assert result[0].stdout.strip() == container.attrs["Config"]["Hostname"]


def websocket_status(cluster: Cluster, token: str, path: str) -> int:
    """The HTTP status the host answers a WebSocket handshake with (101: it opened)."""

    async def attempt() -> int:
        url = "ws" + cluster.url[len("http") :] + path
        request = httpclient.HTTPRequest(url, headers={"Authorization": f"token {token}"})
        try:
            conn = await websocket.websocket_connect(request)
        except httpclient.HTTPClientError as exc:
            return exc.code
        conn.close()
        return 101

    return asyncio.run(attempt())


def test_another_users_forward_and_attach_are_refused(
    fcluster: Cluster, users: dict[str, str], vps: dict[str, Any], tmp_path: Path
) -> None:
    path = f"/river/api/vps/{vps['id']}/forward/{ECHO_PORT}"
    assert websocket_status(fcluster, users["ivy"], path) == 101  # the owner's opens
    assert websocket_status(fcluster, users["jon"], path) == 404
    attach = f"/river/api/tasks/{vps['task_id']}/attach"
    assert websocket_status(fcluster, users["jon"], attach) == 404
    refused = subprocess.run(
        [*RIVER, "forward", vps["id"], str(ECHO_PORT), "0"],
        env=cli_env(fcluster, users["jon"], tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused
    assert "forwarding" not in refused.stderr and "Traceback" not in refused.stderr
    assert f"no VPS matches '{vps['id']}'" in refused.stderr or "no VPS" in refused.stderr


def test_attach_runs_hostname_in_a_container_task(
    fcluster: Cluster, users: dict[str, str], docker_client: Any, tmp_path: Path
) -> None:
    token = users["ivy"]
    task = fcluster.ok(
        "POST", "/river/api/tasks", json={"command": ["sleep", "600"]}, **as_user(token)
    )["task"]
    try:

        def running() -> bool:
            found = fcluster.get(f"/river/api/tasks/{task['id']}", **as_user(token))["task"]
            return found["state"] == "running"

        wait_for(running, 60, what=f"task {task['id']} running")
        container = next(
            c for c in containers_of(docker_client, NODE) if c.labels["river.task_id"] == task["id"]
        )
        result = subprocess.run(
            [*RIVER, "attach", task["id"][:12]],
            input="hostname\nexit\n",
            env=cli_env(fcluster, token, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result
        hostname = container.attrs["Config"]["Hostname"]
        # The TTY echoes the typed line; the answer is a line of its own.
        assert hostname in [line.strip() for line in result.stdout.splitlines()], result.stdout
        # The task keeps running after the shell ends.
        assert (
            fcluster.get(f"/river/api/tasks/{task['id']}", **as_user(token))["task"]["state"]
            == "running"
        )
    finally:
        fcluster.request("POST", f"/river/api/tasks/{task['id']}/kill", **as_user(token))
