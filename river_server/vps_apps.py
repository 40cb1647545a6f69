"""Web apps started inside a VPS and reached through `/river/proxy/absolute/<vps>/<port>/`.

`POST /river/api/vps/{id}/apps {"app": "jupyter" | "tensorboard", "port"?, "logdir"?}`
starts the app detached in the VPS (the runner's exec) with the proxy's absolute prefix as
its base URL, so its pages link to themselves correctly, and records it as one of the VPS's
`ports` (name, port, path with the app's own token), which the notebook magics and the
JupyterLab launcher open. Jupyter gets a fresh token and a cookie name of its own; River's
credentials never reach it (river_server/proxy.py).
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass
from typing import Any

from river_runner.spec import SpecError

DEFAULT_PORTS = {"jupyter": 8888, "tensorboard": 6006}
INSTALL_HINT = {"jupyter": "pip install jupyterlab", "tensorboard": "pip install tensorboard"}


@dataclass
class AppLaunch:
    """What to run in the VPS, and the port entry to record once it is started."""

    name: str
    port: int
    probe: list[str]  # exits 0 when the program is installed
    command: list[str]  # run detached
    path: str  # the page to open, relative to the Jupyter server's base URL
    ready_path: str  # answers 200 once the app is up


def proxy_path(vps_id: str, port: int) -> str:
    """The app's place under the Jupyter server's base URL (no leading slash)."""
    return f"river/proxy/absolute/{vps_id}/{port}/"


def plan(body: dict[str, Any], vps_id: str, base_url: str) -> AppLaunch:
    """Check a start request and build the launch (SpecError says what to fix)."""
    app = body.get("app")
    if app not in DEFAULT_PORTS:
        raise SpecError(f"app must be one of {', '.join(DEFAULT_PORTS)}, not {app!r}")
    port = body.get("port", DEFAULT_PORTS[app])
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise SpecError(f"port must be a number 1-65535, not {port!r}")
    relative = proxy_path(vps_id, port)
    prefix = f"{base_url.rstrip('/')}/{relative}"  # the app's own base URL
    log = f"/tmp/river-{app}-{port}.log"
    if app == "jupyter":
        token = secrets.token_urlsafe(24)
        options = (
            f"--allow-root --no-browser --ip=0.0.0.0 --port={port} --ServerApp.port_retries=0 "
            f"--ServerApp.base_url={shlex.quote(prefix)} --IdentityProvider.token={token} "
            f"--IdentityProvider.cookie_name=river-vps-{vps_id}-{port} "
            "--ServerApp.root_dir=/root"
        )
        script = (
            f"if command -v jupyter-lab >/dev/null; then exec jupyter lab {options} >{log} 2>&1; "
            f"else exec jupyter server {options} >{log} 2>&1; fi"
        )
        return AppLaunch(
            name="jupyter",
            port=port,
            probe=["/bin/sh", "-c", "command -v jupyter"],
            command=["/bin/sh", "-c", script],
            path=f"{relative}?token={token}",
            ready_path=f"{relative}api/status?token={token}",
        )
    logdir = body.get("logdir")
    if not isinstance(logdir, str) or not logdir.strip():
        raise SpecError("tensorboard needs 'logdir': the run directory inside the VPS")
    script = (
        f"exec tensorboard --logdir {shlex.quote(logdir)} --port {port} --bind_all "
        f"--path_prefix {shlex.quote(prefix.rstrip('/'))} >{log} 2>&1"
    )
    return AppLaunch(
        name="tensorboard",
        port=port,
        probe=["/bin/sh", "-c", "command -v tensorboard"],
        command=["/bin/sh", "-c", script],
        path=relative,
        ready_path=relative,
    )


def not_installed(app: str, vps_id: str) -> str:
    return f"{app} is not installed in VPS {vps_id}; in the VPS: {INSTALL_HINT[app]}"
