"""River's API inside a user's own Jupyter server (issue #18; river_magics/lab_bridge.py).

A plain `jupyter server` started as the Hub starts a single-user server: River's host
extension off, RIVER_URL/RIVER_TOKEN of alice in its environment, its own token auth. The
lab panel's calls to that server's `/river/api/...` must reach River as alice, stream the
event stream, keep River's errors, and be refused by the server itself without its login.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, GaveUp, _stop, free_port, running_cluster, wait_for

SERVER_TOKEN = "alice-jupyter-server-token"


class UserServer:
    """A user's single-user Jupyter server with the lab bridge, as a subprocess."""

    def __init__(self, root: Path, river_url: str, river_token: str) -> None:
        self.port = free_port()
        self.log = root / "user-server.log"
        command = [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.allow_root={os.geteuid() == 0}",
            f"--IdentityProvider.token={SERVER_TOKEN}",
            "--ServerApp.jpserver_extensions=river_server=False",
            "--ServerApp.jpserver_extensions=jupyter_server_proxy=False",
            "--ServerApp.jpserver_extensions=river_magics.lab_bridge=True",
            f"--ServerApp.root_dir={root}",
        ]
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(root / "user-config"),
            "JUPYTER_RUNTIME_DIR": str(root / "user-runtime"),
            "RIVER_URL": river_url,
            "RIVER_TOKEN": river_token,
        }
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        wait_for(self._up, 60, what=f"user server (see {self.log})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise GaveUp(f"user server exited; see {self.log}")
        return httpx.get(f"{self.url}/api/status", headers=self.auth, timeout=2).is_success

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {SERVER_TOKEN}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def close(self) -> None:
        _stop(self.process)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, UserServer, str]]:
    root = tmp_path_factory.mktemp("lab-bridge")
    with running_cluster(root, ("n1", "--cpus", "0")) as cluster:
        alice = cluster.make_users("alice")["alice"]
        server = UserServer(root, cluster.url, alice)
        try:
            yield cluster, server, alice
        finally:
            server.close()


def test_me_is_the_servers_user(site: tuple[Cluster, UserServer, str]) -> None:
    _, server, _ = site
    response = server.request("GET", "/river/api/me")
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert (user["name"], user["role"]) == ("alice", "user")


def test_submit_runs_as_alice_and_the_list_is_hers(site: tuple[Cluster, UserServer, str]) -> None:
    cluster, server, _ = site
    admins = cluster.submit(command=["true"])
    response = server.request("POST", "/river/api/tasks", json={"command": ["true"]})
    assert response.status_code == 201, response.text
    task = response.json()["task"]
    assert task["owner"] == "alice"
    assert cluster.wait_task(task["id"], "completed")["owner"] == "alice"

    listed = server.request("GET", "/river/api/tasks")
    assert listed.status_code == 200, listed.text
    ids = {t["id"] for t in listed.json()["tasks"]}
    assert task["id"] in ids and admins["id"] not in ids
    assert {t["owner"] for t in listed.json()["tasks"]} == {"alice"}
    # ?all=1 through the bridge is still alice's view, never the admin's.
    everyone = server.request("GET", "/river/api/tasks", params={"all": "1"})
    assert everyone.status_code == 200, everyone.text
    for other in everyone.json()["tasks"]:
        assert other["owner"] == "alice" or "spec" not in other


def test_the_event_stream_arrives_unbuffered(site: tuple[Cluster, UserServer, str]) -> None:
    """As the panel's EventSource opens it: Jupyter's token as a query parameter (which must
    not reach River), the stream left open; events must come before it ends."""
    _, server, _ = site
    response = server.request(
        "POST", "/river/api/tasks", json={"command": ["echo", "through-the-bridge"]}
    )
    assert response.status_code == 201, response.text
    task_id = response.json()["task"]["id"]
    url = f"{server.url}/river/api/events"
    params = {"task": task_id, "token": SERVER_TOKEN}
    seen: list[tuple[str, dict]] = []
    deadline = time.monotonic() + 30
    timeout = httpx.Timeout(10.0, read=30.0)
    with httpx.stream("GET", url, params=params, timeout=timeout) as stream:
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            assert time.monotonic() < deadline, f"no log line in 30 s; saw {seen}"
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                seen.append((kind, json.loads(line[len("data: ") :])))
                logged = any(k == "log" and "through-the-bridge" in d["text"] for k, d in seen)
                told = any(k == "task" and d["task"]["id"] == task_id for k, d in seen)
                if logged and told:
                    break
    assert seen[0][0] == "hello"


def test_without_the_servers_login_nothing_reaches_river(
    site: tuple[Cluster, UserServer, str],
) -> None:
    cluster, server, alice = site
    as_alice = {"Authorization": f"token {alice}"}
    before = len(cluster.get("/river/api/tasks", headers=as_alice)["tasks"])
    response = httpx.post(f"{server.url}/river/api/tasks", json={"command": ["true"]}, timeout=30)
    assert response.status_code in (302, 403), response.text
    # River's own token is not the server's login either.
    response = httpx.get(f"{server.url}/river/api/me", headers=as_alice, timeout=30)
    assert response.status_code in (302, 403), response.text
    assert "alice" not in response.text
    after = len(cluster.get("/river/api/tasks", headers=as_alice)["tasks"])
    assert after == before


def test_rivers_errors_pass_through(site: tuple[Cluster, UserServer, str]) -> None:
    cluster, server, alice = site
    bad = {"command": ["true"], "memory": "lots"}
    direct = httpx.post(
        f"{cluster.url}/river/api/tasks",
        json=bad,
        headers={"Authorization": f"token {alice}"},
        timeout=30,
    )
    assert 400 <= direct.status_code < 500
    bridged = server.request("POST", "/river/api/tasks", json=bad)
    assert bridged.status_code == direct.status_code
    assert bridged.json()["message"] == direct.json()["message"]
    missing = server.request("GET", "/river/api/tasks/123456789")
    assert missing.status_code == 404
    assert missing.json()["message"]


def test_a_body_over_the_bound_is_refused_here(site: tuple[Cluster, UserServer, str]) -> None:
    _, server, _ = site
    from river_magics.lab_bridge import MAX_BODY

    response = server.request(
        "POST",
        "/river/api/tasks",
        content=b"x" * (MAX_BODY + 1),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "send less" in response.json()["message"]


def test_the_bridge_stands_down_on_rivers_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wheel enables the bridge in every Jupyter server (jupyter_server_config.d); on
    River's own host it must leave River's routes alone, even with RIVER_URL set."""
    monkeypatch.setenv("RIVER_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("RIVER_TOKEN", "not-a-river-token")
    cluster = Cluster(
        tmp_path, extra_host_args=["--ServerApp.jpserver_extensions=river_magics.lab_bridge=True"]
    )
    try:
        cluster.start_host()
        assert cluster.get("/river/api/me")["user"]["name"] == "admin"
    finally:
        cluster.close()
