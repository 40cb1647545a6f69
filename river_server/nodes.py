"""Node registry: runner registration, heartbeats, offline detection and reconciliation.

A node is online only while this host process holds a live connection record for it (its
URL and the secret to call it with, learned at registration). After a host restart every
node must register again; until it does, and after `heartbeat_misses` missed beats, it is
offline and the tasks it held are `lost`.

Database work runs on the DB writer thread (river_server/dbwork.py): the handlers and the
liveness timer await it. The in-memory connection table is read and written from both the
loop and that one writer thread: writers replace whole entries or set single attributes,
and readers iterate over copies (`list(...)`), so neither sees a dict change under it.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from river_runner.protocol import EVENT_NODE, TaskState
from river_server import db, history
from river_server.auth import hash_secret, new_secret, secrets_match
from river_server.capacity import free_resources
from river_server.dbwork import DbWork
from river_server.events import EventBus
from river_server.history import HistorySettings
from river_server.serialize import node_json
from river_server.time_limits import overdue as past_limit
from river_server.time_limits import timeout_reason

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from river_server.dispatcher import Dispatcher
    from river_server.overlay import OverlayService
    from river_server.tasks import TaskService


class RegistrationError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


FULL_RECONCILE_SECONDS = 10.0  # compare with the DB at least this often per node
METRICS_FLUSH_SECONDS = 10.0  # how often live metrics are written to the DB


@dataclass
class Connection:
    """What this host process knows of a live runner. Heartbeats update it in memory;
    the DB is touched only when something changes (or, for metrics, every few seconds)."""

    name: str
    url: str
    secret: str  # presented to the runner on every call
    last_seen: float
    metrics: dict[str, Any] = field(default_factory=dict)
    gpus: list[dict[str, Any]] | None = None
    last_report: frozenset[str] = frozenset()
    last_reconcile: float = 0.0
    dirty: bool = False
    # Whether the runner runs VM VPSes (its probe's answer at registration): kept with the
    # live connection, not in the database, as it is a fact of the running runner process.
    vm: dict[str, Any] = field(default_factory=lambda: dict(NO_VM))
    # The runner's River version as it registered (admins compare nodes after an upgrade).
    version: str | None = None
    # Each running task's CPU percent (of one core) in the last beat, for idle culling
    # (river_server/idle_cull.py); kept in memory: only the leader's culler reads it.
    task_cpu: dict[str, float] = field(default_factory=dict)


def task_cpu_report(value: Any) -> dict[str, float]:
    """A beat's per-task CPU figures, kept only where well formed and bounded (a runner's
    bad report must not grow the host's memory or break its culler)."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, float] = {}
    for task_id, percent in list(value.items())[:MAX_TASK_CPU]:
        if isinstance(task_id, str) and isinstance(percent, int | float) and percent >= 0:
            out[task_id] = float(percent)
    return out


MAX_TASK_CPU = 1024
NO_VM = {"ok": False, "reason": "the node's runner is not connected", "accel": "off"}


def vm_fact(body: dict[str, Any]) -> dict[str, Any]:
    """The `vm` a runner registers with, checked: ok, a reason (at most 500 characters)."""
    given = body.get("vm")
    if not isinstance(given, dict):
        return {"ok": False, "reason": "the runner does not report VM support", "accel": "off"}
    return {
        "ok": given.get("ok") is True,
        "reason": str(given.get("reason") or "")[:500],
        "accel": str(given.get("accel") or "off")[:16],
    }


class NodeConnections:
    """The live runners of this host process, by node name. The registry writes it; the
    task service, dispatcher, overlay hub, VPS service and proxies read it. A table of its
    own so that those readers need not hold the registry (which needs them: a cycle)."""

    def __init__(self) -> None:
        self.live: dict[str, Connection] = {}

    def get(self, name: str) -> Connection | None:
        return self.live.get(name)

    def is_online(self, name: str) -> bool:
        return name in self.live

    def vm_nodes(self) -> set[str]:
        """Connected nodes whose runner runs VMs."""
        return {name for name, c in self.live.items() if c.vm.get("ok")}

    def no_vm_reason(self) -> str:
        """Why no connected node runs VMs: each node's own reason, or that none is up."""
        if not self.live:
            return "no node is online to run a VM"
        reasons = "; ".join(
            f"{name}: {c.vm.get('reason')}" for name, c in sorted(self.live.items())
        )
        return f"no node here runs virtual machines ({reasons})"


def _check_lengths(**values: str) -> None:
    """Refuse what the nodes table cannot hold: PostgreSQL rejects a string longer than its
    column (a 500 from deep in the commit), where SQLite would silently store it."""
    for column, value in values.items():
        limit = db.Node.__table__.c[column].type.length
        if limit is not None and len(value) > limit:
            raise RegistrationError(
                400, f"registration {column} is {len(value)} characters; at most {limit}"
            )


class NodeRegistry:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        bus: EventBus,
        connections: NodeConnections,
        tasks: TaskService,
        dispatcher: Dispatcher,
        overlay: OverlayService,
        log: logging.Logger,
        runner_token: str,
        heartbeat_interval: float,
        heartbeat_misses: int,
        boot_id: str,
        *,
        work: DbWork,
        leading: Callable[[], bool] = lambda: True,
        history_settings: HistorySettings | None = None,
    ) -> None:
        self.sessions = sessions
        self.work = work
        self.bus = bus
        self.connections = connections
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.overlay = overlay
        self.log = log
        self.runner_token = runner_token
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_misses = heartbeat_misses
        self.boot_id = boot_id
        # A standby has no runner connections: it shows what the leader recorded instead.
        self.leading = leading
        self._connections = connections.live
        self._credentials: dict[str, str] = {}  # credential digest -> node name
        self._last_flush = time.monotonic()
        self._last_check = time.monotonic()
        self.started_at = time.time()
        self.history = history_settings or HistorySettings()
        self._last_history = 0.0  # monotonic: when the last history point was recorded
        self._last_compact = time.monotonic()

    # ---- queries --------------------------------------------------------------------
    def connection(self, name: str) -> Connection | None:
        return self._connections.get(name)

    def is_online(self, name: str) -> bool:
        return name in self._connections

    def rearm(self, now: float) -> None:
        """Start every deadline afresh from `now` (a takeover): nodes the database shows
        online get heartbeat_misses beats from now to register with this host."""
        self.started_at = now
        self._last_check = time.monotonic()
        self._last_flush = time.monotonic()

    def name_for_credential(self, secret: str) -> str | None:
        """The node a runner credential belongs to (digests cached: beats are frequent)."""
        digest = hash_secret(secret)
        name = self._credentials.get(digest)
        if name is None:
            name = self._lookup_credential(digest)
        return name

    async def credential_owner(self, secret: str) -> str | None:
        """name_for_credential for the loop: a cache miss is looked up on a DB reader."""
        digest = hash_secret(secret)
        name = self._credentials.get(digest)
        if name is None:
            name = await self.work.read(self._lookup_credential, digest)
        return name

    def _lookup_credential(self, digest: str) -> str | None:
        with self.sessions() as session:
            name = session.scalar(select(db.Node.name).where(db.Node.credential_hash == digest))
        if name is not None:
            self._credentials[digest] = name
        return name

    def to_json(self, node: db.Node) -> dict[str, Any]:
        free = free_resources(self.sessions, node.name)
        online = self.is_online(node.name) if self.leading() else node.state == "online"
        data = node_json(node, free, online)
        connection = self._connections.get(node.name)
        data["vm"] = dict(connection.vm) if connection is not None else dict(NO_VM)
        data["version"] = connection.version if connection is not None else None
        if connection is not None and connection.metrics:
            data["metrics"] = connection.metrics
            data["gpus"] = connection.gpus if connection.gpus is not None else data["gpus"]
        return data

    def publish(self, node: db.Node) -> None:
        self.bus.publish(EVENT_NODE, {"node": self.to_json(node)})

    # ---- registration ---------------------------------------------------------------
    def register(self, presented: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        url = body.get("url")
        inbound = body.get("inbound_secret")
        if (
            not isinstance(name, str)
            or not name
            or not isinstance(url, str)
            or not isinstance(inbound, str)
        ):
            raise RegistrationError(400, "registration needs name, url and inbound_secret")
        _check_lengths(name=name, url=url, backend=str(body.get("backend") or "process"))
        join_ok = hmac.compare_digest(presented, self.runner_token)
        issued: str | None = None
        now = time.time()
        with self.sessions.begin() as session:
            node = session.get(db.Node, name)
            if node is not None and not secrets_match(presented, node.credential_hash):
                raise RegistrationError(
                    409 if join_ok else 401,
                    f"node name {name!r} is registered to another runner; present that runner's "
                    "credential, or have an operator remove the node",
                )
            if node is None:
                if not join_ok:
                    raise RegistrationError(401, "unknown runner credential or join token")
                issued = new_secret("rrc")
                node = db.Node(name=name, credential_hash=hash_secret(issued), registered_at=now)
                session.add(node)
            node.url = url
            node.cpus = [int(c) for c in body.get("cpus", [])]
            node.numa = body.get("numa") or [node.cpus]
            node.memory = int(body.get("memory") or 0)
            node.gpus = body.get("gpus") or []
            node.backend = str(body.get("backend") or "process")
            node.state = "online"
            node.last_seen = now
        version = body.get("version")
        self._connections[name] = Connection(
            name,
            url,
            inbound,
            time.monotonic(),
            vm=vm_fact(body),
            version=version[:64] if isinstance(version, str) else None,
        )
        kill = self.reconcile(name, body.get("running") or {})
        # Displacements a previous host process marked but never signalled (preemption.py).
        self.dispatcher.resume(name)
        self.publish(node)
        self.dispatcher.wake()
        return {
            "credential": issued,
            "heartbeat_interval": self.heartbeat_interval,
            "boot_id": self.boot_id,
            "kill": kill,
            # `overlay` (+ `overlay_error`) when the host runs the overlay hub
            **self.overlay.on_register(name, body),
        }

    def heartbeat(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Record a beat; None when this host does not know the runner's address (it must
        register again). Compares the runner's task list with the DB only when it changed
        or every FULL_RECONCILE_SECONDS, so steady beats cost no DB work."""
        due = self._record_beat(name, body)
        if due is None:
            return None
        return self._beat_reply(name, self.reconcile(name, due) if due is not False else [])

    async def beat(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """heartbeat() for the loop: the reconciliation, when due, runs on the DB writer."""
        due = self._record_beat(name, body)
        if due is None:
            return None
        kill = await self.work.write(self.reconcile, name, due) if due is not False else []
        return self._beat_reply(name, kill)

    def _record_beat(self, name: str, body: dict[str, Any]) -> dict[str, str] | bool | None:
        """Update the connection in memory. None: unknown runner; False: nothing to
        reconcile; else the runner's task list, to reconcile with the DB."""
        connection = self._connections.get(name)
        if connection is None:
            return None
        now = time.monotonic()
        connection.last_seen = now
        connection.metrics = body.get("metrics") or {}
        connection.task_cpu = task_cpu_report(body.get("task_cpu"))
        if body.get("gpus") is not None:
            connection.gpus = body["gpus"]
        connection.dirty = True
        running = body.get("running") or {}
        if (
            frozenset(running) != connection.last_report
            or now - connection.last_reconcile > FULL_RECONCILE_SECONDS
        ):
            return running
        return False

    def _beat_reply(self, name: str, kill: list[str]) -> dict[str, Any]:
        return {
            "boot_id": self.boot_id,
            "heartbeat_interval": self.heartbeat_interval,
            "kill": kill,
            # Direct overlay paths (river_runner/overlay_direct.py); absent: overlay off.
            **({} if (peers := self.overlay.peers_of(name)) is None else {"overlay_peers": peers}),
        }

    def flush_metrics(self) -> None:
        """Write live metrics to the DB in one transaction (for restarts and other readers)."""
        dirty = [c for c in list(self._connections.values()) if c.dirty]
        if not dirty:
            return
        now_wall, now_mono = time.time(), time.monotonic()
        rows = []
        for connection in dirty:
            row = {
                "name": connection.name,
                "metrics": connection.metrics,
                "last_seen": now_wall - (now_mono - connection.last_seen),
            }
            if connection.gpus is not None:
                row["gpus"] = connection.gpus
            rows.append(row)
            connection.dirty = False
        with_gpus = [r for r in rows if "gpus" in r]
        without_gpus = [r for r in rows if "gpus" not in r]
        with self.sessions.begin() as session:
            # ORM bulk UPDATE by primary key: one executemany, not one query per node.
            for batch in (with_gpus, without_gpus):
                if batch:
                    session.execute(update(db.Node), batch)

    def record_history(self) -> None:
        """One history point per connected node that reports metrics (history.py); the
        liveness timer calls it every `history.step` seconds, on the leader only."""
        at = time.time()
        points = {
            c.name: history.sample_of(at, c.metrics, c.gpus)
            for c in list(self._connections.values())
            if c.metrics
        }
        if points:
            with self.sessions.begin() as session:
                history.record(session, points)

    def reconcile(self, name: str, running: dict[str, str]) -> list[str]:
        """Compare what a runner runs with what the host expects of it.

        Tasks the host placed there long enough ago that the runner should report them, but
        does not, are lost; tasks the runner reports that the host considers over (or never
        gave it) are to be killed.
        """
        connection = self._connections.get(name)
        if connection is not None:
            connection.last_report = frozenset(running)
            connection.last_reconcile = time.monotonic()
        reported = {int(task_id) for task_id in running}
        grace = 2 * self.heartbeat_interval + 2.0
        now = time.time()
        cutoff = now - grace
        kill: list[str] = []
        tasks = self.tasks
        with self.sessions() as session:
            expected = tasks.active_on(session, name)
            overdue = [
                t
                for t in expected
                if t.id not in reported and (t.started_at or t.assigned_at or 0) < cutoff
            ]
            # A task still `assigning` that the runner does not have never started there
            # (e.g. the host died before the launch call): it goes back to the queue, which
            # cannot run it twice. One that had started and vanished is lost.
            never_started = [t for t in overdue if t.state == TaskState.ASSIGNING.value]
            requeued = [
                t
                for t in never_started
                if tasks.transition(
                    session,
                    t,
                    TaskState.QUEUED,
                    f"runner {name} never received it; requeued",
                    node=None,
                    cpus=[],
                    gpus=[],
                    memory=0,
                    assigned_at=None,
                )
            ]
            vanished = [
                t for t in overdue if t.state != TaskState.QUEUED.value and t not in requeued
            ]
            lost = tasks.mark_lost(session, vanished, f"runner {name} no longer runs this task")
            # Backstop of the runner's own timer (lost with a runner restart): a task it
            # still reports well past limit + grace ends `timeout` here, and is killed there.
            limits = tasks.time_limits
            late = [
                t
                for t in expected
                if t.id in reported
                and not (t.spec or {}).get("vps")
                and past_limit(t.started_at, (t.spec or {}).get("time_limit"), limits.grace, now)
                and tasks.transition(
                    session,
                    t,
                    TaskState.TIMEOUT,
                    timeout_reason(t.spec["time_limit"], limits.grace)
                    + f"; recorded by the host, runner {name} had not ended it",
                )
            ]
            kill.extend(str(t.id) for t in late)
            expected_ids = {t.id for t in expected}
            for task_id in reported - expected_ids:
                kill.append(str(task_id))
            tasks.commit_and_publish(session, [*requeued, *lost, *late])
        return kill

    # ---- liveness -------------------------------------------------------------------
    async def check_liveness_off_loop(self) -> None:
        """The liveness timer's callback: the whole check on the DB writer (the timer
        awaits it, so checks never overlap)."""
        try:
            await self.work.write(self.check_liveness)
        except Exception:
            self.log.exception("liveness check failed")

    def check_liveness(self) -> None:
        """Take nodes offline after missed heartbeats and mark their tasks lost."""
        timeout = self.heartbeat_interval * self.heartbeat_misses
        now = time.monotonic()
        # If this check itself ran late, the host was stalled, not the runners silent:
        # forgive the stall instead of taking healthy nodes offline.
        period = self.heartbeat_interval / 2
        stall = now - self._last_check - period
        self._last_check = now
        if stall > period:
            for connection in list(self._connections.values()):
                connection.last_seen += stall
        if now - self._last_flush > METRICS_FLUSH_SECONDS:
            self._last_flush = now
            self.flush_metrics()
        if now - self._last_history >= self.history.step:
            self._last_history = now
            self.record_history()
        if now - self._last_compact >= self.history.compact_every:
            self._last_compact = now
            with self.sessions.begin() as session:
                history.compact(session, time.time(), self.history)
        for name, connection in list(self._connections.items()):
            if now - connection.last_seen > timeout:
                self._connections.pop(name, None)
                self._take_offline(name, f"no heartbeat for {timeout:.0f}s")
        # Nodes the DB thinks online but that never registered with this host process.
        if time.time() - self.started_at > timeout:
            with self.sessions() as session:
                stale = session.scalars(select(db.Node.name).where(db.Node.state == "online")).all()
            for name in stale:
                if name not in self._connections:
                    self._take_offline(
                        name, f"did not register within {timeout:.0f}s of host start"
                    )

    def _take_offline(self, name: str, why: str) -> None:
        tasks = self.tasks
        with self.sessions() as session:
            node = session.get(db.Node, name)
            if node is None:
                return
            node.state = "offline"
            lost = tasks.mark_lost(
                session, tasks.active_on(session, name), f"node {name} offline: {why}"
            )
            tasks.commit_and_publish(session, lost)
            self.log.warning("node %s offline (%s); %d task(s) lost", name, why, len(lost))
            self.publish(node)

    def all_nodes(self) -> list[db.Node]:
        with self.sessions() as session:
            return list(session.scalars(select(db.Node).order_by(db.Node.name)))
