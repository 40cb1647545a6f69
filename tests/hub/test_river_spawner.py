"""RiverSpawner (issue #18): each Hub user's server is a River VPS of that user, reached by
the Hub's proxy through River, stopped with a snapshot that brings the home back. A real
JupyterHub + configurable-http-proxy, a real River host and docker runner, the real
river-test-vps image (with jupyterhub-singleuser)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from river_server.hub_spawner import SERVER_LOG
from tests.cluster import Cluster, free_port, wait_for
from tests.hub.hubfixture import Hub, hub_problem
from tests.hub.kernelws import HubKernel, client_bundle

try:
    import docker
    import docker.errors
except ImportError:  # pragma: no cover
    docker = None  # type: ignore[assignment]

IMAGE = "river-test-vps"
NODE = "hubnode"


def _problem() -> str | None:
    problem = hub_problem()
    if problem or docker is None:
        return problem or "the docker SDK is not installed"
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - any reason not to run is a skip reason
        return f"no Docker daemon or no {IMAGE} image ({exc}); run .ci/build-images.sh"
    if not _has_singleuser(client):
        return f"{IMAGE} has no jupyterhub-singleuser; rebuild it with .ci/build-images.sh"
    return None


def _has_singleuser(client: Any) -> bool:
    try:
        output = client.containers.run(
            IMAGE, ["/bin/sh", "-c", "command -v jupyterhub-singleuser"], remove=True
        )
    except docker.errors.ContainerError:
        return False
    return b"jupyterhub-singleuser" in output


PROBLEM = _problem()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Cluster]]:
    with river_site(tmp_path_factory.mktemp("spawner")) as both:
        yield both


@contextlib.contextmanager
def river_site(root: Path, more_config: str = "") -> Iterator[tuple[Hub, Cluster]]:
    """A Hub with RiverSpawner, River and one docker runner; everything removed after."""
    (root / "river").mkdir()
    # Also on the docker bridge: RIVER_URL in the servers' containers is the gateway.
    river = Cluster(root / "river", heartbeat_interval=1.0, heartbeat_misses=10, ip="0.0.0.0")
    servers_port = free_port()
    servers_url = f"http://127.0.0.1:{servers_port}"
    hub = Hub(root / "hub", river_url=river.url)
    hub.extra_config = f"""
from river_server.hub_spawner import RiverSpawner
c.JupyterHub.spawner_class = RiverSpawner
c.RiverSpawner.river_url = {river.url!r}
c.RiverSpawner.servers_url = {servers_url!r}
c.RiverSpawner.image = {IMAGE!r}
c.RiverSpawner.default_memory = "1G"
# The fixture's c.Spawner.cmd/args (a server on this machine) would apply to RiverSpawner
# too: the server's command is the image's.
c.RiverSpawner.cmd = ["jupyterhub-singleuser", "--allow-root"]
c.RiverSpawner.args = []
c.Spawner.start_timeout = 240
# The server in its container reaches the Hub's API on the docker bridge's gateway (this
# machine), not on the Hub's loopback.
c.JupyterHub.hub_bind_url = "http://0.0.0.0:{hub.api_port}"
c.JupyterHub.hub_connect_url = "http://{{gateway}}:{hub.api_port}"
c.Spawner.http_timeout = 120
# A `%river` cell in a server reaches River where the container can: the gateway again.
c.RiverSpawner.river_url_in_server = "http://{{gateway}}:{river.port}"
"""
    hub.extra_config += more_config
    river.extra_host_args = [
        f"--RiverHost.hub_api_url={hub.api_url}",
        f"--RiverHost.hub_public_url={hub.url}",
        "--RiverHost.hub_cache_seconds=2",
        f"--RiverHost.hub_servers_port={servers_port}",
    ]
    client = docker.from_env()
    gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    hub.extra_config = hub.extra_config.replace("{gateway}", gateway)
    try:
        hub.start()
        os.environ["JUPYTERHUB_API_TOKEN"] = hub.river_token
        try:
            river.start_host()
        finally:
            os.environ.pop("JUPYTERHUB_API_TOKEN", None)
        river.start_runner(NODE, "--backend", "docker", "--default-image", IMAGE, "--cpus", "0-1")
        hub.add_users("alice", "bob")
        yield hub, river
    finally:
        for name in ("alice", "bob"):
            with contextlib.suppress(Exception):
                hub.api("DELETE", f"/users/{name}/server")
            with contextlib.suppress(Exception):  # every VPS the spawner made, even on failure
                token = hub.token_of(name)
                for vps in river_get(river, token, "/vps").json()["vps"]:
                    _made_vps.add(f"river-vps/{vps['id']}")
        hub.close()
        river.close()
        for container in client.containers.list(
            all=True, filters={"label": f"river.runner={NODE}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        # Snapshots are "river-vps/<id>:<n>" (a name filter of "river-vps" matches none).
        for image in client.images.list(filters={"label": f"river.runner={NODE}"}):
            for tag in image.tags:
                if tag.split(":")[0] in _made_vps:
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag, force=True)


_made_vps: set[str] = set()


def servers_url(river: Cluster) -> str:
    """River's JupyterHub-servers listener (c.RiverHost.hub_servers_port)."""
    flag = next(a for a in river.extra_host_args if a.startswith("--RiverHost.hub_servers_port="))
    return f"http://127.0.0.1:{flag.split('=', 1)[1]}"


def server_output(river: Cluster, token: str, vps_id: str) -> str:
    """The single-user server's own output in its VPS (for failure messages)."""
    answer = httpx.post(
        f"{river.url}/river/api/vps/{vps_id}/exec", headers={"Authorization": f"token {token}"},
        json={"command": ["tail", "-c", "4000", SERVER_LOG]}, timeout=30,
    )  # fmt: skip
    return answer.text


def river_get(river: Cluster, token: str, path: str) -> httpx.Response:
    return httpx.get(
        f"{river.url}/river/api{path}", headers={"Authorization": f"token {token}"}, timeout=30
    )


def spawn(hub: Hub, name: str, **options: Any) -> None:
    response = hub.api("POST", f"/users/{name}/server", json=options)
    assert response.status_code in (201, 202), response.text
    wait_for(lambda: server_of(hub, name).get("ready"), 240, what=f"{name}'s server ready")


def server_of(hub: Hub, name: str) -> dict[str, Any]:
    return hub.ok("GET", f"/users/{name}")["servers"].get("", {})


def stop(hub: Hub, name: str) -> None:
    response = hub.api("DELETE", f"/users/{name}/server")
    assert response.status_code in (202, 204), response.text
    wait_for(lambda: not server_of(hub, name), 120, what=f"{name}'s server stopped")


def through_hub(hub: Hub, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{hub.url}{path}", headers={"Authorization": f"token {token}"},
        timeout=60, follow_redirects=False, **kwargs,
    )  # fmt: skip


def test_a_spawned_server_is_the_users_vps_kept_across_stop_and_start(
    site: tuple[Hub, Cluster],
) -> None:
    hub, river = site
    alice, bob = hub.token_of("alice"), hub.token_of("bob")

    spawn(hub, "alice", cores=1, memory="1G")
    vpses = river_get(river, alice, "/vps").json()["vps"]
    assert [v["owner"] for v in vpses] == ["alice"], vpses
    vps = vpses[0]
    _made_vps.add(f"river-vps/{vps['id']}")
    assert vps["state"] == "running" and vps["name"] == "jupyterhub-alice"
    assert vps["cpus"] and vps["request"]["cores"] == 1
    # Bob cannot see alice's server VPS at River.
    assert river_get(river, bob, f"/vps/{vps['id']}").status_code == 404
    assert river_get(river, bob, "/vps").json()["vps"] == []

    # The Hub's proxy reaches the server (through River); the server checks the Hub's token.
    status = through_hub(hub, "GET", "/user/alice/api/status", alice)
    assert status.status_code == 200, (status.text, server_output(river, alice, vps["id"]))
    refused = through_hub(hub, "GET", "/user/alice/api/status", bob)
    assert refused.status_code == 403, refused.text
    # River's own origin has no /user/ route: a user's server never runs JavaScript there.
    for token in (alice, bob):
        on_river = httpx.get(
            f"{river.url}/user/alice/api/status", headers={"Authorization": f"token {token}"},
            timeout=30,
        )  # fmt: skip
        assert on_river.status_code == 404, on_river.text
    # The servers listener serves only /user/<name>/ forwards: no River route, no cookie...
    servers = servers_url(river)
    for path in ("/river/api/me", "/lab", "/login", "/river/proxy/absolute/1/8888/", "/"):
        other = httpx.get(
            f"{servers}{path}", headers={"Authorization": f"token {alice}"}, timeout=30
        )
        assert other.status_code == 404, (path, other.text)
        assert "set-cookie" not in other.headers, (path, other.headers)
    # ... and the server itself still checks the Hub's login there.
    direct = httpx.get(f"{servers}/user/alice/api/status", timeout=30)
    assert direct.status_code == 403, direct.text

    # A file in the home, then stop (snapshot) and start again: the file is back.
    put = through_hub(hub, "PUT", "/user/alice/api/contents/keep.txt", alice, json={
        "type": "file", "format": "text", "content": "kept across restarts",
    })  # fmt: skip
    assert put.status_code in (200, 201), put.text
    stop(hub, "alice")
    stopped = river_get(river, alice, f"/vps/{vps['id']}").json()["vps"]
    assert stopped["state"] == "stopped" and stopped["snapshots"], stopped
    assert through_hub(hub, "GET", "/user/alice/api/status", alice).status_code != 200

    spawn(hub, "alice")
    again = river_get(river, alice, f"/vps/{vps['id']}").json()["vps"]
    assert again["state"] == "running" and again["task_id"] != vps["task_id"]
    assert again["running_image"] == stopped["snapshots"][-1]
    got = through_hub(hub, "GET", "/user/alice/api/contents/keep.txt", alice)
    assert got.status_code == 200, got.text
    assert got.json()["content"] == "kept across restarts"
    assert len(river_get(river, alice, "/vps").json()["vps"]) == 1  # the same VPS
    stop(hub, "alice")


def test_a_river_refusal_is_the_spawn_error(site: tuple[Hub, Cluster]) -> None:
    hub, river = site
    response = hub.api("POST", "/users/bob/server", json={"memory": "lots"})
    if response.status_code == 202:
        wait_for(lambda: not server_of(hub, "bob").get("pending"), 120, what="bob's spawn to end")
    log = (hub.root / "hub.log").read_text()
    assert "River answered 400" in log and "memory" in log
    assert not server_of(hub, "bob").get("ready")


def test_a_river_cell_in_the_spawned_server_runs_as_its_user(site: tuple[Hub, Cluster]) -> None:
    """`%%river submit` in a kernel of alice's server (through the Hub, with her Hub token)
    runs a task as alice with no `%river connect`: RIVER_URL / RIVER_TOKEN from the spawner."""
    hub, river = site
    alice, bob = hub.token_of("alice"), hub.token_of("bob")
    spawn(hub, "alice", cores=1, memory="1G")
    kernel = HubKernel(hub.url, "alice", alice).start()
    try:
        kernel.put_file("river-client.zip", client_bundle())
        setup = kernel.run(
            "import sys; sys.path.insert(0, 'river-client.zip')\n%load_ext river_magics"
        )
        assert "Error" not in setup, setup
        text = kernel.run("%%river submit -c 1 -m 256M\nprint('hello from', 'river', 6 * 7)")
        assert "hello from river 42" in text, text
        ids = re.findall(r"task (\d+)", text)
        assert ids, f"no task id in the cell output: {text!r}"
        task = river_get(river, alice, f"/tasks/{ids[-1]}").json()["task"]
        assert task["state"] == "completed" and task["owner"] == "alice", task
        assert "hello from river 42" in str(
            river_get(river, alice, f"/tasks/{ids[-1]}/logs").json()
        )
        # Bob sees the shared queue's summary only (docs/security.md): no code, no logs, no
        # control; for those the task does not exist.
        assert "spec" not in river_get(river, bob, f"/tasks/{ids[-1]}").json()["task"]
        assert river_get(river, bob, f"/tasks/{ids[-1]}/logs").status_code == 404
        kill = httpx.post(
            f"{river.url}/river/api/tasks/{ids[-1]}/kill",
            headers={"Authorization": f"token {bob}"}, json={}, timeout=30,
        )  # fmt: skip
        assert kill.status_code == 404, kill.text
    finally:
        kernel.close()
        stop(hub, "alice")


def test_two_users_spawn_from_the_form_in_chromium(site: tuple[Hub, Cluster]) -> None:
    """Alice and bob log in on the Hub's login page, choose cores and memory in the spawn
    form, and land on their own server, each a River VPS of theirs; bob opening alice's
    `/user/alice/` does not reach her server."""
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import ARTIFACTS, BROWSER_PROBLEM, CHROMIUM, CHROMIUM_ARGS
    from tests.hub.hubfixture import HUB_PASSWORD

    if BROWSER_PROBLEM:
        pytest.skip(BROWSER_PROBLEM)
    hub, river = site
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chosen = {"alice": ("1", "512M"), "bob": ("1", "768M")}
    for name in chosen:  # a fresh VPS each: a restart keeps the resources it was made with
        token = hub.token_of(name)
        for old_vps in river_get(river, token, "/vps").json()["vps"]:
            _made_vps.add(f"river-vps/{old_vps['id']}")
            gone = httpx.delete(
                f"{river.url}/river/api/vps/{old_vps['id']}",
                headers={"Authorization": f"token {token}"}, timeout=60,
            )  # fmt: skip
            assert gone.status_code < 300, gone.text
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pages = {}
            for name, (cores, memory) in chosen.items():
                page = chromium.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.set_default_timeout(60_000)
                page.goto(f"{hub.url}/hub/login")
                page.fill("#username_input", name)
                page.fill("#password_input", HUB_PASSWORD)
                page.click("#login_submit")
                page.goto(f"{hub.url}/hub/spawn")
                page.fill("#river-cores", cores)
                page.fill("#river-memory", memory)
                page.screenshot(path=str(ARTIFACTS / f"hub-spawn-form-{name}.png"))
                page.click("form#spawn_form [type=submit]")
                # The server's page, or the Hub's spawn error page at once (not a timeout).
                page.wait_for_url(
                    lambda url, n=name: f"/user/{n}/" in url or "/hub/spawn" in url,
                    timeout=240_000,
                )
                if f"/user/{name}/" not in page.url:
                    page.wait_for_url(f"**/user/{name}/**", timeout=240_000)
                page.wait_for_load_state()
                page.screenshot(path=str(ARTIFACTS / f"hub-server-{name}.png"))
                pages[name] = page
            for name, (cores, memory) in chosen.items():
                token = hub.token_of(name)
                [vps] = river_get(river, token, "/vps").json()["vps"]
                _made_vps.add(f"river-vps/{vps['id']}")
                assert vps["owner"] == name and vps["state"] == "running", vps
                assert vps["request"]["cores"] == float(cores), vps["request"]
                assert vps["request"]["memory"] in (memory, memory_bytes(memory)), vps["request"]
                # The page is her own server's (jupyter-server's landing page: the test
                # image has no JupyterLab), reached after the server's own Hub OAuth.
                assert f"/user/{name}/" in pages[name].url, pages[name].url
                assert "A Jupyter Server is running" in pages[name].content()
            # Bob opening alice's server: the Hub refuses (403) or sends him to his own.
            bob = pages["bob"]
            response = bob.goto(f"{hub.url}/user/alice/api/status")
            assert response is not None
            assert response.status == 403 or "/user/alice/" not in bob.url, (
                bob.url,
                response.status,
            )
            bob.screenshot(path=str(ARTIFACTS / "hub-bob-at-alice.png"))
        finally:
            chromium.close()
            for name in chosen:
                stop(hub, name)


def memory_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]])
