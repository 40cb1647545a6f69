"""`/river/proxy/<id>/<port>/`: a task's web server reached through host and runner.

Process backend (the VPS forms are in tests/docker/test_vps_access.py): a task runs a small
Tornado app (HTTP + a WebSocket echo) on a free port of its runner. Through the proxy: the
stripped and absolute path forms, the forwarded prefix, a POST body, an 8 MiB body passed
through intact, a WebSocket echo, and who may not: no login → 403, another user → 404,
River's credentials never reach the app; a bad port → 400, nothing listening → 502.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tornado import httpclient, websocket

from tests.cluster import Cluster, free_port, wait_for

APP = r"""
import json, sys
from tornado import ioloop, web, websocket

BLOB = bytes(range(256)) * (8 * 4096)  # 8 MiB

class Echo(web.RequestHandler):
    def get(self, path):
        self.finish({"path": self.request.path, "query": self.request.query,
                     "headers": dict(self.request.headers)})
    def post(self, path):
        self.finish({"body": self.request.body.decode()})

class Blob(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(BLOB)

class Go(web.RequestHandler):
    def get(self):
        self.redirect(self.get_argument("to"))

class Ws(websocket.WebSocketHandler):
    def on_message(self, message):
        self.write_message("echo:" + message)

app = web.Application([(r"/blob", Blob), (r".*/go", Go), (r".*/ws", Ws), (r"(.*)", Echo)])
app.listen(int(sys.argv[1]), address="127.0.0.1")
print("listening", flush=True)
ioloop.IOLoop.current().start()
"""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cluster = Cluster(tmp_path_factory.mktemp("proxy"))
    cluster.start_host()
    try:
        cluster.start_runner("web")
        port = free_port()
        task = cluster.submit(command=[sys.executable, "-c", APP, str(port)], name="web")
        cluster.wait_task(task["id"], "running")
        other = cluster.make_users("mallory", label="proxy tests")["mallory"]
        base = f"{cluster.url}/river/proxy/{task['id']}/{port}"

        def answers() -> bool:
            return httpx.get(f"{base}/", headers=cluster.headers).status_code == 200

        wait_for(answers, 30, what="the task's web server through the proxy")
        yield {"cluster": cluster, "task": task, "port": port, "base": base, "other": other}
        cluster.request("POST", f"/river/api/tasks/{task['id']}/kill")
    finally:
        cluster.close()


def test_stripped_path_and_forwarded_prefix(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    response = httpx.get(f"{proxied['base']}/some/page?x=1", headers=cluster.headers)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["path"] == "/some/page"
    assert seen["query"] == "x=1"
    prefix = f"/river/proxy/{proxied['task']['id']}/{proxied['port']}"
    assert seen["headers"]["X-Forwarded-Prefix"] == prefix


def test_absolute_path_keeps_the_prefix(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    absolute = f"/river/proxy/absolute/{proxied['task']['id']}/{proxied['port']}"
    response = httpx.get(f"{cluster.url}{absolute}/lab/tree", headers=cluster.headers)
    assert response.status_code == 200, response.text
    assert response.json()["path"] == f"{absolute}/lab/tree"


def test_river_credentials_stay_on_the_host(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    headers = {**cluster.headers, "Cookie": "app-cookie=kept"}
    seen = httpx.get(f"{proxied['base']}/", headers=headers).json()["headers"]
    assert "Authorization" not in seen
    assert cluster.token not in json.dumps(seen)
    assert seen.get("Cookie") == "app-cookie=kept"


def test_post_body_and_streamed_download(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    posted = httpx.post(f"{proxied['base']}/form", headers=cluster.headers, content=b"a=1")
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"body": "a=1"}
    blob = httpx.get(f"{proxied['base']}/blob", headers=cluster.headers, timeout=60)
    assert blob.status_code == 200
    assert blob.content == bytes(range(256)) * (8 * 4096)


def test_websocket_through_the_proxy(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    url = "ws" + proxied["base"][len("http") :] + "/ws"

    async def exchange(headers: dict[str, str]) -> str:
        request = httpclient.HTTPRequest(url, headers=headers)
        conn = await websocket.websocket_connect(request)
        await conn.write_message("hello")
        answer = await asyncio.wait_for(conn.read_message(), 10)
        conn.close()
        return answer

    assert asyncio.run(exchange(cluster.headers)) == "echo:hello"
    with pytest.raises(httpclient.HTTPClientError) as refused:
        asyncio.run(exchange({}))
    assert refused.value.code == 403


def test_no_login_is_403_and_others_get_404(proxied: dict[str, Any]) -> None:
    base = proxied["base"]
    assert httpx.get(f"{base}/").status_code == 403
    assert httpx.post(f"{base}/x", content=b"").status_code == 403
    other = {"Authorization": f"token {proxied['other']}"}
    assert httpx.get(f"{base}/", headers=other).status_code == 404
    cluster = proxied["cluster"]
    missing = httpx.get(f"{cluster.url}/river/proxy/12345/{proxied['port']}/", headers=other)
    assert missing.status_code == 404
    bad_port = httpx.get(
        f"{cluster.url}/river/proxy/{proxied['task']['id']}/70000/", headers=cluster.headers
    )
    assert bad_port.status_code == 400
    assert "1-65535" in bad_port.json()["message"]


def test_nothing_listening_is_502(proxied: dict[str, Any]) -> None:
    cluster = proxied["cluster"]
    url = f"{cluster.url}/river/proxy/{proxied['task']['id']}/{free_port()}/"
    response = httpx.get(url, headers=cluster.headers)
    assert response.status_code == 502


def test_redirects_stay_under_the_proxy(proxied: dict[str, Any]) -> None:
    """An app that does not know its prefix redirects to `/login`: the browser must land
    on `/river/proxy/ID/PORT/login`, not on the host's own /login. Apps that know it (the
    absolute form) and full URLs are left alone."""
    cluster = proxied["cluster"]
    prefix = f"/river/proxy/{proxied['task']['id']}/{proxied['port']}"
    absolute = f"/river/proxy/absolute/{proxied['task']['id']}/{proxied['port']}"
    cases = [
        (f"{prefix}/go?to=/login", f"{prefix}/login"),
        (f"{absolute}/go?to={absolute}/lab", f"{absolute}/lab"),
        (f"{prefix}/go?to=http://example.invalid/x", "http://example.invalid/x"),
        (f"{prefix}/go?to=relative/page", "relative/page"),
    ]
    for path, location in cases:
        response = httpx.get(f"{cluster.url}{path}", headers=cluster.headers)
        assert response.status_code == 302, (path, response.text)
        assert response.headers["Location"] == location, path
