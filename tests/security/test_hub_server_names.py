"""Name tricks on River's JupyterHub-servers listener (river_server/hub_servers.py).

The listener forwards `/user/<name>/...` to <name>'s Hub server VPS with no login of its
own (the server checks the Hub's), so the name in the path is the only thing that picks a
server: a trick that made it pick *another* user's server would hand that server requests
(and the browser's Hub cookies and token) meant for someone else. Here alice and bob each
run a Hub server VPS (a real docker runner, the river-test-vps image) that answers every
request with its owner's name, and raw request lines (sent unnormalised, as a hostile
client would) must reach only the named user's own server, or get a 4xx (503 where the
named user has no server running), never bob's server, a 500 or a traceback.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.cluster import Cluster, as_user, free_port, wait_for

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover
    docker = None  # type: ignore[assignment]

IMAGE = "river-test-vps"
NODE = f"hubnames-{uuid.uuid4().hex[:6]}"
PORT = 8888
# Answers every request with "<owner> <path>": which server a request reached.
ECHO = f"""
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = (sys.argv[1] + " " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_DELETE = answer
http.server.ThreadingHTTPServer(("0.0.0.0", {PORT}), Echo).serve_forever()
"""


def _problem() -> str | None:
    if docker is None:
        return "the docker SDK is not installed"
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - any reason not to run is a skip reason
        return f"no Docker daemon or no {IMAGE} image ({exc}); run .ci/build-images.sh"
    return None


PROBLEM = _problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A host with the servers listener, one docker runner, and alice's and bob's Hub
    server VPSes answering; carol has none."""
    cluster = Cluster(Path(tmp_path_factory.mktemp("hubnames")), heartbeat_interval=1.0)
    servers_port = free_port()
    cluster.extra_host_args = [f"--RiverHost.hub_servers_port={servers_port}"]
    try:
        cluster.start_host()
        cluster.start_runner(NODE, "--backend", "docker", "--default-image", IMAGE, "--cpus", "0-1")
        tokens = cluster.make_users("alice", "bob", "carol", label="hub server names")
        tasks = {name: _echo_server(cluster, tokens[name], name) for name in ("alice", "bob")}
        site = {"port": servers_port, "tasks": tasks}
        for name in tasks:
            wait_for(
                lambda n=name: _get(site, f"/user/{n}/up")[1].startswith(f"{n} "),
                60,
                what=f"{name}'s echo server through the listener",
            )
        yield site
    finally:
        cluster.close()
        client = docker.from_env()
        for container in client.containers.list(
            all=True, filters={"label": f"river.runner={NODE}"}, ignore_removed=True
        ):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True, v=True)


def _echo_server(cluster: Cluster, token: str, name: str) -> str:
    """A running VPS of NAME declaring the Hub server port, the echo server in it."""
    body = {"cores": 1, "memory": "256M", "hub_port": PORT, "name": f"hub-{name}"}
    created = cluster.ok("POST", "/river/api/vps", json=body, **as_user(token))["vps"]
    path = f"/river/api/vps/{created['id']}"
    wait_for(
        lambda: cluster.get(path, **as_user(token))["vps"]["state"] == "running",
        90,
        what=f"{name}'s VPS running",
    )
    command = {"command": ["python3", "-c", ECHO, name], "detach": True}
    cluster.ok("POST", f"{path}/exec", json=command, **as_user(token))
    return str(cluster.get(path, **as_user(token))["vps"]["task_id"])


def _get(site: dict[str, Any], raw_path: str, method: str = "GET") -> tuple[int, str]:
    """The status and body for a request line sent exactly as given (no normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", site["port"], timeout=30)
    try:
        connection.putrequest(method, raw_path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _tricks(bob_task: str) -> list[str]:
    escape = f"api/tasks/{bob_task}/forward/{PORT}/user/bob/x"
    return [
        "/user/alice%2F..%2Fbob/x",
        "/user/alice%2f..%2fbob/x",
        "/user/alice/../bob/x",
        "/user/alice/%2e%2e/bob/x",
        "/user/alice/..%2Fbob/x",
        f"/user/alice/../../../../{escape}",
        f"/user/alice/..%2F..%2F..%2F..%2F{escape.replace('/', '%2F')}",
        "/user/alice%252F..%252Fbob/x",
        "/user/ALICE/x",
        "/user/Alice/x",
        "/user/alic%65/x",
        "/user/alic%2565/x",
        "/user/%D0%B0lice/x",  # Cyrillic а
        "/user/alice./x",
        "/user/alice../x",
        "/user/./bob/x",
        "/user/../user/bob/x",
        "//user/alice/x",
        "/user//alice/x",
        "/user//bob/x",
        "/user/alice//x",
        "/user/carol/x",
        "/user/nobody-at-all/x",
        "/user/" + "a" * 5000 + "/x",
        "/user/alice" + "x" * 300 + "/x",
        "/user/alice%00/x",
        "/user/%00alice/x",
        "/user/alice%00bob/x",
        "/user/alice/%00",
        "/user/alice%20/x",
        "/user/alice%2Fx",
        "/user/alice%3F/x",
        "/user/alice%23/x",
        "/user/alice?/../bob/x",
    ]


def _named(raw: str) -> str | None:
    """The user a request line names: its /user/<segment>/, percent-decoded once (as the
    Hub's proxy encodes a name once)."""
    match = re.match(r"/user/([^/?#]+)", raw)
    return unquote(match.group(1)) if match else None


def test_name_tricks_reach_only_the_named_users_server(site: dict[str, Any]) -> None:
    assert _get(site, "/user/alice/x") == (200, "alice /user/alice/x")  # not vacuous
    assert _get(site, "/user/bob/x") == (200, "bob /user/bob/x")
    wrong = []
    for raw in _tricks(site["tasks"]["bob"]):
        for method in ("GET", "POST"):
            status, body = _get(site, raw, method)
            reached = body.split(" ", 1)[0] if status == 200 else None
            if status >= 500 and status != 503 or "Traceback" in body or reached == "bob":
                wrong.append(f"{method} {raw[:80]}: {status} {body[:200]}")
            elif reached not in (None, "alice") or (reached and _named(raw) != "alice"):
                wrong.append(f"{method} {raw[:80]}: reached {reached!r}, named {_named(raw)!r}")
            elif status >= 400:
                # Refusals say what is wrong, in the listener's JSON (never a River page).
                assert json.loads(body)["message"], (raw, body)
    assert not wrong, "\n".join(wrong)


def test_a_named_user_without_a_server_gets_a_plain_503(site: dict[str, Any]) -> None:
    status, body = _get(site, "/user/carol/api/status")
    assert status == 503 and "no JupyterHub server of carol" in json.loads(body)["message"]
