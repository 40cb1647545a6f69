"""A real River cluster for tests: a Jupyter server with the extension, and runner processes.

Everything runs as separate processes on loopback ports, as on a real cluster; helpers wait
on observable state with bounded deadlines instead of sleeping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from river_runner.data import cache_dir_name
from river_runner.data_out import memory_dir

REPO = Path(__file__).resolve().parent.parent
JOIN_TOKEN = "test-join-token"


# Which database a Cluster's host uses: None is SQLite in its data dir; conftest sets a
# function (root -> SQLAlchemy URL) under `--db postgresql`. One database per root, so a
# test that restarts a host on the same root (or builds a second Cluster on it) finds it.
DATABASE_FOR: Callable[[Path], str] | None = None
_DATABASES: dict[Path, str] = {}


def database_url(root: Path) -> str:
    """The database of the host whose cluster lives in `root`."""
    root = Path(root).resolve()
    if DATABASE_FOR is None:
        return f"sqlite:///{root / 'host' / 'river.db'}"
    if root not in _DATABASES:
        _DATABASES[root] = DATABASE_FOR(root)
    return _DATABASES[root]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GaveUp(RuntimeError):
    """Raised by a wait_for predicate when waiting longer cannot help (the process died)."""


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except GaveUp:
            raise
        except Exception as exc:  # the thing polled may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def reachable_by_task_accounts(path: Path) -> None:
    """Let a root runner's task account (`nobody`) reach files a test puts under `path`.

    pytest makes its temporary directories 0700; tasks of a root runner run as `nobody`
    and could not see a test's gate or input files there. Search permission (o+x) on the
    directories down to `path` lets them open a file they are told the name of, and list
    nothing.
    """
    if os.geteuid() != 0:
        return
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if directory == Path("/") or mode & 0o001:
            continue
        directory.chmod(mode | 0o001)


@dataclass
class Runner:
    name: str
    port: int
    data_dir: Path
    args: list[str]
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process:
            _stop(self.process, sig)


@dataclass
class Cluster:
    root: Path
    heartbeat_interval: float = 0.5
    heartbeat_misses: int = 6
    port: int = field(default_factory=free_port)
    token: str = "test-admin-token"
    host_process: subprocess.Popen | None = None
    runners: dict[str, Runner] = field(default_factory=dict)
    extra_host_args: list[str] = field(default_factory=list)
    # "server": a bare Jupyter server; "lab": JupyterLab (with the River labextension), and
    # kernels get RIVER_URL/RIVER_TOKEN as under `river up`, so `%river connect` just works.
    app: str = "server"
    ssh_proxy_port: int = 0  # 0: any free port (a VPS's JSON says which)
    db_url: str = ""  # empty: database_url(root), SQLite or the session's PostgreSQL
    host_log: str = "host.log"  # under root; a second host on the same root logs elsewhere
    # The --host URLs runners get (a leader and its standbys); empty: this host's URL only.
    runner_hosts: list[str] = field(default_factory=list)
    # Where the host listens; url stays loopback. "0.0.0.0" when containers must reach it
    # on the docker bridge (RIVER_URL inside a Hub user's server).
    ip: str = "127.0.0.1"

    def __post_init__(self) -> None:
        reachable_by_task_accounts(self.root)
        if not self.db_url:
            self.db_url = database_url(self.root)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    # ---- host -----------------------------------------------------------------------
    def start_host(self, timeout: float = 60.0) -> None:
        data_dir = self.root / "host"
        data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.root / self.host_log, "ab")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "jupyter",
            self.app,
            "--no-browser",
            f"--ServerApp.ip={self.ip}",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.allow_root={os.geteuid() == 0}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.identity_provider_class=river_server.auth.RiverIdentityProvider",
            "--ServerApp.authorizer_class=river_server.auth.RiverAuthorizer",
            "--ServerApp.jpserver_extensions=river_server=True",
            # jupyter-server-proxy's generic /proxy/<port> would let any logged-in user
            # reach any port of the host; River uses its classes only (docs/security.md).
            "--ServerApp.jpserver_extensions=jupyter_server_proxy=False",
            # No pip install/uninstall of extensions from the lab's UI (docs/security.md).
            "--LabApp.extension_manager=readonly",
            f"--ServerApp.root_dir={self.root}",
            f"--RiverHost.data_dir={data_dir}",
            f"--RiverHost.db_url={self.db_url}",
            f"--RiverHost.runner_token={JOIN_TOKEN}",
            f"--RiverHost.heartbeat_interval={self.heartbeat_interval}",
            f"--RiverHost.heartbeat_misses={self.heartbeat_misses}",
            f"--RiverHost.ssh_proxy_port={self.ssh_proxy_port}",  # 0: any free port
            *self.extra_host_args,
        ]
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.root / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
        }
        if self.app == "lab":
            env.update(RIVER_URL=self.url, RIVER_TOKEN=self.token)
        self.host_process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        wait_for(
            self._host_up,
            timeout,
            what=f"host on port {self.port} (see {self.root / self.host_log})",
        )

    def _host_up(self) -> bool:
        if self.host_process and self.host_process.poll() is not None:
            raise GaveUp(
                f"host exited with {self.host_process.returncode}; see {self.root / self.host_log}"
            )
        return (
            httpx.get(f"{self.url}/river/api/nodes", headers=self.headers, timeout=2).status_code
            == 200
        )

    def stop_host(self, sig: int = signal.SIGTERM) -> None:
        if self.host_process:
            _stop(self.host_process, sig)

    def second_host(self, name: str = "host2", timeout: float = 60.0) -> Cluster:
        """Start another host process on this cluster's database and data dir (a standby
        under PostgreSQL), on a port of its own, logging to root/<name>.log. The returned
        Cluster talks to that host; it has no runners, and closing it stops only its host."""
        twin = Cluster(
            self.root,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_misses=self.heartbeat_misses,
            token=self.token,
            extra_host_args=list(self.extra_host_args),
            app=self.app,
            db_url=self.db_url,
            host_log=f"{name}.log",
        )
        twin.start_host(timeout=timeout)
        return twin

    # ---- runners --------------------------------------------------------------------
    def start_runner(
        self,
        name: str,
        *args: str,
        wait_online: bool = True,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> Runner:
        runner = self.runners.get(name)
        if runner is None:
            args_list = list(args) if "--backend" in args else ["--backend", "process", *args]
            runner = Runner(name, port or free_port(), self.root / "runners" / name, args_list)
            self.runners[name] = runner
        runner.log_path = self.root / f"runner-{name}.log"
        log = open(runner.log_path, "ab")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "river_runner.cli",
            "runner",
            *[arg for url in self.runner_hosts or [self.url] for arg in ("--host", url)],
            "--name",
            name,
            "--port",
            str(runner.port),
            "--data-dir",
            str(runner.data_dir),
            *runner.args,
        ]
        runner.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {}), "RIVER_JOIN_TOKEN": JOIN_TOKEN},  # not in argv
        )
        if wait_online:
            self.wait_node(name, "online")
        return runner

    def wait_node(self, name: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            nodes = {n["name"]: n for n in self.get("/river/api/nodes")["nodes"]}
            node = nodes.get(name)
            return node if node and node["state"] == state else None

        return wait_for(check, timeout, what=f"node {name} to be {state}")

    # ---- API ------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.request("GET", path, **kwargs)
        response.raise_for_status()
        return response.json()

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON of a request that must succeed (2xx), with the answer in the failure."""
        response = self.request(method, path, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json()

    def submit(self, **body: Any) -> dict[str, Any]:
        response = self.request("POST", "/river/api/tasks", json=body)
        assert response.status_code == 201, response.text
        return response.json()["task"]

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get(f"/river/api/tasks/{task_id}")["task"]

    def wait_task(
        self, task_id: str, states: set[str] | str, timeout: float = 30.0
    ) -> dict[str, Any]:
        wanted = {states} if isinstance(states, str) else states

        def check() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task["state"] in wanted else None

        return wait_for(check, timeout, what=f"task {task_id} to reach {sorted(wanted)}")

    def make_users(self, *names: str, role: str = "user", label: str = "tests") -> dict[str, str]:
        """Users made straight in the host's database, each with a new API token."""
        from river_server import db
        from river_server.auth import create_token, ensure_user

        engine = db.make_engine(self.db_url)
        try:
            sessions = db.make_sessionmaker(engine)
            tokens = {}
            for name in names:
                ensure_user(sessions, name, role)
                tokens[name] = create_token(sessions, name, label=label)
            return tokens
        finally:
            engine.dispose()

    def close(self) -> None:
        for runner in self.runners.values():
            runner.kill(signal.SIGTERM)
        self.stop_host()
        _kill_leftover_tasks(self.root)
        for runner in self.runners.values():
            # Results a killed runner left in memory, and its blob cache, which lives beside
            # the tasks' scratch directories (outside `root`) when tasks run as another account.
            shutil.rmtree(memory_dir(runner.name, runner.data_dir), ignore_errors=True)
            cache = Path(tempfile.gettempdir()) / cache_dir_name(runner.name, runner.data_dir)
            shutil.rmtree(cache, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(
    root: Path,
    *runners: tuple[str, ...],
    host_timeout: float = 60.0,
    **options: Any,
) -> Iterator[Cluster]:
    """A started host (Cluster options as keywords) with `runners`, each a tuple of
    (name, *runner args); everything is stopped on exit."""
    cluster = Cluster(Path(root), **options)
    cluster.start_host(timeout=host_timeout)
    try:
        for name, *args in runners:
            cluster.start_runner(name, *args)
        yield cluster
    finally:
        cluster.close()


def start_river_up(tmp_path: Path) -> tuple[subprocess.Popen, Cluster, Path]:
    """The real `river up` (one local runner on core 0) in `tmp_path`, in its own session;
    returns its process, a Cluster bound to it (with the token it printed) and its data dir.
    The caller stops it."""
    data_dir, port = tmp_path / "up", free_port()
    river = Path(sys.executable).parent / "river"
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [str(river), "up", "--port", str(port), "--data-dir", str(data_dir)]
            + ["--runner-args", "--cpus 0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp_path,
        )

    def server_token() -> str | None:
        if up.poll() is not None:
            raise RuntimeError(f"river up exited: {log.read_text()}")
        text = log.read_text()
        up_line = text.split("River is up: ", 1)[1] if "River is up: " in text else ""
        return up_line.split("?token=", 1)[1].split()[0] if "\n" in up_line else None

    try:
        token = wait_for(server_token, 120, what="river up to be up")
    except BaseException:
        _stop(up)
        raise
    # `river up` keeps SQLite in its data dir whatever --db says (it is the one-machine mode).
    up_cluster = Cluster(
        tmp_path, port=port, token=token, db_url=f"sqlite:///{data_dir / 'river.db'}"
    )
    return up, up_cluster, data_dir


def as_user(token: str) -> dict[str, Any]:
    """Request keyword arguments that authenticate as the token's user."""
    return {"headers": {"Authorization": f"token {token}"}}


def _kill_leftover_tasks(root: Path) -> None:
    """Task supervisors run in their own sessions: stop any a test left behind."""
    for pid_file in root.glob("runners/*/tasks/*/supervisor.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    for pid_file in root.glob("runners/*/tasks/*/child.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
