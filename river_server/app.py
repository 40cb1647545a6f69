"""The River host as a Jupyter server extension (configured with traitlets)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Float, Int, Unicode, default

from river_server.auth import ensure_user
from river_server.handlers import api, events, runner
from river_server.services import HostConfig, River

API = r"/river/api"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RiverHost(ExtensionApp):
    """Scheduler, node registry and API of a River cluster, inside a Jupyter server."""

    name = "river_server"
    load_other_extensions = True

    data_dir = Unicode(
        help="Where the host keeps its database (SQLite default), logs and secrets."
    ).tag(config=True)
    db_url = Unicode(help="SQLAlchemy URL of the database; default SQLite under data_dir.").tag(
        config=True
    )
    runner_token = Unicode(
        help="Join token runners present to register. Empty: read or make data_dir/runner_token."
    ).tag(config=True)
    heartbeat_interval = Float(5.0, help="Seconds between runner heartbeats.").tag(config=True)
    heartbeat_misses = Int(
        6, help="Missed heartbeats before a node is offline and its tasks lost."
    ).tag(config=True)
    backfill_window = Float(
        300.0, help="Seconds a blocked task may wait before later tasks stop overtaking it."
    ).tag(config=True)
    admin_user = Unicode("admin", help="River user that the Jupyter server token acts as.").tag(
        config=True
    )
    local_runner = Bool(False, help="Start a runner on this machine (the embedded cluster).").tag(
        config=True
    )
    local_runner_name = Unicode("local", help="Node name of the embedded runner.").tag(config=True)
    local_runner_args = Unicode(
        "", help="Extra arguments for the embedded runner, e.g. '--cpus 0-1'."
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return os.environ.get("RIVER_DATA_DIR") or str(Path(jupyter_data_dir()) / "river")

    def _runner_token(self, data_dir: Path) -> str:
        if self.runner_token:
            return self.runner_token
        path = data_dir / "runner_token"
        if path.exists():
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        path.write_text(token)
        os.chmod(path, 0o600)
        return token

    def initialize_settings(self) -> None:
        data_dir = Path(self.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        config = HostConfig(
            data_dir=data_dir,
            db_url=self.db_url or f"sqlite:///{data_dir / 'river.db'}",
            runner_token=self._runner_token(data_dir),
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_misses=self.heartbeat_misses,
            backfill_window=self.backfill_window,
            admin_user=self.admin_user,
        )
        self.river = River(config, log=self.log)
        ensure_user(self.river.sessions, self.admin_user, "admin")
        self.settings.update({"river": self.river})
        self._runner_process: subprocess.Popen | None = None

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [
                (rf"{API}/nodes", api.NodesHandler),
                (rf"{API}/tasks", api.TasksHandler),
                (rf"{API}/tasks/([^/]+)", api.TaskHandler),
                (rf"{API}/tasks/([^/]+)/(kill|pause|resume)", api.TaskActionHandler),
                (rf"{API}/tasks/([^/]+)/logs", api.TaskLogsHandler),
                (rf"{API}/events", events.EventsHandler),
                (rf"{API}/runner/register", runner.RegisterHandler),
                (rf"{API}/runner/heartbeat", runner.HeartbeatHandler),
                (rf"{API}/runner/events", runner.RunnerEventsHandler),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # noqa: ANN001
        interval_ms = max(100.0, self.heartbeat_interval * 1000 / 2)
        self._liveness = PeriodicCallback(self.river.nodes.check_liveness, interval_ms)
        self._liveness.start()
        self.river.dispatcher.wake()
        if self.local_runner:
            self._start_local_runner(serverapp)

    def _start_local_runner(self, serverapp) -> None:  # noqa: ANN001
        port = free_port()
        host_url = f"http://127.0.0.1:{serverapp.port}{serverapp.base_url.rstrip('/')}"
        command = [
            sys.executable,
            "-m",
            "river_runner.cli",
            "runner",
            "--host",
            host_url,
            "--token",
            self.river.config.runner_token,
            "--name",
            self.local_runner_name,
            "--port",
            str(port),
            "--backend",
            "process",
            "--data-dir",
            str(Path(self.data_dir) / "runners" / self.local_runner_name),
            *self.local_runner_args.split(),
        ]
        self.log.info("starting the embedded runner %s on port %d", self.local_runner_name, port)
        self._runner_process = subprocess.Popen(command, start_new_session=True)

    async def stop_extension(self) -> None:
        liveness = getattr(self, "_liveness", None)
        if liveness:
            liveness.stop()
        process = getattr(self, "_runner_process", None)
        if process and process.poll() is None:
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 10)
            except asyncio.TimeoutError:
                process.kill()
        await self.river.close()
