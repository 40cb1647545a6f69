"""The host's composition root: builds its services in dependency order and hands them out.

Each service receives exactly the collaborators it uses (session factory, event bus, stores,
runner client, config values, other services) and never this object, so the dependency
graph is what the constructors say (docs/design-decisions.md). Only the app and the request
handlers get services from `River`; tests/unit/test_service_wiring.py keeps it so.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from river_runner.ids import SnowflakeGenerator
from river_server import db, loop_guard
from river_server.blobs import BlobStore
from river_server.datastore import DataStore
from river_server.dbwork import DbWork, pool_readers
from river_server.dispatcher import Dispatcher
from river_server.environments import EnvironmentLimits, EnvironmentService
from river_server.events import EventBus
from river_server.history import HistorySettings
from river_server.job_ports import parse_range
from river_server.leadership import Leadership
from river_server.leases import LeaseService
from river_server.limits import StreamGate
from river_server.logstore import LogStore
from river_server.loop_guard import LoopGuard
from river_server.nodes import NodeConnections, NodeRegistry
from river_server.overlay import OverlayService, OverlaySettings
from river_server.priorities import Priorities
from river_server.private import make_private, private_file, tighten_tree
from river_server.runner_client import RunnerClient
from river_server.ssh_proxy import SshProxy
from river_server.tasks import TaskService
from river_server.time_limits import TimeLimits
from river_server.usage import FairShareSettings
from river_server.vps import VpsService


@dataclass
class HostConfig:
    data_dir: Path
    db_url: str
    runner_token: str
    heartbeat_interval: float = 5.0
    heartbeat_misses: int = 6
    backfill_window: float = 300.0
    admin_user: str = "admin"
    session_lifetime: float = 7 * 86400.0  # seconds a browser login lasts (docs/security.md)
    blob_max_bytes: int = 64 * 1024 * 1024  # per-task blobs (--pull results)
    shared_dir: Path | None = None  # shared storage (environments); None: data_dir/shared
    user_mount_prefixes: tuple[str, ...] = ()  # host paths users (not operators) may mount
    require_approval: bool = False  # tasks of `user`s wait in pending_approval
    vps_snapshots_keep: int = 3  # docker commit images kept per VPS
    kernel_lease_seconds: float = 30.0  # a kernel lease's life unless renewed (leases.py)
    # Bounds on environment containers and execs on the head node's Docker
    environment_limits: EnvironmentLimits = field(default_factory=EnvironmentLimits)
    overlay: OverlaySettings = field(default_factory=OverlaySettings)  # VXLAN hub (design §4)
    # Bounds on what one user can grow (docs/security.md, "Limits").
    max_request_body: int = 16 * 1024 * 1024  # the server's body bound (set by the app)
    task_spec_max_bytes: int = 1024 * 1024  # script + command + env of one task
    max_tasks_per_user: int = 1000  # unfinished tasks per user
    log_max_bytes: int = 64 * 1024 * 1024  # stored log per task; then one truncation note
    blob_user_max_bytes: int = 1024**3  # all blobs of one user's tasks together
    data_user_max_bytes: int = 8 * 1024**3  # the data plane: one user's blobs together
    data_task_max_bytes: int = 4 * 1024**3  # the data plane: one task's push (or pull)
    data_retention: float = 7 * 24 * 3600.0  # unused blobs and finished tasks' results
    max_event_streams_per_user: int = 32  # concurrent /river/api/events streams
    max_reservations_per_user: int = 64  # overlay IP reservations held at once
    ssh_max_connections: int = 256  # SSH proxy connections in all (a thread each)
    ssh_max_relays_per_user: int = 32  # SSH sessions + forwards per user (a thread each)
    max_tunnels_per_user: int = 32  # open `river forward` connections + `river attach` terminals
    job_port_range: str = "29500-29999"  # ports of host-network jobs (job_ports.py)
    host_network_role: str = "operator"  # least role that may submit a host-network job
    time_limits: TimeLimits = field(default_factory=TimeLimits)  # by role (time_limits.py)
    fair_share: FairShareSettings = field(default_factory=FairShareSettings)  # fairshare.py
    priorities: Priorities = field(default_factory=Priorities)  # by role (priorities.py)
    history: HistorySettings = field(default_factory=HistorySettings)  # charts (history.py)
    upgrade_db: bool = False  # upgrade an older PostgreSQL schema (SQLite: always, with a backup)
    db_loop_guard: bool = (
        False  # log every query run on the event loop (river_server/loop_guard.py)
    )

    def __post_init__(self) -> None:
        if self.shared_dir is None:
            self.shared_dir = self.data_dir / "shared"


class River:
    """Everything the host knows and does; one instance per Jupyter server."""

    def __init__(self, config: HostConfig, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("river.host")
        self.boot_id = uuid.uuid4().hex
        make_private(config.data_dir)
        # Task specs, logs, blobs and secrets: the host's alone. The shared directory and
        # the embedded runner's directory are others' to read and keep their modes.
        tighten_tree(config.data_dir, skip=(config.shared_dir, config.data_dir / "runners"))
        db_file = Path(config.db_url.removeprefix("sqlite:///"))
        if config.db_url.startswith("sqlite:///") and db_file.is_absolute():
            private_file(db_file)  # SQLite gives -wal and -shm the database's mode
        self.engine = db.make_engine(config.db_url, upgrade=config.upgrade_db, log=self.log)
        self.sessions = db.make_sessionmaker(self.engine)
        # Database work runs on these threads, never on the loop (river_server/dbwork.py).
        self.db = DbWork(readers=pool_readers(self.engine))
        self.loop_guard: LoopGuard | None = (
            loop_guard.install(self.engine, self.log) if config.db_loop_guard else None
        )
        # Leads or stands by (PostgreSQL); on SQLite the only host, which the app ensures
        # with claim_file (a host process, not every River object a test builds).
        self.leadership = Leadership(self.engine, self.log)
        self.ids = SnowflakeGenerator()
        with self.sessions() as session:
            newest = db.newest_task_id(session)
        if newest:
            self.ids.bump_past(newest)
        self.bus = EventBus(self.db)
        self.logs = LogStore(config.data_dir / "logs", config.log_max_bytes)
        self.blobs = BlobStore(
            config.data_dir / "blobs", config.blob_max_bytes, config.blob_user_max_bytes
        )
        self.data = DataStore(
            config.data_dir / "data",
            user_max_bytes=config.data_user_max_bytes,
            task_max_bytes=config.data_task_max_bytes,
            retention=config.data_retention,
        )
        self.streams = StreamGate(config.max_event_streams_per_user)
        self.tunnels = StreamGate(
            config.max_tunnels_per_user,
            what="forwarded connections and attached terminals",
            setting="c.RiverHost.max_tunnels_per_user",
        )
        self.runner_client = RunnerClient()
        self.connections = NodeConnections()
        assert config.shared_dir is not None  # HostConfig fills it in
        self.environments = EnvironmentService(
            self.sessions, self.log, config.environment_limits, config.shared_dir
        )
        self.overlay = OverlayService(
            self.engine,
            self.sessions,
            self.connections,
            config.overlay,
            config.max_reservations_per_user,
        )
        self.tasks = TaskService(
            self.sessions,
            self.bus,
            self.logs,
            self.blobs,
            self.ids,
            self.runner_client,
            self.connections,
            self.overlay,
            self.environments,
            self.log,
            require_approval=config.require_approval,
            task_spec_max_bytes=config.task_spec_max_bytes,
            max_tasks_per_user=config.max_tasks_per_user,
            user_mount_prefixes=config.user_mount_prefixes,
            work=self.db,
            host_network_role=config.host_network_role,
            time_limits=config.time_limits,
            fair_share=config.fair_share,
            priorities=config.priorities,
        )
        self.vps = VpsService(
            self.sessions,
            self.tasks,
            self.ids,
            self.connections,
            self.runner_client,
            self.log,
            config.vps_snapshots_keep,
        )
        self.dispatcher = Dispatcher(
            self.sessions,
            self.connections,
            self.tasks,
            self.environments,
            self.runner_client,
            self.log,
            config.backfill_window,
            config.user_mount_prefixes,
            work=self.db,
            fence=self.leadership.fence,
            overlay=self.overlay,
            job_ports=parse_range(config.job_port_range),
            fair_share=config.fair_share,
            snapshot_vps=self.vps.snapshot,  # a displaced VPS's checkpoint (preemption.py)
        )
        self.tasks.bind_queue(self.dispatcher)  # the one cycle: tasks <-> dispatcher
        self.leases = LeaseService(
            self.sessions,
            self.db,
            self.tasks,
            self.connections,
            self.ids,
            config.kernel_lease_seconds,
        )
        self.nodes = NodeRegistry(
            self.sessions,
            self.bus,
            self.connections,
            self.tasks,
            self.dispatcher,
            self.overlay,
            self.log,
            config.runner_token,
            config.heartbeat_interval,
            config.heartbeat_misses,
            self.boot_id,
            work=self.db,
            leading=lambda: self.leadership.is_leader,
            history_settings=config.history,
        )
        self.ssh_proxy: SshProxy | None = None  # set by attach_ssh_proxy once it listens

    def make_ssh_proxy(self, address: str, port: int, key_dir: Path) -> SshProxy:
        """The SSH proxy, wired to its collaborators (the app starts it and may fail to)."""
        return SshProxy(
            self.sessions,
            self.vps,
            self.connections,
            address,
            port,
            key_dir,
            max_connections=self.config.ssh_max_connections,
            max_relays_per_user=self.config.ssh_max_relays_per_user,
        )

    def attach_ssh_proxy(self, proxy: SshProxy) -> None:
        """A listening proxy: VPSes get its key and its port in their SSH commands."""
        self.ssh_proxy = proxy
        self.vps.ssh_proxy = proxy

    def take_over(self) -> None:
        """This host has just become the leader: rebuild what a restarted host rebuilds.

        Tasks, queue and nodes are the database's; what this process cached as a standby
        (log indexes) may be stale and is dropped; IDs continue past the newest task; node
        deadlines run from now, not from `last_seen`, so runners still switching over are
        not declared lost (they re-register on their next beat)."""
        self.logs.reset(cache=True)
        with self.sessions() as session:
            newest = db.newest_task_id(session)
        if newest:
            self.ids.bump_past(newest)
        self.connections.live.clear()
        self.nodes.rearm(time.time())

    def step_down(self) -> None:
        """The lock is lost: forget the runners (they find the new leader) and read logs
        afresh from now on."""
        self.connections.live.clear()
        self.logs.reset(cache=False)

    async def close(self) -> None:
        self.leadership.close()
        self.environments.close()
        self.overlay.close()
        await self.runner_client.close()
        self.db.close()
        self.engine.dispose()
