"""The overlay hub (design §4): runner allocations, the host's VXLAN links, IP reservations.

Allocations: a runner that registers with `overlay_underlay_ip` gets the lowest free index
1 .. 2**NODE_BITS - 1, kept in `overlay_allocations` under its node name, so it keeps its
index, VXLAN id and subnet across host and runner restarts. The registration reply carries
the assignment (river_runner.overlay_spec.OverlayAssignment) as `overlay`.

Host links, per allocated runner *i* (pyroute2, in this process's network namespace):

    rvh-vx<i>  VXLAN id base + i, local = c.RiverHost.overlay_underlay_ip,
               remote = the runner's underlay IP, UDP 4789, enslaved to rvh-br<i>
    rvh-br<i>  bridge holding the host's address on runner i's subnet; forwarding on

so the host routes between runner subnets (hub and spoke). They are converged at start-up
for every stored allocation (a rebooted host needs no runner to come back first), again at
every registration of the runner (repairing anything removed meanwhile), and removed when an
allocation is released (by an operator, or after c.RiverHost.overlay_release_after seconds
offline). Links named rvh-* with no allocation are removed at start-up.

Reservations: a token (shown once; stored as a SHA3-512 digest) that holds one workload
address on one runner's subnet until it expires (TTL) or a task presents it (`ip_token`).
A task that presents it gets the address (`overlay_ip` in its spec, RIVER_OVERLAY_IP in its
environment, `overlay_ip` in its launch) and is pinned to that runner; the token is then
spent and the address is held until the task ends. Reservations are taken from the top of
a subnet down; docker's own address pool is the lower half (river_runner.overlay).
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Float, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column
from tornado.ioloop import PeriodicCallback

from river_runner import netlinks as links
from river_runner.overlay_spec import (
    DEFAULT_MTU,
    DEFAULT_SPEC,
    DEFAULT_VXLAN_BASE,
    OverlayAssignment,
    OverlaySpec,
    OverlaySpecError,
    check_ipv4,
    check_mtu,
    check_vxlan_base,
    gateway_mac,
)
from river_runner.protocol import TERMINAL_STATES
from river_runner.spec import SpecError, parse_target
from river_server import db
from river_server.auth import hash_secret, new_secret, role_at_least
from river_server.capacity import free_resources
from river_server.tasks import TaskError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker

    from river_server.nodes import NodeConnections

log = logging.getLogger("river.overlay")

HOST_BRIDGE = "rvh-br"
HOST_VXLAN = "rvh-vx"
_HOST_LINK_RE = re.compile(rf"^(?:{HOST_BRIDGE}|{HOST_VXLAN})(\d+)$")
TOKEN_PREFIX = "rip"
DEFAULT_TTL = 600.0
MAX_TTL = 7 * 24 * 3600.0
RETAIN_SECONDS = 3600.0  # spent/expired reservations stay listed (and explainable) this long
MAINTENANCE_SECONDS = 30.0
_TERMINAL = tuple(s.value for s in TERMINAL_STATES)


class OverlayError(Exception):
    """A request about the overlay that cannot be honoured; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OverlayAllocation(db.Base):
    """A runner's place on the overlay, kept across restarts."""

    __tablename__ = "overlay_allocations"
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    runner_index: Mapped[int] = mapped_column(Integer, unique=True)
    underlay_ip: Mapped[str] = mapped_column(String(64))
    allocated_at: Mapped[float] = mapped_column(Float, default=time.time)
    registered_at: Mapped[float] = mapped_column(Float, default=time.time)  # last registration


class IpReservation(db.Base):
    __tablename__ = "overlay_reservations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float] = mapped_column(Float)
    task_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


def holds_address(task: db.Task) -> bool:
    """Whether a task keeps its reserved overlay address: while it is not finished, and a
    VPS incarnation for as long as its VPS exists (a stopped VPS restarts at the same
    address; the reservation moves along the chain of incarnations)."""
    if task.state not in _TERMINAL:
        return True
    record = (task.spec or {}).get("vps")
    return task.kind == "vps" and isinstance(record, dict) and not record.get("deleted")


def _holding_tasks(session: Session, task_ids: list[int]) -> set[int]:
    if not task_ids:
        return set()
    tasks = session.scalars(select(db.Task).where(db.Task.id.in_(task_ids)))
    return {task.id for task in tasks if holds_address(task)}


@dataclass
class OverlaySettings:
    enabled: bool = False
    subnet: str = DEFAULT_SPEC
    underlay_ip: str = ""
    mtu: int = DEFAULT_MTU
    vxlan_base: int = DEFAULT_VXLAN_BASE
    release_after: float = 0.0  # seconds offline before an allocation is released; 0: never

    def validate(self) -> OverlaySpec:
        """The parsed subnet; raises OverlaySpecError naming the c.RiverHost setting to fix."""
        try:
            spec = OverlaySpec.parse(self.subnet)
            check_vxlan_base(self.vxlan_base, spec)
            check_mtu(self.mtu)
        except OverlaySpecError as exc:
            raise OverlaySpecError(f"c.RiverHost.overlay_*: {exc}") from None
        if self.enabled:
            if not self.underlay_ip:
                raise OverlaySpecError(
                    "c.RiverHost.overlay_underlay_ip is required with overlay_enabled: the "
                    "host's address that runners' VXLAN tunnels point to"
                )
            self.underlay_ip = check_ipv4(self.underlay_ip, "c.RiverHost.overlay_underlay_ip")
        return spec


def host_link_names(index: int) -> tuple[str, str]:
    return f"{HOST_BRIDGE}{index}", f"{HOST_VXLAN}{index}"


class HostLinks:
    """The host's side of each runner's tunnel (synchronous pyroute2: call off the loop)."""

    def ensure(self, assignment: OverlayAssignment) -> None:
        bridge_name, vxlan_name = host_link_names(assignment.index)
        with links.iproute() as ipr:
            bridge = links.ensure_bridge(
                ipr, bridge_name, assignment.mtu, gateway_mac("host", assignment.index)
            )
            links.ensure_only_address(ipr, bridge, assignment.host_ip, assignment.prefixlen)
            links.ensure_vxlan(
                ipr,
                vxlan_name,
                vxlan_id=assignment.vxlan_id,
                local=assignment.host_underlay_ip,
                remote=assignment.runner_underlay_ip,
                port=assignment.port,
                mtu=assignment.mtu,
                master=bridge,
            )
        links.set_forwarding(bridge_name)

    def remove(self, index: int) -> list[str]:
        removed = []
        with links.iproute() as ipr:
            for name in reversed(host_link_names(index)):
                if links.delete_link(ipr, name):
                    removed.append(name)
        return removed

    def present_indexes(self) -> set[int]:
        """Indexes that have River host links in this namespace."""
        found = set()
        with links.iproute() as ipr:
            for link in ipr.get_links():
                match = _HOST_LINK_RE.match(link.get("IFLA_IFNAME") or "")
                if match:
                    found.add(int(match.group(1)))
        return found

    def describe(self, index: int) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        with links.iproute() as ipr:
            for name in host_link_names(index):
                link = links.link_index(ipr, name)
                if link is not None:
                    facts[name] = links.link_facts(ipr, link)
        return facts


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


class OverlayService:
    """Allocations, host links and reservations; one per host process."""

    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        connections: NodeConnections,
        settings: OverlaySettings,
        max_reservations_per_user: int,
        host_links: HostLinks | None = None,
    ) -> None:
        self.sessions = sessions
        self.connections = connections
        self.max_reservations_per_user = max_reservations_per_user
        self.settings = settings
        self.spec = settings.validate()
        self.links = host_links or HostLinks()
        # Host link states by runner index: "pending", "up" or "error: ...".
        self.link_state: dict[int, str] = {}
        self.problem: str | None = None  # why the host cannot configure links at all
        self._executor: ThreadPoolExecutor | None = None
        self._maintenance: PeriodicCallback | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # ---- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Converge host links to the stored allocations (in the background) and start the
        periodic release of inactive runners and stale reservations."""
        if not self.enabled:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="river-overlay")
        with self.sessions() as session:
            allocations = [
                self.assignment_for(a) for a in session.scalars(select(OverlayAllocation))
            ]
        for assignment in allocations:
            self.link_state[assignment.index] = "pending"
        self._executor.submit(self._converge_all, allocations)
        self._maintenance = PeriodicCallback(self.maintain, MAINTENANCE_SECONDS * 1000)
        self._maintenance.start()

    def close(self) -> None:
        """Stop background work. Links stay: workloads keep talking while the host restarts."""
        if self._maintenance is not None:
            self._maintenance.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
            self._executor = None

    def _converge_all(self, allocations: list[OverlayAssignment]) -> None:
        try:
            links.check_permission()
        except links.OverlayError as exc:
            self.problem = str(exc)
            log.error("overlay: cannot configure host links: %s", exc)
            for assignment in allocations:
                self.link_state[assignment.index] = f"error: {exc}"
            return
        keep = {a.index for a in allocations}
        try:
            for index in sorted(self.links.present_indexes() - keep):
                log.info("overlay: removing links of released runner index %d", index)
                self.links.remove(index)
        except Exception as exc:
            log.error("overlay: could not list or remove stale host links: %s", exc)
        for assignment in allocations:
            self._ensure_now(assignment)

    def _ensure_now(self, assignment: OverlayAssignment) -> None:
        try:
            self.links.ensure(assignment)
        except Exception as exc:
            self.link_state[assignment.index] = f"error: {exc}"
            log.error("overlay: host links for index %d failed: %s", assignment.index, exc)
        else:
            self.link_state[assignment.index] = "up"

    def _ensure_later(self, assignment: OverlayAssignment) -> None:
        if self._executor is None:  # not started (unit tests): do it now
            self._ensure_now(assignment)
            return
        if self.link_state.get(assignment.index) != "up":
            self.link_state[assignment.index] = "pending"
        self._executor.submit(self._ensure_now, assignment)

    def _remove_later(self, index: int) -> None:
        self.link_state.pop(index, None)

        def remove() -> None:
            try:
                self.links.remove(index)
            except Exception as exc:
                log.error("overlay: removing host links of index %d failed: %s", index, exc)

        if self._executor is None:
            remove()
        else:
            self._executor.submit(remove)

    # ---- allocations ----------------------------------------------------------------
    def assignment_for(self, allocation: OverlayAllocation) -> OverlayAssignment:
        return self.spec.assignment(
            allocation.runner_index,
            vxlan_base=self.settings.vxlan_base,
            host_underlay_ip=self.settings.underlay_ip,
            runner_underlay_ip=allocation.underlay_ip,
            mtu=self.settings.mtu,
        )

    def on_register(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Reply fields for a registering runner: `overlay` (its assignment, or None with
        `overlay_error` saying why). Nothing when the overlay is off."""
        if not self.enabled:
            return {}
        underlay = body.get("overlay_underlay_ip")
        if not underlay:
            return {
                "overlay": None,
                "overlay_error": "this runner gave no underlay address; start it with "
                "--overlay-ip ADDRESS to join the overlay",
            }
        try:
            underlay = check_ipv4(underlay, "overlay_underlay_ip")
        except OverlaySpecError as exc:
            return {"overlay": None, "overlay_error": str(exc)}
        now = time.time()
        with self.sessions.begin() as session:
            allocation = session.get(OverlayAllocation, name)
            if allocation is None:
                used = set(session.scalars(select(OverlayAllocation.runner_index)))
                free = next((i for i in range(1, self.spec.max_runners + 1) if i not in used), None)
                if free is None:
                    return {
                        "overlay": None,
                        "overlay_error": f"the overlay is full: all {self.spec.max_runners} "
                        f"runner subnets of {self.spec} are allocated; an operator can release "
                        "one (DELETE /river/api/overlay/allocations/NODE)",
                    }
                allocation = OverlayAllocation(
                    node=name,
                    runner_index=free,
                    underlay_ip=underlay,
                    allocated_at=now,
                    registered_at=now,
                )
                session.add(allocation)
                log.info("overlay: runner %s gets index %d (%s)", name, free, underlay)
            elif allocation.underlay_ip != underlay:
                log.info(
                    "overlay: runner %s moved from %s to %s", name, allocation.underlay_ip, underlay
                )
                allocation.underlay_ip = underlay
            allocation.registered_at = now
        assignment = self.assignment_for(allocation)
        self._ensure_later(assignment)
        return {"overlay": assignment.to_json()}

    def allocation_json(self, allocation: OverlayAllocation) -> dict[str, Any]:
        assignment = self.assignment_for(allocation)
        return {
            "node": allocation.node,
            "index": allocation.runner_index,
            "vxlan_id": assignment.vxlan_id,
            "subnet": assignment.subnet,
            "host_ip": assignment.host_ip,
            "runner_ip": assignment.runner_ip,
            "workload_range": [assignment.workload_first, assignment.workload_last],
            "underlay_ip": allocation.underlay_ip,
            "online": self.connections.is_online(allocation.node),
            "host_links": self.link_state.get(allocation.runner_index, "pending"),
            "allocated_at": allocation.allocated_at,
            "registered_at": allocation.registered_at,
        }

    def overview(self) -> dict[str, Any]:
        """GET /river/api/overlay."""
        with self.sessions() as session:
            rows = list(
                session.scalars(select(OverlayAllocation).order_by(OverlayAllocation.runner_index))
            )
        return {
            "enabled": self.enabled,
            "subnet": str(self.spec),
            "network": str(self.spec.network),
            "max_runners": self.spec.max_runners,
            "host_underlay_ip": self.settings.underlay_ip or None,
            "mtu": self.settings.mtu,
            "vxlan_base": self.settings.vxlan_base,
            "problem": self.problem,
            "allocations": [self.allocation_json(a) for a in rows],
        }

    def release(self, node: str, *, force: bool = False) -> dict[str, Any]:
        """Release a runner's allocation: its host links and reservations go too."""
        if not force and self.connections.is_online(node):
            raise OverlayError(409, f"node {node} is online; stop its runner first (or force=1)")
        with self.sessions.begin() as session:
            allocation = session.get(OverlayAllocation, node)
            if allocation is None:
                raise OverlayError(404, f"node {node} has no overlay allocation")
            data = self.allocation_json(allocation)
            session.delete(allocation)
            session.execute(delete(IpReservation).where(IpReservation.node == node))
        log.info("overlay: released index %d of %s", data["index"], node)
        self._remove_later(data["index"])
        return data

    def release_inactive(self, now: float | None = None) -> list[str]:
        """Release allocations of runners offline for more than release_after seconds."""
        after = self.settings.release_after
        if not self.enabled or after <= 0:
            return []
        now = time.time() if now is None else now
        with self.sessions() as session:
            rows = list(session.scalars(select(OverlayAllocation)))
            seen = {n: t for n, t in session.execute(select(db.Node.name, db.Node.last_seen))}
        released = []
        for allocation in rows:
            if self.connections.is_online(allocation.node):
                continue
            last = max(allocation.registered_at, seen.get(allocation.node) or 0.0)
            if now - last > after:
                try:
                    self.release(allocation.node)
                except OverlayError:
                    continue
                released.append(allocation.node)
        return released

    def maintain(self) -> None:
        try:
            self.release_inactive()
            self.cleanup_reservations()
        except Exception:  # keep the periodic callback alive
            log.exception("overlay maintenance failed")

    # ---- reservations ---------------------------------------------------------------
    def _require_enabled(self) -> None:
        if not self.enabled:
            raise OverlayError(
                409, "the overlay network is off on this host (c.RiverHost.overlay_enabled)"
            )

    def _busy_ips(self, session: Session, node: str, now: float) -> set[str]:
        rows = list(session.scalars(select(IpReservation).where(IpReservation.node == node)))
        task_ids = [r.task_id for r in rows if r.task_id is not None]
        holding = _holding_tasks(session, task_ids)
        return {
            r.ip for r in rows if (r.task_id is None and r.expires_at > now) or r.task_id in holding
        }

    def _pick_node(self, session: Session) -> OverlayAllocation:
        rows = list(session.scalars(select(OverlayAllocation)))
        online = [a for a in rows if self.connections.is_online(a.node)]
        if not online:
            raise OverlayError(
                409, "no online runner has joined the overlay; name a node with node=..."
            )

        def free_cores(a: OverlayAllocation) -> int:
            return int(free_resources(self.sessions, a.node).get("cores") or 0)

        return sorted(online, key=lambda a: (-free_cores(a), a.node))[0]

    def reserve(
        self,
        owner: str,
        *,
        node: str | None = None,
        ttl: float | None = None,
        ip: str | None = None,
    ) -> dict[str, Any]:
        """Hold one workload address; the answer has the token (the only time it is shown)."""
        self._require_enabled()
        try:
            ttl = DEFAULT_TTL if ttl in (None, "") else float(ttl)
        except (TypeError, ValueError):
            raise OverlayError(400, f"ttl must be a number of seconds, not {ttl!r}") from None
        if not 0 < ttl <= MAX_TTL:
            raise OverlayError(400, f"ttl must be more than 0 and at most {MAX_TTL:.0f} seconds")
        now = time.time()
        with self.sessions.begin() as session:
            self._check_reservation_bound(session, owner, now)
            if node:
                allocation = session.get(OverlayAllocation, node)
                if allocation is None:
                    raise OverlayError(404, f"node {node} has not joined the overlay")
            else:
                allocation = self._pick_node(session)
            index = allocation.runner_index
            busy = self._busy_ips(session, allocation.node, now)
            if ip:
                try:
                    wanted = str(ipaddress.IPv4Address(str(ip).strip()))
                except ipaddress.AddressValueError:
                    raise OverlayError(400, f"ip must be an IPv4 address, not {ip!r}") from None
                if not self.spec.is_workload_ip(index, wanted):
                    first, last = self.spec.workload_range(index)
                    raise OverlayError(
                        400,
                        f"{wanted} is not a workload address of node {allocation.node} "
                        f"({first} - {last})",
                    )
                if wanted in busy:
                    raise OverlayError(409, f"{wanted} is already reserved or in use")
            else:
                wanted = self._free_ip(index, busy)
            token = new_secret(TOKEN_PREFIX)
            row = IpReservation(
                token_hash=hash_secret(token),
                ip=wanted,
                node=allocation.node,
                owner=owner,
                created_at=now,
                expires_at=now + ttl,
            )
            session.add(row)
            session.flush()
            data = self.reservation_json(row, now=now)
        return {**data, "token": token}

    def _check_reservation_bound(self, session: Session, owner: str, now: float) -> None:
        """Each held address is a row and a slot of a node's workload range: one user may
        hold at most c.RiverHost.max_reservations_per_user at once (429 past it)."""
        limit = self.max_reservations_per_user
        rows = list(session.scalars(select(IpReservation).where(IpReservation.owner == owner)))
        holding = _holding_tasks(session, [r.task_id for r in rows if r.task_id is not None])
        held = sum(
            1 for r in rows if (r.task_id is None and r.expires_at > now) or r.task_id in holding
        )
        if held >= limit:
            raise OverlayError(
                429,
                f"{owner} already holds {held} overlay addresses, the most one user may "
                f"(c.RiverHost.max_reservations_per_user = {limit}); release some first "
                "(DELETE /river/api/overlay/reservations/ID)",
            )

    def _free_ip(self, index: int, busy: set[str]) -> str:
        first, last = self.spec.workload_range(index)
        address = last
        while address >= first:
            if str(address) not in busy:
                return str(address)
            address -= 1
        raise OverlayError(409, f"every workload address of runner index {index} is taken")

    def reservation_json(
        self, row: IpReservation, *, now: float | None = None, held: bool = False
    ) -> dict[str, Any]:
        """`held`: its task still holds the address (holds_address)."""
        now = time.time() if now is None else now
        if row.task_id is not None:
            state = "in_use" if held else "released"
        else:
            state = "expired" if row.expires_at <= now else "reserved"
        return {
            "id": str(row.id),
            "ip": row.ip,
            "node": row.node,
            "owner": row.owner,
            "state": state,
            "task_id": str(row.task_id) if row.task_id is not None else None,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "used_at": row.used_at,
        }

    def reservations(self, owner: str, *, everyone: bool = False) -> list[dict[str, Any]]:
        now = time.time()
        query = select(IpReservation).order_by(IpReservation.id)
        if not everyone:
            query = query.where(IpReservation.owner == owner)
        with self.sessions() as session:
            rows = list(session.scalars(query))
            holding = _holding_tasks(session, [r.task_id for r in rows if r.task_id is not None])
        return [self.reservation_json(r, now=now, held=r.task_id in holding) for r in rows]

    def _find(self, session: Session, key: str) -> IpReservation | None:
        key = str(key).strip()
        if key.startswith(TOKEN_PREFIX + "_"):
            return session.scalar(
                select(IpReservation).where(IpReservation.token_hash == hash_secret(key))
            )
        try:
            return session.get(IpReservation, int(key))
        except ValueError:
            return None

    def release_reservation(self, key: str, user: str, role: str) -> dict[str, Any]:
        """Give back a reservation by id or token (owner or operator)."""
        self._require_enabled()
        with self.sessions.begin() as session:
            row = self._find(session, key)
            if row is None or (row.owner != user and not role_at_least(role, "operator")):
                raise OverlayError(404, f"no IP reservation {key}")
            task = session.get(db.Task, row.task_id) if row.task_id is not None else None
            data = self.reservation_json(row, held=task is not None and holds_address(task))
            if data["state"] == "in_use":
                assert task is not None
                when = "the VPS is deleted" if task.kind == "vps" else "the task ends"
                raise OverlayError(
                    409, f"{row.ip} is in use by task {row.task_id}; it is released when {when}"
                )
            session.delete(row)
        return {**data, "state": "released"}

    def cleanup_reservations(self, now: float | None = None) -> int:
        """Forget reservations that expired unused, or whose task ended, RETAIN_SECONDS ago."""
        now = time.time() if now is None else now
        cutoff = now - RETAIN_SECONDS
        with self.sessions.begin() as session:
            expired = session.execute(
                delete(IpReservation).where(
                    IpReservation.task_id.is_(None), IpReservation.expires_at < cutoff
                )
            ).rowcount
            used = list(
                session.scalars(select(IpReservation).where(IpReservation.task_id.is_not(None)))
            )
            finished = 0
            for row in used:
                task = session.get(db.Task, row.task_id)
                if task is None or (
                    not holds_address(task)
                    and task.state in _TERMINAL
                    and (task.finished_at or 0) < cutoff
                ):
                    session.delete(row)
                    finished += 1
        return int(expired or 0) + finished

    def assign_job_address(self, session: Session, task: db.Task) -> str:
        """Hold a free workload address on the placed task's node for it (a job member),
        inside the caller's transaction; released when the task ends, like a spent token."""
        allocation = session.get(OverlayAllocation, task.node or "")
        if allocation is None:
            raise SpecError(
                f"node {task.node} has not joined the overlay; a multi-node job's members "
                "need overlay addresses"
            )
        now = time.time()
        session.flush()  # addresses given to earlier members of this pass count as busy
        busy = self._busy_ips(session, allocation.node, now)
        address = self._free_ip(allocation.runner_index, busy)
        session.add(
            IpReservation(
                token_hash=hash_secret(new_secret(TOKEN_PREFIX)),
                ip=address,
                node=allocation.node,
                owner=task.owner,
                created_at=now,
                expires_at=now,
                task_id=task.id,
                used_at=now,
            )
        )
        session.flush()
        return address

    # ---- tasks presenting a token ----------------------------------------------------
    def apply_ip_token(
        self, body: dict[str, Any], owner: str, role: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Check a submission's `ip_token`: put the reserved address in `spec` and return the
        body pinned to the reservation's node. Raises SpecError / TaskError with what to do.
        The token is spent by claim(), in the transaction that stores the task."""
        token = body.get("ip_token")
        if token in (None, ""):
            return body
        if not isinstance(token, str):
            raise SpecError("'ip_token' must be the token string %river ip reserve printed")
        if not self.enabled:
            raise SpecError(
                "ip_token given, but the overlay network is off on this host "
                "(c.RiverHost.overlay_enabled)"
            )
        now = time.time()
        with self.sessions() as session:
            row = session.scalar(
                select(IpReservation).where(IpReservation.token_hash == hash_secret(token.strip()))
            )
        if row is None:
            raise SpecError(
                "unknown IP reservation token (released, or never issued here); reserve an "
                "address with %river ip reserve"
            )
        if row.owner != owner and not role_at_least(role, "operator"):
            raise TaskError(403, f"this IP reservation belongs to {row.owner}")
        if row.task_id is not None:
            raise SpecError(
                f"IP reservation token already used by task {row.task_id} ({row.ip}); "
                "a token is good for one task: reserve another address"
            )
        if row.expires_at <= now:
            raise SpecError(
                f"IP reservation token expired {now - row.expires_at:.0f}s ago (at "
                f"{_iso(row.expires_at)}; it held {row.ip} on {row.node} for "
                f"{row.expires_at - row.created_at:.0f}s): reserve a new address with "
                "%river ip reserve (a longer --ttl if needed)"
            )
        target = body.get("target")
        if target:
            wanted = parse_target(str(target))
            if wanted.node != row.node:
                raise SpecError(
                    f"the reserved address {row.ip} is on node {row.node}, but the task "
                    f"targets {wanted.node}; drop the target or use {row.node}"
                )
        spec["overlay_ip"] = row.ip
        spec["overlay_reservation"] = row.id
        spec["env"] = {**(spec.get("env") or {}), "RIVER_OVERLAY_IP": row.ip}
        return {**body, "target": target or row.node}

    def inherit(
        self, body: dict[str, Any], spec: dict[str, Any], previous_task: int
    ) -> dict[str, Any]:
        """A VPS restart: the new incarnation takes over the reserved address the previous
        one held (claim() moves the reservation in the same transaction); the body comes
        back pinned to the address's node. Nothing happens when it held none."""
        with self.sessions() as session:
            row = session.scalar(
                select(IpReservation).where(IpReservation.task_id == previous_task)
            )
        if row is None:
            return body
        spec["overlay_ip"] = row.ip
        spec["overlay_reservation"] = row.id
        spec["overlay_inherited_from"] = previous_task
        spec["env"] = {**(spec.get("env") or {}), "RIVER_OVERLAY_IP": row.ip}
        return {**body, "target": body.get("target") or row.node}

    def claim(self, session: Session, task: db.Task) -> None:
        """Spend the token of a task being stored (inside its transaction), or move a VPS's
        reservation to its new incarnation."""
        reservation_id = (task.spec or {}).get("overlay_reservation")
        if reservation_id is None:
            return
        row = session.get(IpReservation, reservation_id)
        inherited = (task.spec or {}).get("overlay_inherited_from")
        if row is not None and inherited is not None and row.task_id == inherited:
            row.task_id = task.id
            return
        if row is None or row.task_id is not None:
            raise SpecError(
                "the IP reservation was released or used by another task meanwhile; "
                "reserve another address"
            )
        row.task_id = task.id
        row.used_at = time.time()
