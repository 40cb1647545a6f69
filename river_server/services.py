"""The host's services in one place, created by the extension and shared by handlers."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from river_runner.ids import SnowflakeGenerator
from river_server import db
from river_server.blobs import BlobStore
from river_server.dispatcher import Dispatcher
from river_server.environments import EnvironmentService
from river_server.events import EventBus
from river_server.logstore import LogStore
from river_server.nodes import NodeRegistry
from river_server.overlay import OverlayService, OverlaySettings
from river_server.runner_client import RunnerClient
from river_server.tasks import TaskService
from river_server.vps import VpsService

if TYPE_CHECKING:
    from river_server.ssh_proxy import SshProxy


@dataclass
class HostConfig:
    data_dir: Path
    db_url: str
    runner_token: str
    heartbeat_interval: float = 5.0
    heartbeat_misses: int = 6
    backfill_window: float = 300.0
    admin_user: str = "admin"
    blob_max_bytes: int = 64 * 1024 * 1024  # per-task blobs (--pull results)
    shared_dir: Path | None = None  # shared storage (environments); None: data_dir/shared
    user_mount_prefixes: tuple[str, ...] = ()  # host paths users (not operators) may mount
    require_approval: bool = False  # tasks of `user`s wait in pending_approval
    vps_snapshots_keep: int = 3  # docker commit images kept per VPS
    overlay: OverlaySettings = field(default_factory=OverlaySettings)  # VXLAN hub (design §4)

    def __post_init__(self) -> None:
        if self.shared_dir is None:
            self.shared_dir = self.data_dir / "shared"


class River:
    """Everything the host knows and does; one instance per Jupyter server."""

    def __init__(self, config: HostConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("river.host")
        self.boot_id = uuid.uuid4().hex
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = db.make_engine(config.db_url)
        self.sessions = db.make_sessionmaker(self.engine)
        self.ids = SnowflakeGenerator()
        with self.sessions() as session:
            newest = db.newest_task_id(session)
        if newest:
            self.ids.bump_past(newest)
        self.bus = EventBus()
        self.logs = LogStore(config.data_dir / "logs")
        self.blobs = BlobStore(config.data_dir / "blobs", config.blob_max_bytes)
        self.runner_client = RunnerClient()
        self.tasks = TaskService(self)
        self.vps = VpsService(self)
        self.ssh_proxy: SshProxy | None = None  # set by the app once it listens
        self.nodes = NodeRegistry(self)
        self.dispatcher = Dispatcher(self)
        self.environments = EnvironmentService(self)
        self.overlay = OverlayService(self, config.overlay)

    async def close(self) -> None:
        self.environments.close()
        self.overlay.close()
        await self.runner_client.close()
        self.engine.dispose()
