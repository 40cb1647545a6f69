"""Bounds on everything a user can grow, tried as a hostile plain user would (issue #13).

One real host (small bounds set through its RiverHost traits) and a process runner; every
refusal must be a 4xx whose message names the bound, and the host must keep serving
another user right after.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, as_user, wait_for

API = "/river/api"
MIB = 1024 * 1024
LOG_MAX = 300_000
BLOB_MAX = 24 * MIB
BLOB_USER_MAX = 36 * MIB
TASKS_MAX = 4
STREAMS_MAX = 3


@pytest.fixture(scope="module")
def lcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("limits")
    # What an older host left: a world-readable data directory and log file.
    (root / "host" / "logs").mkdir(parents=True)
    os.chmod(root / "host", 0o755)
    old_log = root / "host" / "logs" / "1.jsonl"
    old_log.write_text("")
    os.chmod(old_log, 0o644)
    cluster = Cluster(
        root,
        extra_host_args=[
            f"--RiverHost.log_max_bytes={LOG_MAX}",
            f"--RiverHost.blob_max_bytes={BLOB_MAX}",
            f"--RiverHost.blob_user_max_bytes={BLOB_USER_MAX}",
            f"--RiverHost.max_tasks_per_user={TASKS_MAX}",
            f"--RiverHost.max_event_streams_per_user={STREAMS_MAX}",
        ],
    )
    cluster.start_host()
    try:
        cluster.start_runner("lim", "--cpus", "0-1")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def users(lcluster: Cluster) -> dict[str, str]:
    return lcluster.make_users("mallory", "alice", label="limits tests")


def submit(cluster: Cluster, token: str, **body: Any) -> httpx.Response:
    return cluster.request("POST", f"{API}/tasks", json=body, **as_user(token))


def others_still_served(cluster: Cluster, token: str) -> None:
    """Another user's ordinary request succeeds right after the refusal."""
    response = cluster.request("GET", f"{API}/tasks", **as_user(token))
    assert response.status_code == 200, response.text


def kill_all(cluster: Cluster, token: str) -> None:
    for task in cluster.get(f"{API}/tasks", **as_user(token))["tasks"]:
        if task["state"] in ("queued", "pending_approval", "assigning", "running", "paused"):
            cluster.request("POST", f"{API}/tasks/{task['id']}/kill", **as_user(token))


def raw_request(cluster: Cluster, head: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send only a request head (no body) and read the answer: a host that waited for the
    declared body would never answer, and this times out."""
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        header, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(header.split()[1]), body


def message(response: httpx.Response) -> str:
    return str(response.json().get("message", ""))


# ---- 1. resource requests --------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("cores", 0, "cores must be a whole number from 1 to"),
        ("cores", -3, "cores must be a whole number from 1 to"),
        ("cores", 1.5, "cores must be a whole number from 1 to"),
        ("cores", "lots", "cores must be a whole number from 1 to"),
        ("cores", 10**30, "cores must be a whole number from 1 to"),
        ("memory", -1, "memory must not be negative"),
        ("memory", "9" * 400 + "G", "memory must be a size like"),
        ("memory", 2**62, "memory must be at most"),
        ("gpus", -1, "gpus must be a whole number from 0 to"),
        ("gpus", 10**9, "gpus must be a whole number from 0 to"),
    ],
)
def test_bad_resource_requests_are_refused(
    lcluster: Cluster, users: dict[str, str], field: str, value: Any, needle: str
) -> None:
    before = len(lcluster.get(f"{API}/tasks", **as_user(users["mallory"]))["tasks"])
    response = submit(lcluster, users["mallory"], command=["true"], **{field: value})
    assert response.status_code == 400, response.text
    assert needle in message(response)
    assert len(lcluster.get(f"{API}/tasks", **as_user(users["mallory"]))["tasks"]) == before
    others_still_served(lcluster, users["alice"])


def test_zero_cores_stays_an_operator_power(lcluster: Cluster) -> None:
    task = lcluster.submit(command=["true"], cores=0)  # the admin (server token)
    lcluster.wait_task(task["id"], "completed")


# ---- 2. request bodies -----------------------------------------------------------------
def test_anonymous_64_mib_body_is_refused_before_it_is_read(
    lcluster: Cluster, users: dict[str, str]
) -> None:
    head = (
        f"POST {API}/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {64 * MIB}\r\n\r\n"
    )
    status, _ = raw_request(lcluster, head)
    assert status in (400, 413)
    others_still_served(lcluster, users["alice"])


def test_a_user_cannot_send_a_body_past_the_bound_either(
    lcluster: Cluster, users: dict[str, str]
) -> None:
    head = (
        f"POST {API}/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: token {users['mallory']}\r\nContent-Length: {100 * 1000 * 1000}\r\n\r\n"
    )
    status, _ = raw_request(lcluster, head)
    assert status in (400, 413)
    others_still_served(lcluster, users["alice"])


# ---- 3. task programs ------------------------------------------------------------------
def test_a_huge_script_is_refused_with_what_to_do(lcluster: Cluster, users: dict[str, str]) -> None:
    script = "x = 1\n" * (2 * MIB // 6)
    response = submit(lcluster, users["mallory"], script=script)
    assert response.status_code == 413, response.text
    text = message(response)
    assert "task_spec_max_bytes" in text and "--push" in text
    big_env = submit(lcluster, users["mallory"], command=["true"], env={"A": "v" * (2 * MIB)})
    assert big_env.status_code == 413
    others_still_served(lcluster, users["alice"])


# ---- 4. task logs ----------------------------------------------------------------------
def test_a_flood_of_output_is_truncated_with_one_note(
    lcluster: Cluster, users: dict[str, str]
) -> None:
    script = "import sys\nfor i in range(20000):\n    print('y' * 100, i)\nprint('the end')\n"
    task = submit(lcluster, users["mallory"], script=script)
    assert task.status_code == 201, task.text
    task_id = task.json()["task"]["id"]
    done = lcluster.wait_task(task_id, "completed", timeout=60)
    assert done["exit_code"] == 0

    def all_lines() -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        while True:
            got = lcluster.get(
                f"{API}/tasks/{task_id}/logs?since={lines[-1]['seq'] if lines else 0}",
                **as_user(users["mallory"]),
            )["lines"]
            if not got:
                return lines
            lines += got

    lines = all_lines()
    notes = [line for line in lines if line["text"].startswith("[river] log truncated at ")]
    assert len(notes) == 1 and notes[0] is lines[-1], lines[-3:]
    assert "log_max_bytes" in notes[0]["text"]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert "the end" not in {line["text"] for line in lines}
    stored = lcluster.root / "host" / "logs" / f"{task_id}.jsonl"
    assert stored.stat().st_size <= LOG_MAX
    others_still_served(lcluster, users["alice"])


# ---- 5. blobs, queue, event streams ----------------------------------------------------
def _finished_task(cluster: Cluster, token: str) -> str:
    response = submit(cluster, token, command=["true"])
    assert response.status_code == 201, response.text
    task_id = response.json()["task"]["id"]
    cluster.wait_task(task_id, "completed")
    return task_id


def test_blob_uploads_authenticate_before_the_body_and_are_bounded_per_user(
    lcluster: Cluster, users: dict[str, str]
) -> None:
    first = _finished_task(lcluster, users["mallory"])
    second = _finished_task(lcluster, users["mallory"])
    path = f"{API}/tasks/{first}/blobs/data"
    # Anonymous: refused from the head alone (the body is never read).
    status, body = raw_request(
        lcluster, f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {20 * MIB}\r\n\r\n"
    )
    assert status == 403
    # Past the per-blob bound: 413 saying the bound, again before the body.
    status, body = raw_request(
        lcluster,
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {users['mallory']}\r\n"
        f"Content-Length: {BLOB_MAX + 1}\r\n\r\n",
    )
    assert status == 413 and b"blob_max_bytes" in body
    # An upload larger than the server-wide body bound (16 MiB) but within blob_max_bytes
    # is taken: only this route raises the bound, after authenticating.
    payload = os.urandom(20 * MIB)
    put = lcluster.request("PUT", path, content=payload, **as_user(users["mallory"]))
    assert put.status_code == 201, put.text
    # A second one would take the user's blobs past blob_user_max_bytes.
    again = lcluster.request(
        "PUT", f"{API}/tasks/{second}/blobs/data", content=payload, **as_user(users["mallory"])
    )
    assert again.status_code == 413
    assert "blob_user_max_bytes" in message(again)
    got = lcluster.request("GET", path, **as_user(users["mallory"]))
    assert got.status_code == 200 and got.content == payload
    blob_file = lcluster.root / "host" / "blobs" / first / "data"
    assert stat.S_IMODE(blob_file.stat().st_mode) == 0o600
    alice_task = _finished_task(lcluster, users["alice"])
    small = lcluster.request(
        "PUT", f"{API}/tasks/{alice_task}/blobs/note", content=b"hi", **as_user(users["alice"])
    )
    assert small.status_code == 201, small.text


def test_unfinished_tasks_per_user_are_bounded(lcluster: Cluster, users: dict[str, str]) -> None:
    mallory = users["mallory"]
    try:
        for _ in range(TASKS_MAX):  # 2 cores each on a 2-core node: one runs, the rest wait
            response = submit(lcluster, mallory, command=["sleep", "60"], cores=2)
            assert response.status_code == 201, response.text
        refused = submit(lcluster, mallory, command=["sleep", "60"], cores=2)
        assert refused.status_code == 429, refused.text
        text = message(refused)
        assert f"already has {TASKS_MAX} unfinished tasks" in text
        assert "max_tasks_per_user" in text
        alice = submit(lcluster, users["alice"], command=["true"])
        assert alice.status_code == 201, alice.text
    finally:
        kill_all(lcluster, mallory)
    wait_for(
        lambda: submit(lcluster, mallory, command=["true"]).status_code == 201,
        30,
        what="a new task accepted once the old ones ended",
    )


def test_event_streams_per_user_are_bounded(lcluster: Cluster, users: dict[str, str]) -> None:
    url = f"{lcluster.url}{API}/events"
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(timeout=10)) for _ in range(STREAMS_MAX + 1)]
        streams = []
        for client in clients[:STREAMS_MAX]:
            response = stack.enter_context(
                client.stream("GET", url, headers={"Authorization": f"token {users['mallory']}"})
            )
            assert response.status_code == 200
            lines = response.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines) == "event: hello"  # the stream is being served
            streams.append((response, lines))
        extra = clients[STREAMS_MAX].get(
            url, headers={"Authorization": f"token {users['mallory']}"}
        )
        assert extra.status_code == 429
        assert "max_event_streams_per_user" in extra.json()["message"]
        with (
            httpx.Client(timeout=10) as alice_client,
            alice_client.stream(
                "GET", url, headers={"Authorization": f"token {users['alice']}"}
            ) as alice,
        ):
            assert alice.status_code == 200
        streams[0][0].close()

        def reopened() -> bool:
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    "GET", url, headers={"Authorization": f"token {users['mallory']}"}
                ) as response,
            ):
                return response.status_code == 200

        wait_for(reopened, 20, interval=0.2, what="a slot freed by a closed stream")


# ---- 6. the data directory -------------------------------------------------------------
def test_the_data_directory_is_private(lcluster: Cluster, users: dict[str, str]) -> None:
    response = submit(lcluster, users["alice"], command=["echo", "private"])
    assert response.status_code == 201, response.text
    task_id = response.json()["task"]["id"]
    lcluster.wait_task(task_id, "completed")
    host = lcluster.root / "host"
    assert stat.S_IMODE(host.stat().st_mode) == 0o700
    for path in (
        host / "river.db",
        host / "logs" / f"{task_id}.jsonl",
        host / "logs" / "1.jsonl",  # left 0644 by an older host: tightened on start
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (host / "logs", host / "blobs"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
