"""The River host as a Jupyter server extension (configured with traitlets)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Dict, Float, Int, List, TraitError, Unicode, default, validate

from river_runner.durations import parse_duration
from river_runner.spec import SpecError, parse_memory
from river_server import join_page, route_policy
from river_server.auth import LOGIN_THROTTLE, ensure_user
from river_server.datastore import digests_in_use, sweep_interval
from river_server.environments import EnvironmentLimits
from river_server.handlers import accounts, api, environments, events, runner, streams
from river_server.handlers import blobs as blob_handlers
from river_server.handlers import data as data_handlers
from river_server.handlers import history as history_handlers
from river_server.handlers import leases as lease_handlers
from river_server.handlers import overlay as overlay_handlers
from river_server.handlers import share as share_handlers
from river_server.handlers import task_files as file_handlers
from river_server.handlers import transitions as transition_handlers
from river_server.handlers import vps as vps_handlers
from river_server.history import HOUR, HistorySettings
from river_server.idle_cull import IdleCuller, IdlePolicy
from river_server.job_ports import parse_range
from river_server.leadership import SecondHostError
from river_server.overlay import OverlaySettings
from river_server.pages import keep_token_out_of_pages
from river_server.priorities import DEFAULT_PRIORITY_MAX, Priorities
from river_server.private import make_private, open_private
from river_server.proxy import PROXY_ROUTE, RiverProxyHandler
from river_server.schema import SchemaError
from river_server.services import HostConfig, River
from river_server.time_limits import TimeLimits
from river_server.usage import FairShareSettings
from river_server.vps_limits import VpsLimitTimer

API = r"/river/api"
LEASE_SWEEP_S = 1.0  # how late a lapsed kernel lease's tasks may be killed, at most
VPS_LIMIT_TICK_S = 1.0  # how late a VPS may be stopped past its time limit, at most


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Credentials of the Jupyter server (admin) that a runner, and so its tasks, must not see.
HOST_SECRET_ENV = (
    "JUPYTER_TOKEN",
    "JUPYTER_PASSWORD",
    "RIVER_TOKEN",
    "RIVER_RUNNER_TOKEN",
    "JUPYTERHUB_API_TOKEN",  # River's own token at the Hub (river_server/hub.py)
)


def local_runner_env(join_token: str) -> dict[str, str]:
    """The embedded runner's environment: the host's, less its credentials, plus the join
    token, which goes by environment (readable only by its own account), never on the
    command line that `ps` shows to everyone."""
    env = {k: v for k, v in os.environ.items() if k not in HOST_SECRET_ENV}
    env["RIVER_JOIN_TOKEN"] = join_token
    return env


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
    upgrade_db = Bool(
        False,
        help="Upgrade an older PostgreSQL database to this River's schema at start (`river "
        "host --upgrade-db`); without it the host refuses to start on one. SQLite databases "
        "are upgraded always, after a copy of the file is kept beside it (docs/database.md).",
    ).tag(config=True)
    db_loop_guard = Bool(
        False,
        help="Debug: log every database query run on the event loop, with the handler or "
        "function that ran it (river_server/loop_guard.py). Costs a stack walk per such query.",
    ).tag(config=True)
    public_url = Unicode(
        "",
        help="The URL runners and clients reach this host by, e.g. http://head2:8888. A "
        "standby names the leader's in X-River-Leader (docs/database.md, 'A standby "
        "host'). Empty: the Jupyter server's own connection URL.",
    ).tag(config=True)
    leader_retry_interval = Float(
        1.0,
        help="Seconds between a standby's tries of the leader lock (PostgreSQL), and between "
        "the leader's checks that it still holds it.",
    ).tag(config=True)
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
    blob_max_bytes = Int(
        64 * 1024 * 1024,
        help="Largest per-task blob (e.g. a cell's --pull results) the host keeps, in bytes.",
    ).tag(config=True)
    admin_user = Unicode("admin", help="River user that the Jupyter server token acts as.").tag(
        config=True
    )
    session_lifetime = Float(
        7 * 86400.0,
        help="Seconds a browser login (password form, or a link with ?token=) lasts. "
        "Changing the password or role, deleting the user or revoking the token it came "
        "from ends a session sooner.",
    ).tag(config=True)
    login_attempts = Int(
        5,
        help="Password guesses checked per user name within login_window seconds (browser "
        "form, POST /river/api/login and SSH together); more answer 429.",
    ).tag(config=True)
    login_window = Float(
        300.0, help="Seconds over which login_attempts failed guesses are counted."
    ).tag(config=True)
    local_runner = Bool(False, help="Start a runner on this machine (the embedded cluster).").tag(
        config=True
    )
    local_runner_name = Unicode("local", help="Node name of the embedded runner.").tag(config=True)
    local_runner_args = Unicode(
        "", help="Extra arguments for the embedded runner, e.g. '--cpus 0-1'."
    ).tag(config=True)
    shared_dir = Unicode(
        help="Shared storage that runners see too (their --shared-dir): exported environments "
        "go to shared_dir/environments. Default: data_dir/shared."
    ).tag(config=True)
    require_approval = Bool(
        False,
        help="Tasks submitted by users with the `user` role start in pending_approval and wait "
        "for an operator to approve (or reject) them; operators' and admins' tasks do not.",
    ).tag(config=True)
    vps_snapshots_keep = Int(
        3,
        help="Snapshots (docker commit images river-vps/<id>:<n>) kept per VPS, newest first.",
    ).tag(config=True)
    ssh_proxy_port = Int(
        8002,
        help="Port of the SSH proxy into VPSes (`ssh -p PORT <user>+<vps_id>@host`); "
        "0: any free port; -1: no SSH proxy.",
    ).tag(config=True)
    ssh_proxy_address = Unicode(
        "",
        help="Address the SSH proxy listens on; empty: the Jupyter server's own (ServerApp.ip).",
    ).tag(config=True)
    user_mount_prefixes = List(
        Unicode(),
        default_value=[],
        help="Host paths under which users (not only operators) may bind-mount into task "
        "containers, e.g. ['/data']. Mounts elsewhere, and privileged containers, need the "
        "operator role. Runners resolve symlinks before checking. On the command line repeat "
        "the flag: --RiverHost.user_mount_prefixes=/data --RiverHost.user_mount_prefixes=/x.",
    ).tag(config=True)
    environment_cpus = Float(
        2.0, help="CPUs each environment container may use (head node's Docker); 0: no limit."
    ).tag(config=True)
    environment_memory = Unicode(
        "4G", help="Memory (swap included) of each environment container, e.g. 4G; 0: no limit."
    ).tag(config=True)
    environment_pids_limit = Int(
        1024, help="Processes (threads included) per environment container; 0: no limit."
    ).tag(config=True)
    environment_max_per_user = Int(
        3, help="Environment containers one user may have at once (409 beyond); 0: no limit."
    ).tag(config=True)
    environment_exec_timeout = Float(
        1800.0,
        help="Most seconds one environment exec may run (a request may ask less; default "
        "300 s): past it the command is killed and the request answers 504. 0: no limit.",
    ).tag(config=True)
    environment_execs_per_user = Int(
        2, help="Environment execs and exports one user may run at once (429 beyond)."
    ).tag(config=True)
    environment_exec_workers = Int(
        8, help="Environment execs and exports running at once, all users (429 beyond)."
    ).tag(config=True)

    @validate("user_mount_prefixes")
    def _check_mount_prefixes(self, proposal: Any) -> list[str]:
        """Refuse at start what would silently refuse every mount: a shell turns
        --RiverHost.user_mount_prefixes=["/data"] into the one string '[/data]'."""
        for prefix in proposal["value"]:
            if not prefix.startswith("/"):
                raise TraitError(
                    f"c.RiverHost.user_mount_prefixes: {prefix!r} is not an absolute path. On "
                    "the command line give one flag per path "
                    "(--RiverHost.user_mount_prefixes=/data --RiverHost.user_mount_prefixes="
                    "/scratch); in a config file, c.RiverHost.user_mount_prefixes = ['/data']"
                )
        return list(proposal["value"])

    job_port_range = Unicode(
        "29500-29999",
        help="Ports (FIRST-LAST) River hands to host-network jobs (--network host): each "
        "job gets one free on all its members' nodes, released when they end. Reserve the "
        "range for River on the nodes.",
    ).tag(config=True)
    host_network_role = Unicode(
        "operator",
        help="The least role (user, operator, admin) that may submit a host-network job: "
        "its members share their nodes' network stacks (docs/security.md).",
    ).tag(config=True)

    time_limit_default = Dict(
        {},
        help="Run time a task or VPS gets when it names none, by role: e.g. "
        "{'user': '1d'} (seconds or 90m, 2h, 1d). A role without an entry takes the nearest "
        "lower role's; none at all: unlimited (or the role's maximum).",
    ).tag(config=True)
    time_limit_max = Dict(
        {},
        help="Longest run time a role may ask for (--time), e.g. {'user': '7d', "
        "'operator': '30d'}; more is refused with 400 naming the maximum.",
    ).tag(config=True)
    time_limit_grace = Float(
        30.0,
        help="Seconds between SIGTERM and SIGKILL when a task reaches its time limit.",
    ).tag(config=True)

    kernel_lease_seconds = Float(
        30.0,
        help="How long a notebook kernel's lease lives unless renewed (the kernel renews it "
        "every third of this): tasks submitted with --bind-kernel are killed this long "
        "(plus a second) after their kernel shuts down or dies.",
    ).tag(config=True)

    @validate("kernel_lease_seconds")
    def _check_kernel_lease_seconds(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not 1.0 <= value <= 3600.0:
            raise TraitError("c.RiverHost.kernel_lease_seconds must be between 1 and 3600")
        return value

    idle_cull_window = Unicode(
        "",
        help="Stop (with a snapshot) a running VPS whose CPU, and GPUs if it has any, stayed "
        "under idle_cpu_threshold / idle_gpu_threshold for this long, e.g. '2h' (seconds "
        "or 90m, 2h, 1d). Empty or '0': no idle culling (the default). `restart` brings a "
        "culled VPS back; operators may create VPSes with no_cull (docs/vps.md).",
    ).tag(config=True)
    idle_cpu_threshold = Float(
        5.0,
        help="Idle culling: a VPS under this CPU percent (of one core; 100 = one core busy) "
        "counts as idle.",
    ).tag(config=True)
    idle_gpu_threshold = Float(
        5.0,
        help="Idle culling: a VPS whose GPUs are all under this utilisation percent counts "
        "as idle (a VPS without GPUs is judged by its CPU alone).",
    ).tag(config=True)

    @validate("idle_cull_window")
    def _check_idle_cull_window(self, proposal: Any) -> str:
        value = str(proposal["value"]).strip()
        if value not in ("", "0"):
            try:
                parse_duration(value, "idle_cull_window")
            except SpecError as exc:
                raise TraitError(f"c.RiverHost.{exc}") from None
        return value

    def idle_policy(self) -> IdlePolicy:
        """The culling rule from the traits (window 0: off)."""
        window = self.idle_cull_window
        seconds = 0.0 if window in ("", "0") else parse_duration(window, "idle_cull_window")
        return IdlePolicy(seconds, self.idle_cpu_threshold, self.idle_gpu_threshold)

    priority_max = Dict(
        dict(DEFAULT_PRIORITY_MAX),
        help="Highest --priority each role may ask for, e.g. {'user': 10, 'operator': 100}; "
        "more is refused with 400 naming the maximum. A role without an entry takes the "
        "nearest lower role's. Anyone may ask for a lower priority (down to -1000).",
    ).tag(config=True)
    preempt_grace = Float(
        30.0,
        help="Seconds a displaced preemptible task has between its checkpoint SIGTERM and "
        "SIGKILL before it is requeued.",
    ).tag(config=True)

    fair_share = Bool(
        True,
        help="Order the queue between users by recent usage, lightest first (FIFO within "
        "one user; quotas stay hard caps). Off: plain FIFO with backfill.",
    ).tag(config=True)
    fair_share_half_life = Float(
        7 * 86400.0,
        help="Seconds after which a user's recorded usage counts half (fair share's decay).",
    ).tag(config=True)
    fair_share_gpu_weight = Float(
        10.0,
        help="How many core-seconds one GPU-second counts as in a user's fair-share usage.",
    ).tag(config=True)

    history_step = Float(
        10.0,
        help="Seconds between the points of each node's metrics history (the panel's charts).",
    ).tag(config=True)
    history_keep = Float(
        86400.0,
        help="Seconds a node's history keeps every point; older ones are averaged into "
        "buckets of history_coarse_step seconds.",
    ).tag(config=True)
    history_coarse_step = Float(
        600.0, help="Seconds each averaged (older) point of a node's history covers."
    ).tag(config=True)
    history_coarse_keep = Float(
        30 * 86400.0, help="Seconds averaged node history is kept; older points are dropped."
    ).tag(config=True)
    usage_history_keep = Float(
        90 * 86400.0, help="Seconds the per-user hourly usage history is kept."
    ).tag(config=True)

    @validate("time_limit_default", "time_limit_max")
    def _check_time_limits(self, proposal: Any) -> dict:
        name = proposal["trait"].name
        try:
            TimeLimits(
                **{"default" if name.endswith("default") else "maximum": proposal["value"]}
            ).checked()
        except Exception as exc:
            raise TraitError(f"c.RiverHost.{name}: {exc}") from None
        return dict(proposal["value"])

    @validate("job_port_range")
    def _check_job_port_range(self, proposal: Any) -> str:
        try:
            parse_range(proposal["value"])
        except ValueError as exc:
            raise TraitError(f"c.RiverHost.{exc}") from None
        return str(proposal["value"])

    @validate("host_network_role")
    def _check_host_network_role(self, proposal: Any) -> str:
        if proposal["value"] not in ("user", "operator", "admin"):
            raise TraitError(
                "c.RiverHost.host_network_role must be user, operator or admin, "
                f"not {proposal['value']!r}"
            )
        return str(proposal["value"])

    overlay_enabled = Bool(
        False,
        help="Run the VXLAN overlay hub: give each runner that registers with --overlay-ip a "
        "subnet and a VXLAN to this host, and route between them (needs root or "
        "CAP_NET_ADMIN; see docs/overlay.md).",
    ).tag(config=True)
    overlay_subnet = Unicode(
        "10.128.0.0/12/6/14",
        help="Overlay layout BASE/PREFIX/NODE_BITS/SUBNET_BITS: the overlay is BASE/PREFIX, "
        "runner i gets subnet i of PREFIX+NODE_BITS bits (2**NODE_BITS - 1 runners).",
    ).tag(config=True)
    overlay_underlay_ip = Unicode(
        help="This host's address on the network runners reach it by: their VXLAN remote."
    ).tag(config=True)
    overlay_mtu = Int(1450, help="MTU of overlay links (underlay MTU minus 50).").tag(config=True)
    overlay_vxlan_base = Int(100, help="Runner i's VXLAN id is overlay_vxlan_base + i.").tag(
        config=True
    )
    overlay_direct = Bool(
        True,
        help="Direct runner-to-runner overlay paths (no hairpin through the host) between "
        "runners that reach each other; a runner started with --no-overlay-direct, and every "
        "runner when this is False, uses the host's hub only.",
    ).tag(config=True)
    overlay_release_after = Float(
        0.0,
        help="Seconds a runner may stay offline before its overlay allocation (index, subnet, "
        "host links, reservations) is released; 0 keeps allocations until an operator "
        "releases them.",
    ).tag(config=True)

    # ---- bounds on what one user can grow (docs/security.md, "Limits") ------------------
    max_request_body = Int(
        16 * 1024 * 1024,
        help="Largest request body the Jupyter server reads, in bytes (River sets "
        "ServerApp.max_body_size to it unless that is configured): Tornado reads a body "
        "before any handler checks who sent it. Blob uploads authenticate first and then "
        "may send up to blob_max_bytes.",
    ).tag(config=True)
    task_spec_max_bytes = Int(
        1024 * 1024,
        help="Largest task program (script, command and env together, as JSON) accepted, in "
        "bytes; larger ones get 413 (push files or use shared storage instead).",
    ).tag(config=True)
    max_tasks_per_user = Int(
        1000,
        help="Unfinished (queued, pending, placed) tasks one user may have; more get 429.",
    ).tag(config=True)
    log_max_bytes = Int(
        64 * 1024 * 1024,
        help="Stored output per task, in bytes; past it lines are dropped and one note "
        "'log truncated at N bytes' ends the log (the task runs on).",
    ).tag(config=True)
    blob_user_max_bytes = Int(
        1024**3,
        help="All blobs of one user's tasks together, in bytes; an upload past it gets 413.",
    ).tag(config=True)
    data_user_max_bytes = Int(
        8 * 1024**3,
        help="The data plane (pushed values, pulled results): all blobs one user holds, in "
        "bytes; an upload past it gets 413 before a byte is stored.",
    ).tag(config=True)
    data_task_max_bytes = Int(
        4 * 1024**3,
        help="The data plane: one task's pushed values together, and its pulled values, in "
        "bytes; more gets 413 before a byte is stored.",
    ).tag(config=True)
    data_retention = Float(
        7 * 24 * 3600.0,
        help="Seconds a finished task's pulled values and an unused uploaded blob are kept.",
    ).tag(config=True)
    max_event_streams_per_user = Int(
        32,
        help="Concurrent event streams (GET /river/api/events) per user; more get 429.",
    ).tag(config=True)
    max_tunnels_per_user = Int(
        32,
        help="Open WebSocket streams into containers per user (each `river forward` "
        "connection, each `river attach` terminal); more get 429.",
    ).tag(config=True)
    max_reservations_per_user = Int(
        64,
        help="Overlay IP reservations one user may hold at once; more get 429.",
    ).tag(config=True)
    ssh_max_connections = Int(
        256,
        help="Concurrent connections the SSH proxy serves in all (one thread each); more "
        "are closed at once.",
    ).tag(config=True)
    ssh_max_relays_per_user = Int(
        32,
        help="Concurrent SSH sessions and port forwards one user may relay through the SSH "
        "proxy (one thread each); more are refused.",
    ).tag(config=True)

    # ---- River as a JupyterHub service (docs/jupyterhub.md) ------------------------------
    hub_api_url = Unicode(
        "",
        help="The Hub's API as River reaches it, e.g. http://127.0.0.1:8081/hub/api. Set: "
        "River trusts that Hub's users (OAuth login, Hub API tokens); its service token is "
        "read from the environment variable JUPYTERHUB_API_TOKEN, never from a flag. Empty: "
        "no Hub (River's own logins only).",
    ).tag(config=True)
    hub_public_url = Unicode(
        "",
        help="The Hub as browsers reach it (where the OAuth login page is), e.g. "
        "https://hub.lab.example. Empty: the scheme and host of hub_api_url.",
    ).tag(config=True)
    hub_service_name = Unicode(
        "river", help="River's name in c.JupyterHub.services (its OAuth client is service-NAME)."
    ).tag(config=True)
    hub_oauth_redirect_uri = Unicode(
        "",
        help="The oauth_redirect_uri registered for River at the Hub. Empty: "
        "<public_url or this server's URL>river/hub/oauth_callback.",
    ).tag(config=True)
    hub_cache_seconds = Int(
        30,
        help="Seconds a Hub token check is cached: a revoked or expired Hub token (or a "
        "changed group) reaches River within this time.",
    ).tag(config=True)
    hub_admin_role = Unicode(
        "admin", help="The River role of a Hub admin (viewer, user, operator or admin)."
    ).tag(config=True)
    hub_group_roles = Dict(
        value_trait=Unicode(),
        default_value={},
        help="Hub group -> River role, e.g. {'gpu-ops': 'operator', 'guests': 'viewer'}. A "
        "Hub user gets the highest role of their groups and admin flag; `user` when none "
        "maps. Re-read at every login and token check.",
    ).tag(config=True)
    hub_session_lifetime = Float(
        3600.0,
        help="Seconds a browser login through the Hub lasts before the browser goes round "
        "the Hub again (silently while logged in there), which re-reads the role.",
    ).tag(config=True)

    hub_servers_port = Int(
        0,
        help="Port of River's JupyterHub-servers listener: the Hub proxy's target for "
        "RiverSpawner servers (/user/<name>/ only, never River's UI or API; "
        "docs/jupyterhub.md). 0: no listener (no RiverSpawner).",
    ).tag(config=True)
    hub_servers_address = Unicode(
        "127.0.0.1",
        help="Address the JupyterHub-servers listener binds: where the Hub's proxy reaches "
        "it (loopback when the Hub runs on River's machine). Only the Hub's proxy should.",
    ).tag(config=True)

    def _hub_identity(self) -> Any:
        """The Hub as an identity source, or None without c.RiverHost.hub_api_url."""
        if not self.hub_api_url:
            return None
        from river_server.hub import HubIdentity, HubSettings

        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise TraitError(
                "c.RiverHost.hub_api_url is set but JUPYTERHUB_API_TOKEN is not: start the "
                "host with River's service token (c.JupyterHub.services[...]['api_token']) in "
                "that environment variable"
            )
        public = self.hub_public_url or self.hub_api_url
        server = self.serverapp
        base_url = server.base_url if server is not None else "/"
        own_url = self.public_url or (server.connection_url if server is not None else "/")
        redirect = self.hub_oauth_redirect_uri or (
            own_url.rstrip("/") + "/river/hub/oauth_callback"
        )
        settings = HubSettings(
            api_url=self.hub_api_url,
            api_token=token,
            public_url=public,
            service_name=self.hub_service_name,
            cache_seconds=self.hub_cache_seconds,
            admin_role=self.hub_admin_role,
            group_roles=dict(self.hub_group_roles),
            session_lifetime=self.hub_session_lifetime,
        )
        try:
            return HubIdentity(settings, self.river.sessions, self.river.db, base_url, redirect)
        except ValueError as exc:
            raise TraitError(str(exc)) from None

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
        with open_private(path, "w") as handle:
            handle.write(token)
        return token

    def _environment_limits(self) -> EnvironmentLimits:
        try:
            memory = parse_memory(self.environment_memory or 0)
        except SpecError as exc:
            raise TraitError(f"c.RiverHost.environment_memory: {exc}") from None
        return EnvironmentLimits(
            cpus=max(0.0, self.environment_cpus),
            memory=memory,
            pids=self.environment_pids_limit,
            per_user=self.environment_max_per_user,
            exec_timeout=max(0.0, self.environment_exec_timeout),
            execs_per_user=max(1, self.environment_execs_per_user),
            exec_workers=max(1, self.environment_exec_workers),
        )

    def initialize_settings(self) -> None:
        data_dir = make_private(Path(self.data_dir))
        config = HostConfig(
            data_dir=data_dir,
            db_url=self.db_url or f"sqlite:///{data_dir / 'river.db'}",
            runner_token=self._runner_token(data_dir),
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_misses=self.heartbeat_misses,
            backfill_window=self.backfill_window,
            admin_user=self.admin_user,
            session_lifetime=self.session_lifetime,
            blob_max_bytes=self.blob_max_bytes,
            shared_dir=Path(self.shared_dir) if self.shared_dir else data_dir / "shared",
            user_mount_prefixes=tuple(self.user_mount_prefixes),
            environment_limits=self._environment_limits(),
            require_approval=self.require_approval,
            vps_snapshots_keep=self.vps_snapshots_keep,
            kernel_lease_seconds=self.kernel_lease_seconds,
            task_spec_max_bytes=self.task_spec_max_bytes,
            max_tasks_per_user=self.max_tasks_per_user,
            log_max_bytes=self.log_max_bytes,
            blob_user_max_bytes=self.blob_user_max_bytes,
            data_user_max_bytes=self.data_user_max_bytes,
            data_task_max_bytes=self.data_task_max_bytes,
            data_retention=self.data_retention,
            max_event_streams_per_user=self.max_event_streams_per_user,
            max_tunnels_per_user=self.max_tunnels_per_user,
            max_reservations_per_user=self.max_reservations_per_user,
            ssh_max_connections=self.ssh_max_connections,
            ssh_max_relays_per_user=self.ssh_max_relays_per_user,
            job_port_range=self.job_port_range,
            host_network_role=self.host_network_role,
            fair_share=FairShareSettings(
                enabled=self.fair_share,
                half_life=max(1.0, self.fair_share_half_life),
                gpu_weight=max(0.0, self.fair_share_gpu_weight),
            ),
            time_limits=TimeLimits(
                self.time_limit_default, self.time_limit_max, self.time_limit_grace
            ),
            priorities=Priorities(self.priority_max, self.preempt_grace),
            history=HistorySettings(
                step=max(0.5, self.history_step),
                fine_keep=max(self.history_step, self.history_keep),
                coarse_step=max(self.history_step, self.history_coarse_step),
                coarse_keep=max(0.0, self.history_coarse_keep),
                usage_keep=max(HOUR, self.usage_history_keep),
            ),
            overlay=OverlaySettings(
                enabled=self.overlay_enabled,
                subnet=self.overlay_subnet,
                underlay_ip=self.overlay_underlay_ip,
                mtu=self.overlay_mtu,
                vxlan_base=self.overlay_vxlan_base,
                release_after=self.overlay_release_after,
                direct=self.overlay_direct,
            ),
        )
        config.max_request_body = self._bound_request_bodies()
        config.upgrade_db = self.upgrade_db
        config.db_loop_guard = self.db_loop_guard
        try:
            self.river = River(config, log=self.log)
            if config.db_url.startswith("sqlite:///"):  # one host per SQLite file
                db_file = Path(config.db_url.removeprefix("sqlite:///"))
                if db_file.is_absolute():
                    self.river.leadership.claim_file(db_file)
        except (SchemaError, SecondHostError) as exc:
            # Jupyter logs an extension's exception and serves on without it; a host with
            # no usable database must not look up, so stop the whole server.
            self.log.critical("River cannot start: %s", exc)
            raise SystemExit(3) from None
        LOGIN_THROTTLE.configure(self.login_attempts, self.login_window)
        try:
            ensure_user(self.river.sessions, self.admin_user, "admin")
        except ValueError as exc:  # the name belonged to a deleted account
            self.log.error("River: %s; set c.RiverHost.admin_user to another name", exc)
        self.settings.update({"river": self.river, "river_hub": self._hub_identity()})
        self._runner_process: subprocess.Popen | None = None

    def _bound_request_bodies(self) -> int:
        """Lower the server's 512 MiB default body size (read before authentication) to
        max_request_body. Extensions load before the HTTP server is made, so this holds
        from the first request; an explicit ServerApp.max_body_size wins."""
        server = self.serverapp
        if server is None:
            return self.max_request_body
        configured = server.config.get("ServerApp", {})
        if "max_body_size" not in configured:
            server.max_body_size = self.max_request_body
        return int(server.max_body_size)

    def initialize_handlers(self) -> None:
        self.handlers.extend(
            [
                (rf"{API}/nodes", api.NodesHandler),
                (rf"{API}/share", share_handlers.ShareHandler),
                (rf"{API}/nodes/([^/]+)/history", history_handlers.NodeHistoryHandler),
                (rf"{API}/usage/history", history_handlers.UsageHistoryHandler),
                (rf"{API}/leases", lease_handlers.LeasesHandler),
                (rf"{API}/leases/([^/]+)/(renew|release)", lease_handlers.LeaseActionHandler),
                (rf"{API}/tasks", api.TasksHandler),
                (rf"{API}/tasks/([^/]+)", api.TaskHandler),
                (rf"{API}/tasks/([^/]+)/(kill|pause|resume)", api.TaskActionHandler),
                (rf"{API}/tasks/([^/]+)/(approve|reject)", accounts.TaskApprovalHandler),
                (rf"{API}/tasks/([^/]+)/logs", api.TaskLogsHandler),
                (rf"{API}/tasks/([^/]+)/transitions", transition_handlers.TaskTransitionsHandler),
                (rf"{API}/tasks/([^/]+)/attach", streams.AttachSocket),
                (rf"{API}/tasks/([^/]+)/blobs", blob_handlers.TaskBlobsHandler),
                (rf"{API}/tasks/([^/]+)/blobs/([^/]+)", blob_handlers.TaskBlobHandler),
                (rf"{API}/tasks/([^/]+)/pulled", data_handlers.TaskPulledHandler),
                (rf"{API}/data", data_handlers.DataCheckHandler),
                (rf"{API}/tasks/([^/]+)/files/put", file_handlers.TaskFilePutHandler),
                (rf"{API}/tasks/([^/]+)/files/get", file_handlers.TaskFileGetHandler),
                (rf"{API}/data/([^/]+)", data_handlers.DataBlobHandler),
                (rf"{API}/events", events.EventsHandler),
                (rf"{API}/vps", vps_handlers.VpsListHandler),
                (rf"{API}/vps/([^/]+)", vps_handlers.VpsHandler),
                (rf"{API}/vps/([^/]+)/terminal", vps_handlers.VpsTerminalHandler),
                (rf"{API}/vps/([^/]+)/exec", vps_handlers.VpsExecHandler),
                (rf"{API}/vps/([^/]+)/forward/([^/]+)", streams.ForwardSocket),
                (rf"{API}/vps/([^/]+)/apps", vps_handlers.VpsAppsHandler),
                (rf"{API}/vps/([^/]+)/snapshots", vps_handlers.VpsSnapshotsHandler),
                (rf"{API}/vps/([^/]+)/snapshots/([^/]+)", vps_handlers.VpsSnapshotHandler),
                (
                    rf"{API}/vps/([^/]+)/(stop|restart|pause|resume|snapshot)",
                    vps_handlers.VpsActionHandler,
                ),
                (rf"{API}/environments", environments.EnvironmentsHandler),
                (rf"{API}/environments/([^/]+)", environments.EnvironmentHandler),
                (
                    rf"{API}/environments/([^/]+)/(export|exec)",
                    environments.EnvironmentActionHandler,
                ),
                (rf"{API}/me", accounts.MeHandler),
                (rf"{API}/login", accounts.LoginHandler),
                (rf"{API}/users", accounts.UsersHandler),
                (rf"{API}/users/([^/]+)", accounts.UserHandler),
                (rf"{API}/tokens", accounts.TokensHandler),
                (rf"{API}/tokens/([^/]+)", accounts.TokenHandler),
                (rf"{API}/invitations", accounts.InvitationsHandler),
                (rf"{API}/invitations/redeem", accounts.RedeemHandler),
                (rf"{API}/invitations/([^/]+)", accounts.InvitationHandler),
                (rf"{API}/groups", accounts.GroupsHandler),
                (rf"{API}/groups/([^/]+)", accounts.GroupHandler),
                (rf"{API}/groups/([^/]+)/members/([^/]+)", accounts.GroupMemberHandler),
                (rf"{API}/openapi\.json", accounts.OpenAPIHandler),
                (rf"{API}/overlay", overlay_handlers.OverlayHandler),
                (rf"{API}/overlay/allocations/([^/]+)", overlay_handlers.AllocationHandler),
                (rf"{API}/overlay/reservations", overlay_handlers.ReservationsHandler),
                (rf"{API}/overlay/reservations/release", overlay_handlers.ReleaseByTokenHandler),
                (rf"{API}/overlay/reservations/([^/]+)", overlay_handlers.ReservationHandler),
                (rf"{API}/runner/register", runner.RegisterHandler),
                (rf"{API}/runner/heartbeat", runner.HeartbeatHandler),
                (rf"{API}/runner/events", runner.RunnerEventsHandler),
                (rf"{API}/runner/data/([^/]+)", data_handlers.RunnerDataHandler),
                (rf"{API}/runner/tasks/([^/]+)/pulled", data_handlers.RunnerPulledHandler),
                (rf"{API}/runner/tasks/([^/]+)/files", file_handlers.RunnerFilesHandler),
                (PROXY_ROUTE, RiverProxyHandler),
            ]
        )
        self.handlers.extend(join_page.handlers())
        if self.settings.get("river_hub") is not None:
            from river_server import hub_handlers

            self.handlers.extend(hub_handlers.handlers())

    def _load_jupyter_server_extension(self, serverapp) -> None:  # noqa: ANN001
        super()._load_jupyter_server_extension(serverapp)
        # Default-deny for every handler of the whole server, whichever extension made it
        # (river_server/route_policy.py): the one place that sees them all.
        route_policy.install(serverapp.web_app, serverapp.base_url, self.log)

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # noqa: ANN001
        keep_token_out_of_pages(serverapp.web_app.settings)
        leadership = self.river.leadership
        leadership.url = (self.public_url or serverapp.connection_url).rstrip("/")
        interval_ms = max(100.0, self.heartbeat_interval * 1000 / 2)
        self.river.db.bind()  # worker threads hand events and wake-ups back to this loop
        self._liveness = PeriodicCallback(self.river.nodes.check_liveness_off_loop, interval_ms)
        if await asyncio.to_thread(leadership.try_lead):
            self._lead()
        else:
            self.log.warning(
                "River: standing by (serving reads); the leader is %s", leadership.leader_url()
            )
        if leadership.shared:
            self._leader_check = PeriodicCallback(
                self._check_leadership, max(100.0, self.leader_retry_interval * 1000)
            )
            self._leader_check.start()
        every = sweep_interval(self.river.config.data_retention)
        self._data_sweep = PeriodicCallback(self._sweep_data, every * 1000)
        self._data_sweep.start()
        # VPSes at their time limit are stopped with a snapshot (leader only; from the DB).
        river = self.river
        timer = VpsLimitTimer(river.sessions, river.db, river.vps, lambda: leadership.is_leader)
        self._vps_limits = PeriodicCallback(timer.tick, VPS_LIMIT_TICK_S * 1000)
        self._vps_limits.start()
        # Idle VPSes are stopped with a snapshot (leader only; judged from the DB's record).
        culler = IdleCuller(
            river.sessions,
            river.db,
            river.vps,
            river.connections,
            self.idle_policy(),
            lambda: leadership.is_leader,
        )
        self._idle_cull = PeriodicCallback(culler.tick, VPS_LIMIT_TICK_S * 1000)
        self._idle_cull.start()
        # Tasks of kernels that went away (lapsed leases) are killed (leader only; DB-driven).
        self._lease_sweep = PeriodicCallback(
            lambda: river.leases.sweep() if leadership.is_leader else None,
            LEASE_SWEEP_S * 1000,
        )
        self._lease_sweep.start()
        self._start_ssh_proxy(serverapp)
        self._start_hub_servers(serverapp)
        if self.local_runner:
            self._start_local_runner(serverapp)

    def _lead(self) -> None:
        """Start what only the leader runs: liveness, the dispatcher, the overlay hub."""
        self._liveness.start()
        self.river.dispatcher.wake()
        self.river.overlay.start()

    async def _check_leadership(self) -> None:
        """Standby: try the lock (takeover); leader: make sure it still holds it."""
        leadership = self.river.leadership
        try:
            if leadership.is_leader:
                if not await asyncio.to_thread(leadership.still_leads):
                    self._liveness.stop()
                    self.river.step_down()
            elif await asyncio.to_thread(leadership.try_lead):
                self.river.take_over()
                self._lead()
        except Exception:  # the database is unreachable: try again next tick
            self.log.exception("River: leadership check failed")

    async def _sweep_data(self) -> None:
        """Drop data-plane blobs past their retention that no unfinished task needs."""
        if not self.river.leadership.is_leader:
            return  # a standby reads the shared data dir; only the leader cleans it
        live, in_use = await self.river.db.read(digests_in_use, self.river.sessions)
        removed = self.river.data.sweep(live, in_use)
        if removed:
            self.log.info("River data plane: removed %d expired blob(s)", removed)

    def _start_ssh_proxy(self, serverapp) -> None:  # noqa: ANN001
        """Start the SSH proxy; a port already taken is logged, not fatal (SSH is one way in
        of several, and the rest of River should not go down with it)."""
        if self.ssh_proxy_port < 0:
            return
        address = self.ssh_proxy_address or serverapp.ip or "0.0.0.0"
        proxy = self.river.make_ssh_proxy(address, self.ssh_proxy_port, Path(self.data_dir))
        try:
            proxy.start()
        except OSError as exc:
            self.log.error(
                "River SSH proxy: cannot listen on %s:%s (%s); set c.RiverHost.ssh_proxy_port",
                address,
                self.ssh_proxy_port,
                exc,
            )
            return
        self.river.attach_ssh_proxy(proxy)

    def _start_hub_servers(self, serverapp) -> None:  # noqa: ANN001
        """The JupyterHub-servers listener (river_server/hub_servers.py), when configured;
        a port already taken is logged, as for the SSH proxy."""
        self._hub_servers = None
        if self.hub_servers_port <= 0:
            return
        from river_server import hub_servers

        try:
            self._hub_servers = hub_servers.listen(
                serverapp.web_app.settings, self.hub_servers_address, self.hub_servers_port
            )
        except OSError as exc:
            self.log.error(
                "River JupyterHub servers: cannot listen on %s:%s (%s); set "
                "c.RiverHost.hub_servers_port",
                self.hub_servers_address,
                self.hub_servers_port,
                exc,
            )
            return
        self.log.info(
            "River JupyterHub servers listen on %s:%s",
            self.hub_servers_address,
            self.hub_servers_port,
        )

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
            "--name",
            self.local_runner_name,
            "--port",
            str(port),
            "--backend",
            "process",
            "--data-dir",
            str(Path(self.data_dir) / "runners" / self.local_runner_name),
            "--shared-dir",  # same machine: the host's shared dir (environments, /shared)
            str(self.river.config.shared_dir),
            *self.local_runner_args.split(),
        ]
        self.log.info("starting the embedded runner %s on port %d", self.local_runner_name, port)
        self._runner_process = subprocess.Popen(
            command, start_new_session=True, env=local_runner_env(self.river.config.runner_token)
        )

    async def stop_extension(self) -> None:
        if self.river.ssh_proxy is not None:
            self.river.ssh_proxy.stop()
        if getattr(self, "_hub_servers", None) is not None:
            self._hub_servers.stop()
        for callback in (
            *("_liveness", "_leader_check", "_data_sweep"),
            *("_vps_limits", "_idle_cull", "_lease_sweep"),
        ):
            periodic = getattr(self, callback, None)
            if periodic:
                periodic.stop()
        process = getattr(self, "_runner_process", None)
        if process and process.poll() is None:
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 10)
            except asyncio.TimeoutError:
                process.kill()
        await self.river.close()
