"""`river host` and `river up`: start the host (and for `up`, a whole one-machine cluster)."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from river_server.app import free_port
from river_server.up_tasks import end_local_tasks


def _default_data_dir() -> Path:
    from jupyter_core.paths import jupyter_data_dir

    return Path(os.environ.get("RIVER_DATA_DIR") or Path(jupyter_data_dir()) / "river")


def host_command(argv: list[str]) -> int:
    """Run a bare host (no local runner): `jupyter lab` with the River extension on."""
    parser = argparse.ArgumentParser(
        prog="river host", description="Run the River host (JupyterLab + River)."
    )
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--upgrade-db",
        action="store_true",
        help="upgrade an older PostgreSQL database to this River's schema (docs/database.md)",
    )
    args, extra = parser.parse_known_args(argv)
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--ServerApp.ip={args.ip}",
        f"--ServerApp.port={args.port}",
        "--ServerApp.identity_provider_class=river_server.auth.RiverIdentityProvider",
        "--ServerApp.authorizer_class=river_server.auth.RiverAuthorizer",
        "--ServerApp.jpserver_extensions=river_server=True",
        # jupyter-server-proxy's generic /proxy/<port> would let any logged-in user
        # reach any port of the host; River uses its classes only (docs/security.md).
        "--ServerApp.jpserver_extensions=jupyter_server_proxy=False",
        # No pip install/uninstall of extensions from the lab's UI (docs/security.md).
        "--LabApp.extension_manager=readonly",
        f"--ServerApp.allow_root={os.geteuid() == 0}",
    ]
    if args.data_dir:
        command.append(f"--RiverHost.data_dir={args.data_dir}")
    if args.upgrade_db:
        command.append("--RiverHost.upgrade_db=True")
    os.execv(sys.executable, command + extra)
    return 0  # pragma: no cover


def _wait_for_runner(
    url: str, token: str, name: str, timeout: float, server: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the Jupyter server exited with status {server.returncode}")
        try:
            response = httpx.get(
                f"{url}/river/api/nodes", headers={"Authorization": f"token {token}"}, timeout=2
            )
            if response.status_code == 200:
                nodes = {n["name"]: n["state"] for n in response.json()["nodes"]}
                if nodes.get(name) == "online":
                    return
                last_error = f"nodes: {nodes}"
            else:
                last_error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"the embedded cluster did not come up within {timeout:.0f}s ({last_error})")


def run_notebook(
    path: Path, url: str, token: str, output: Path | None = None, timeout: int = 300
) -> None:
    """Execute a notebook against the cluster with nbclient; raise if any cell fails."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    env_backup = {k: os.environ.get(k) for k in ("RIVER_URL", "RIVER_TOKEN")}
    os.environ["RIVER_URL"], os.environ["RIVER_TOKEN"] = url, token
    try:
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if output:
        nbformat.write(notebook, output)


def up_command(argv: list[str]) -> int:
    """The embedded single-machine cluster: JupyterLab + River host + a local runner."""
    parser = argparse.ArgumentParser(
        prog="river up",
        description="Start a one-machine River cluster (host + local runner + SQLite) in JupyterLab.",
    )
    parser.add_argument("--port", type=int, default=0, help="JupyterLab port (default: a free one)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state directory (default: Jupyter data dir /river)",
    )
    parser.add_argument(
        "--check",
        nargs="?",
        const="notebooks/quickstart.ipynb",
        metavar="NOTEBOOK",
        help="execute NOTEBOOK headlessly against the cluster, then stop; exit 1 if it fails",
    )
    parser.add_argument(
        "--runner-args", default="", help="extra arguments for the local runner, e.g. '--cpus 0-1'"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the cluster to come up"
    )
    args = parser.parse_args(argv)

    data_dir = args.data_dir or _default_data_dir()
    if args.check and args.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="river-check-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    server_token = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{port}"
    # The server token identifies the admin (RiverIdentityProvider); kernels started by this
    # server inherit RIVER_URL and RIVER_TOKEN, so `%river connect` needs no arguments.
    env = {
        **os.environ,
        "RIVER_URL": url,
        "RIVER_TOKEN": server_token,
        "JUPYTER_TOKEN": server_token,
    }
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.identity_provider_class=river_server.auth.RiverIdentityProvider",
        "--ServerApp.authorizer_class=river_server.auth.RiverAuthorizer",
        "--ServerApp.jpserver_extensions=river_server=True",
        # jupyter-server-proxy's generic /proxy/<port> would let any logged-in user
        # reach any port of the host; River uses its classes only (docs/security.md).
        "--ServerApp.jpserver_extensions=jupyter_server_proxy=False",
        # No pip install/uninstall of extensions from the lab's UI (docs/security.md).
        "--LabApp.extension_manager=readonly",
        f"--ServerApp.allow_root={os.geteuid() == 0}",
        f"--ServerApp.root_dir={Path.cwd()}",
        f"--RiverHost.data_dir={data_dir}",
        "--RiverHost.local_runner=True",
        f"--RiverHost.local_runner_args={args.runner_args}",
    ]
    server = subprocess.Popen(command, env=env, start_new_session=True)
    # The server runs in its own session (Ctrl+C in a terminal reaches `river up` alone):
    # a SIGTERM or SIGHUP (terminal closed) to `river up` must stop it too, through the
    # `finally` below, as Ctrl+C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    try:
        _wait_for_runner(url, server_token, "local", args.timeout, server)
        print(f"River is up: {url}/lab?token={server_token}")
        print(f"  for clients elsewhere: RIVER_URL={url} RIVER_TOKEN={server_token}")
        if args.check:
            notebook = Path(args.check)
            executed = data_dir / f"{notebook.stem}.executed.ipynb"
            run_notebook(notebook, url, server_token, output=executed)
            print(f"river up --check: {notebook} ran without errors")
            if args.data_dir:
                print(f"  executed notebook: {executed}")
            return 0
        print("Press Ctrl+C to stop.")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"river up: {exc}", file=sys.stderr)
        return 1
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        # The embedded runner's tasks outlive it by design (adoption); the cluster's do not.
        end_local_tasks(data_dir / "runners" / "local")
        if args.check and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
