"""A real JupyterHub (with its real configurable-http-proxy) on loopback, for the Hub tests.

Users log in with DummyAuthenticator's one password; single-user servers are started by
SimpleLocalProcessSpawner on this machine. River is registered as an external service
(it is reached at its own URL, so the Hub's proxy needs no route to it), and a `tester`
service holds the admin scopes the tests use to make users, groups, tokens and servers.
Everything started here is stopped by `Hub.close` (the Hub stops its proxy and servers;
any server process still alive after that is killed by its PID).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.cluster import REPO, _stop, free_port, wait_for

PROXY = REPO / ".cache" / "hub-proxy" / "node_modules" / ".bin" / "configurable-http-proxy"
HUB_PASSWORD = "hub-test-password"


def hub_problem() -> str | None:
    """Why the Hub tests cannot run here, or None."""
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        return "jupyterhub is not installed (pip install -e '.[hub]')"
    if not os.access(PROXY, os.X_OK):
        return f"configurable-http-proxy is not installed at {PROXY}; run .ci/setup-hub.sh"
    return None


@dataclass
class Hub:
    root: Path
    river_url: str
    group_roles: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    river_token: str = field(default_factory=lambda: secrets.token_hex(32))
    tester_token: str = field(default_factory=lambda: secrets.token_hex(32))
    process: subprocess.Popen | None = None
    extra_config: str = ""  # appended to jupyterhub_config.py (e.g. another spawner)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/hub/api"

    def config(self) -> str:
        root_flag = ["--allow-root"] if os.geteuid() == 0 else []
        # No river_server flag here: configure_spawner turns River's host extension off in
        # every user's server by itself (tests/hub/test_hub_service.py checks it).
        args = [*root_flag, "--ServerApp.jpserver_extensions=jupyter_server_proxy=False"]
        return f"""
from river_server.hub_spawn import configure_spawner
c = get_config()  # noqa
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {self.port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.api_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.JupyterHub.db_url = "sqlite:///{self.root / "hub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(self.root / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(self.root / "hub.pid")!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {HUB_PASSWORD!r}
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"hubadmin"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(self.root / "homes" / "{username}")!r}
c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [
    {{"name": "river", "api_token": {self.river_token!r},
      "oauth_redirect_uri": {self.river_url + "/river/hub/oauth_callback"!r},
      "oauth_no_confirm": True}},
    {{"name": "tester", "api_token": {self.tester_token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=river"]}},
    {{"name": "tester", "services": ["tester"],
      "scopes": ["admin:users", "admin:groups", "admin:servers", "tokens", "read:users"]}},
]
configure_spawner(c, river_url={self.river_url!r})
{self.extra_config}
"""

    def start(self, timeout: float = 90.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "homes").mkdir(exist_ok=True)
        path = self.root / "jupyterhub_config.py"
        path.write_text(self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
        log = open(self.root / "hub.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(path)],
            cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self._up, timeout, what=f"JupyterHub on {self.port} (see {self.root}/hub.log)")

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"JupyterHub exited; see {self.root / 'hub.log'}")
        try:
            return httpx.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"token {token or self.tester_token}"}
        return httpx.request(method, f"{self.api_url}{path}", headers=headers, timeout=30, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json() if response.content else None

    def add_users(self, *names: str, admin: bool = False) -> None:
        self.ok("POST", "/users", json={"usernames": list(names), "admin": admin})

    def token_of(self, name: str, **body: Any) -> str:
        return self.ok("POST", f"/users/{name}/tokens", json=body)["token"]

    def server_pids(self) -> list[int]:
        """PIDs of single-user servers the Hub started (children of its process group)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                env = (proc / "environ").read_bytes()
            except OSError:
                continue
            if b"jupyterhub.singleuser" in cmdline and (
                f"JUPYTERHUB_API_URL=http://127.0.0.1:{self.api_port}/".encode() in env
            ):
                pids.append(int(proc.name))
        return pids

    def close(self) -> None:
        leftover = self.server_pids()
        if self.process is not None:
            _stop(self.process, signal.SIGTERM, timeout=30)
        for pid in leftover:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
