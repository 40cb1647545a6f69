"""Ways into a VPS from a notebook or a shell: SSH commands and config, a JupyterLab
terminal, and web apps (Jupyter, TensorBoard) the host starts inside it
(river_server/vps_apps.py), reached through the host's proxy at
`/river/proxy/absolute/<vps>/<port>/`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from .client import Client
from .common import task_id
from .errors import RiverError

JUPYTER_PORT = 8888
TENSORBOARD_PORT = 6006


def ssh_target(
    client: Client, vps: dict[str, Any], user: str | None = None
) -> tuple[str, int, str]:
    """(host, port, login) of the SSH proxy for a VPS with SSH (RiverError says why not)."""
    port = vps.get("ssh_proxy_port")
    if vps.get("ssh", "disabled") == "disabled":
        raise RiverError(
            f"VPS {vps['id']} was created without SSH; create one with "
            "%river vps create --ssh (or --gen-key / --key FILE)"
        )
    if not port:
        raise RiverError("this River host runs no SSH proxy (c.RiverHost.ssh_proxy_port)")
    name = user or client.me()["name"]
    return urlsplit(client.url).hostname or "localhost", int(port), f"{name}+{vps['id']}"


def ssh_command(client: Client, vps: dict[str, Any], user: str | None = None) -> str:
    """`ssh -p PORT user+ID@host` for a VPS with SSH."""
    host, port, login = ssh_target(client, vps, user)
    return f"ssh -p {port} {login}@{host}"


def ssh_config(client: Client, vps: dict[str, Any], user: str | None = None) -> str:
    """A ~/.ssh/config entry: afterwards `ssh river-vps-ID` (and scp, rsync, VS Code)."""
    host, port, login = ssh_target(client, vps, user)
    lines = [
        f"Host river-vps-{vps['id']}",
        f"    HostName {host}",
        f"    Port {port}",
        f"    User {login}",
    ]
    if vps.get("ssh") in ("upload", "generate"):
        lines.append("    # IdentityFile ~/.ssh/<the key you uploaded or were given>")
    return "\n".join(lines)


def start_app(client: Client, vps_id: str, app: str, **options: Any) -> str:
    """Start `app` ("jupyter" or "tensorboard") in the VPS (the host runs it with the
    proxy's prefix as its base URL); its URL once it answers through the proxy."""
    vps = client.vps_start_app(vps_id, app, **options)
    entry = next(
        p for p in vps["ports"] if p["name"] == app and p["port"] == options.get("port", p["port"])
    )
    status = client.wait_url(f"{client.url}/{entry['ready_path']}")
    if status >= 400:
        raise RiverError(
            f"{app} in VPS {vps_id} answered {status}; its log is /tmp/river-{app}-"
            f"{entry['port']}.log in the VPS"
        )
    return f"{client.url}/{entry['path']}"


def start_jupyter(client: Client, vps_id: str, port: int = JUPYTER_PORT) -> str:
    """Jupyter (Lab where installed, else Jupyter Server) in the VPS; its URL with token."""
    return start_app(client, vps_id, "jupyter", port=port)


def start_tensorboard(
    client: Client, vps_id: str, logdir: str, port: int = TENSORBOARD_PORT
) -> str:
    """TensorBoard on `logdir` (a directory in the VPS); its URL."""
    return start_app(client, vps_id, "tensorboard", port=port, logdir=logdir)


def terminal_url(client: Client, vps_id: str) -> str:
    """JupyterLab, opening a terminal into the VPS: River's labextension reads the
    `river-terminal` parameter and asks the host for the terminal (a kernel cannot open a
    tab in the browser, a link can)."""
    return f"{client.url}/lab?river-terminal={quote(task_id(vps_id))}"
