"""Node registry: runner registration, heartbeats, offline detection and reconciliation.

A node is online only while this host process holds a live connection record for it (its
URL and the secret to call it with, learned at registration). After a host restart every
node must register again; until it does, and after `heartbeat_misses` missed beats, it is
offline and the tasks it held are `lost`.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from river_runner.protocol import EVENT_NODE, TaskState
from river_server import db
from river_server.auth import hash_secret, new_secret, secrets_match
from river_server.serialize import node_json

if TYPE_CHECKING:
    from river_server.services import River


class RegistrationError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Connection:
    """What this host process knows of a live runner."""

    name: str
    url: str
    secret: str  # presented to the runner on every call
    last_seen: float


class NodeRegistry:
    def __init__(self, river: River) -> None:
        self.river = river
        self._connections: dict[str, Connection] = {}
        self.started_at = time.time()

    # ---- queries --------------------------------------------------------------------
    def connection(self, name: str) -> Connection | None:
        return self._connections.get(name)

    def is_online(self, name: str) -> bool:
        return name in self._connections

    def node_for_credential(self, secret: str) -> db.Node | None:
        with self.river.sessions() as session:
            return session.scalar(
                select(db.Node).where(db.Node.credential_hash == hash_secret(secret))
            )

    def to_json(self, node: db.Node) -> dict[str, Any]:
        free = self.river.dispatcher.free_resources(node.name)
        return node_json(node, free, self.is_online(node.name))

    def publish(self, node: db.Node) -> None:
        self.river.bus.publish(EVENT_NODE, {"node": self.to_json(node)})

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
        join_ok = hmac.compare_digest(presented, self.river.config.runner_token)
        issued: str | None = None
        now = time.time()
        with self.river.sessions.begin() as session:
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
        self._connections[name] = Connection(name, url, inbound, time.monotonic())
        kill = self.reconcile(name, body.get("running") or {})
        self.publish(node)
        self.river.dispatcher.wake()
        return {
            "credential": issued,
            "heartbeat_interval": self.river.config.heartbeat_interval,
            "boot_id": self.river.boot_id,
            "kill": kill,
        }

    def heartbeat(self, node: db.Node, body: dict[str, Any]) -> dict[str, Any] | None:
        """Record a beat; None when this host does not know the runner's address (it must
        register again)."""
        connection = self._connections.get(node.name)
        if connection is None:
            return None
        connection.last_seen = time.monotonic()
        with self.river.sessions.begin() as session:
            row = session.get(db.Node, node.name)
            if row is not None:
                row.metrics = body.get("metrics") or {}
                if body.get("gpus") is not None:
                    row.gpus = body["gpus"]
                row.last_seen = time.time()
        kill = self.reconcile(node.name, body.get("running") or {})
        return {
            "boot_id": self.river.boot_id,
            "heartbeat_interval": self.river.config.heartbeat_interval,
            "kill": kill,
        }

    def reconcile(self, name: str, running: dict[str, str]) -> list[str]:
        """Compare what a runner runs with what the host expects of it.

        Tasks the host placed there long enough ago that the runner should report them, but
        does not, are lost; tasks the runner reports that the host considers over (or never
        gave it) are to be killed.
        """
        reported = {int(task_id) for task_id in running}
        grace = 2 * self.river.config.heartbeat_interval + 2.0
        cutoff = time.time() - grace
        kill: list[str] = []
        tasks = self.river.tasks
        with self.river.sessions() as session:
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
            expected_ids = {t.id for t in expected}
            for task_id in reported - expected_ids:
                kill.append(str(task_id))
            tasks.commit_and_publish(session, [*requeued, *lost])
        return kill

    # ---- liveness -------------------------------------------------------------------
    def check_liveness(self) -> None:
        """Take nodes offline after missed heartbeats and mark their tasks lost."""
        config = self.river.config
        timeout = config.heartbeat_interval * config.heartbeat_misses
        now = time.monotonic()
        for name, connection in list(self._connections.items()):
            if now - connection.last_seen > timeout:
                self._connections.pop(name, None)
                self._take_offline(name, f"no heartbeat for {timeout:.0f}s")
        # Nodes the DB thinks online but that never registered with this host process.
        if time.time() - self.started_at > timeout:
            with self.river.sessions() as session:
                stale = session.scalars(select(db.Node.name).where(db.Node.state == "online")).all()
            for name in stale:
                if name not in self._connections:
                    self._take_offline(
                        name, f"did not register within {timeout:.0f}s of host start"
                    )

    def _take_offline(self, name: str, why: str) -> None:
        tasks = self.river.tasks
        with self.river.sessions() as session:
            node = session.get(db.Node, name)
            if node is None:
                return
            node.state = "offline"
            lost = tasks.mark_lost(
                session, tasks.active_on(session, name), f"node {name} offline: {why}"
            )
            tasks.commit_and_publish(session, lost)
            self.river.log.warning("node %s offline (%s); %d task(s) lost", name, why, len(lost))
            self.publish(node)

    def all_nodes(self) -> list[db.Node]:
        with self.river.sessions() as session:
            return list(session.scalars(select(db.Node).order_by(db.Node.name)))
