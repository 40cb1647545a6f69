"""Ways into a VPS with a real daemon and the river-test-vps image (openssh-server and
jupyter-server, built by .ci/build-images.sh):

- the real OpenSSH client through the host's SSH proxy runs a command in the VPS, with the
  VPS's generated key; another user's name or key is refused; an API token works as the
  password (paramiko client) and `river ssh --print` gives the command that works;
- Jupyter started in the VPS by `%river vps jupyter`'s code (POST /vps/{id}/apps) is
  reached through
  /river/proxy/absolute/...: its REST API answers and a kernel WebSocket opens through the
  proxy and runs code; without River auth the proxy answers 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import paramiko
import pytest
from tornado import httpclient, websocket

from river_magics.client import Client
from river_magics.vps_apps import start_jupyter
from tests.cluster import Cluster, as_user, wait_for
from tests.docker.conftest import containers_of, vps_cluster

try:
    import docker.errors
except ImportError:  # pragma: no cover - the conftest skips the module then
    docker = None  # type: ignore[assignment]

RUN = uuid.uuid4().hex[:6]
NODE = f"vpsa-{RUN}"
API = "/river/api/vps"


@pytest.fixture(scope="module")
def acluster(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Cluster]:
    if shutil.which("ssh") is None:
        pytest.skip("no OpenSSH client (apt-get install openssh-client)")
    with vps_cluster(tmp_path_factory.mktemp("vpsa"), docker_client, NODE) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def users(acluster: Cluster) -> dict[str, str]:
    return acluster.make_users("gina", "hal", label="vps access tests")


def running_vps(cluster: Cluster, token: str, **body: Any) -> dict[str, Any]:
    response = cluster.request("POST", API, json={"cores": 1, **body}, **as_user(token))
    assert response.status_code == 201, response.text
    created = response.json()["vps"]

    def up() -> dict[str, Any] | None:
        vps = cluster.get(f"{API}/{created['id']}", **as_user(token))["vps"]
        return vps if vps["state"] == "running" else None

    vps = wait_for(up, 60, what=f"VPS {created['id']} running")
    vps["private_key"] = created.get("private_key")
    return vps


@pytest.fixture(scope="module")
def vpses(acluster: Cluster, users: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    keys = tmp_path_factory.mktemp("keys")
    gina = running_vps(acluster, users["gina"], ssh="generate", name="gina-box")
    hal = running_vps(acluster, users["hal"], ssh="generate", name="hal-box")
    for who, vps in (("gina", gina), ("hal", hal)):
        path = keys / who
        path.write_text(vps["private_key"])
        path.chmod(0o600)
        vps["key_file"] = str(path)
    return {"gina": gina, "hal": hal}


def ssh(
    vps: dict[str, Any], login: str, key_file: str, command: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(vps["ssh_proxy_port"]),
            "-i",
            key_file,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            f"{login}@127.0.0.1",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def wait_sshd(vps: dict[str, Any], login: str) -> subprocess.CompletedProcess:
    """sshd starts a moment after the container: retry until it answers (bounded)."""
    result: list[subprocess.CompletedProcess] = []

    def attempt() -> bool:
        result[:] = [ssh(vps, login, vps["key_file"], "echo ready")]
        return "ready" in result[0].stdout

    wait_for(attempt, 60, what=f"sshd of VPS {vps['id']} ({result and result[0].stderr})")
    return result[0]


def test_openssh_through_the_proxy_runs_a_command(
    vpses: dict[str, Any], docker_client: Any
) -> None:
    gina = vpses["gina"]
    wait_sshd(gina, f"gina+{gina['id']}")
    done = ssh(gina, f"gina+{gina['id']}", gina["key_file"], "hostname; echo $((6*7)) > /tmp/s")
    assert done.returncode == 0, done.stderr
    container = next(
        c
        for c in containers_of(docker_client, NODE)
        if c.labels["river.task_id"] == gina["task_id"]
    )
    assert done.stdout.split()[0] == container.attrs["Config"]["Hostname"]
    assert container.exec_run(["cat", "/tmp/s"]).output.decode().strip() == "42"
    # The exit status comes back through the proxy.
    assert ssh(gina, f"gina+{gina['id']}", gina["key_file"], "exit 7").returncode == 7


def test_other_users_names_and_keys_are_refused(vpses: dict[str, Any]) -> None:
    gina, hal = vpses["gina"], vpses["hal"]
    wait_sshd(gina, f"gina+{gina['id']}")
    refusals = [
        ("hal", f"hal+{gina['id']}", hal["key_file"]),  # hal's own key, gina's VPS
        ("hal-with-gina's-key", f"hal+{gina['id']}", gina["key_file"]),
        ("gina's key, hal's VPS", f"gina+{hal['id']}", gina["key_file"]),
        ("no VPS id", "gina", gina["key_file"]),
        ("no such VPS", "gina+12345", gina["key_file"]),
    ]
    for what, login, key in refusals:
        result = ssh(gina, login, key, "echo in")
        assert result.returncode == 255 and "in" not in result.stdout.split(), what
        assert "Permission denied" in result.stderr, (what, result.stderr)


@contextlib.contextmanager
def password_login(vps: dict[str, Any], login: str, password: str) -> Iterator[Any]:
    """A paramiko client logged in to the SSH proxy with a password (here: an API token)."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # noqa: S507 - our own proxy
    try:
        client.connect(
            "127.0.0.1",
            port=vps["ssh_proxy_port"],
            username=login,
            password=password,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        yield client
    finally:
        client.close()


def test_an_api_token_is_a_password_and_river_ssh_prints_the_command(
    acluster: Cluster, users: dict[str, str], vpses: dict[str, Any]
) -> None:
    gina = vpses["gina"]
    wait_sshd(gina, f"gina+{gina['id']}")
    with password_login(gina, f"gina+{gina['id']}", users["gina"]) as client:
        _, stdout, _ = client.exec_command("echo token-login")
        assert stdout.read().decode().strip() == "token-login"
    with (
        pytest.raises(paramiko.AuthenticationException),
        password_login(gina, f"hal+{gina['id']}", users["hal"]),
    ):
        pass
    printed = subprocess.run(
        [sys.executable, "-m", "river_runner.cli", "ssh", gina["id"], "--print"],
        env={**os.environ, "RIVER_URL": acluster.url, "RIVER_TOKEN": users["gina"]},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == f"ssh -p {gina['ssh_proxy_port']} gina+{gina['id']}@127.0.0.1"


def test_jupyter_in_the_vps_through_the_proxy(
    acluster: Cluster, users: dict[str, str], vpses: dict[str, Any]
) -> None:
    gina = vpses["gina"]
    client = Client(acluster.url, users["gina"])
    try:
        url = start_jupyter(client, gina["id"])
        ports = client.vps(gina["id"])["ports"]
    finally:
        client.close()
    assert url.startswith(f"{acluster.url}/river/proxy/absolute/{gina['id']}/8888/")
    # Recorded among the VPS's ports, for the JupyterLab launcher and panel buttons.
    assert [(p["name"], p["port"]) for p in ports] == [("jupyter", 8888)]
    assert url == f"{acluster.url}/{ports[0]['path']}"
    token = url.rpartition("token=")[2]
    base = f"{acluster.url}/river/proxy/absolute/{gina['id']}/8888"
    river = {"Authorization": f"token {users['gina']}"}
    status = httpx.get(f"{base}/api/status?token={token}", headers=river)
    assert status.status_code == 200 and "kernels" in status.json(), status.text
    # Without River auth the proxy itself refuses; hal (not the owner) gets 404.
    assert httpx.get(f"{base}/api/status?token={token}").status_code == 403
    hal = {"Authorization": f"token {users['hal']}"}
    assert httpx.get(f"{base}/api/status?token={token}", headers=hal).status_code == 404

    started = httpx.post(f"{base}/api/kernels?token={token}", headers=river, json={}, timeout=60)
    assert started.status_code == 201, started.text
    kernel_id = started.json()["id"]
    ws_url = "ws" + base[len("http") :] + f"/api/kernels/{kernel_id}/channels?token={token}"
    assert asyncio.run(_run_code(ws_url, river, "print(6 * 7)")) == "42\n"
    with pytest.raises(httpclient.HTTPClientError) as refused:
        asyncio.run(_run_code(ws_url, {}, "1"))
    assert refused.value.code == 403


async def _run_code(url: str, headers: dict[str, str], code: str) -> str:
    """Execute `code` on a kernel over its channels WebSocket; its stdout."""
    conn = await websocket.websocket_connect(httpclient.HTTPRequest(url, headers=headers))
    try:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
        }
        request = {
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": {"code": code, "silent": False},
            "channel": "shell",
            "buffers": [],
        }
        await conn.write_message(json.dumps(request))
        out = ""
        while True:
            raw = await asyncio.wait_for(conn.read_message(), 60)
            assert raw is not None, "the kernel channel closed"
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream":
                out += message["content"]["text"]
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return out
    finally:
        conn.close()


def test_app_requests_get_clear_errors(
    acluster: Cluster, users: dict[str, str], vpses: dict[str, Any]
) -> None:
    path = f"{API}/{vpses['gina']['id']}/apps"
    gina = as_user(users["gina"])
    missing = acluster.request("POST", path, json={"app": "tensorboard", "logdir": "/r"}, **gina)
    assert missing.status_code == 409
    assert "pip install tensorboard" in missing.json()["message"]
    for body, fix in (
        ({"app": "vnc"}, "app must be one of jupyter, tensorboard"),
        ({"app": "tensorboard"}, "needs 'logdir'"),
        ({"app": "jupyter", "port": 70000}, "port must be a number 1-65535"),
    ):
        answer = acluster.request("POST", path, json=body, **gina)
        assert answer.status_code == 400 and fix in answer.json()["message"], answer.text


def test_dashboard_vps_card_gives_the_ssh_command_and_starts_jupyter(
    acluster: Cluster, users: dict[str, str], vpses: dict[str, Any]
) -> None:
    from river_widgets import Dashboard

    hal = vpses["hal"]
    client = Client(acluster.url, users["hal"])
    dashboard = Dashboard(client, start=False)
    try:
        dashboard.refresh()
        (shown,) = dashboard.get_state()["vps"]  # hal's only, not gina's
        assert shown["id"] == hal["id"] and shown["state"] == "running"
        assert not shown["ssh_disabled"]
        # Running: a terminal link (JupyterLab opens it, see the browser test), no apps yet.
        terminal = f"{acluster.url}/lab?river-terminal={hal['id']}"
        assert shown["links"] == f'<a href="{terminal}" target="_blank">terminal</a>'
        card = dashboard._vps_cards[hal["id"]]
        card.ssh.click()
        assert card.note.value == (
            f"<code>ssh -p {hal['ssh_proxy_port']} hal+{hal['id']}@127.0.0.1</code>"
        )
        card.start_jupyter()  # what the button runs on its thread
        assert "Jupyter is up" in card.note.value
        links = dashboard.get_state()["vps"][0]["links"]
        assert f"/river/proxy/absolute/{hal['id']}/8888/?token=" in links
        (url,) = [
            part.split('"')[0].replace("&amp;", "&")
            for part in links.split('href="')[1:]
            if "/river/proxy/" in part
        ]
        page = httpx.get(
            url.replace("/?token=", "/api/status?token="), headers=as_user(users["hal"])["headers"]
        )
        assert page.status_code == 200
    finally:
        dashboard.close()
        client.close()
