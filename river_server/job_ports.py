"""Ports of host-network jobs: one rendezvous port per job, free on every member's node.

A `network: host` job's members share their nodes' network stacks with everything else
there, so River cannot pick a fixed port (the overlay's 29500) as it does for members in
namespaces of their own. Instead it hands out ports from an operator-chosen range
(`c.RiverHost.job_port_range`, reserved for River: nothing else on the nodes should bind
it) and records each allocation as a `db.JobPort` row per member node, inside the placement
transaction. One port for the whole job (not one per node) keeps MASTER_PORT the same for
every member, which torchrun and MPI launchers expect.

A row holds its port while its task is unfinished; rows of finished tasks are deleted
whenever ports are allocated, so a port is released when its member ends and is not
leaked by a host that stopped in between.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from river_runner.protocol import TaskState
from river_runner.spec import SpecError
from river_server import db

DEFAULT_RANGE = "29500-29999"
_TERMINAL = [s.value for s in TaskState if s.terminal]


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_range(text: str) -> PortRange:
    """`FIRST-LAST` (inclusive, 1024..65535); ValueError says what is wrong."""
    first_text, sep, last_text = text.strip().partition("-")
    try:
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise ValueError(
            f"job_port_range must be FIRST-LAST, e.g. {DEFAULT_RANGE}; not {text!r}"
        ) from None
    if not sep or not 1024 <= first <= last <= 65535:
        raise ValueError(
            f"job_port_range must be FIRST-LAST with 1024 <= FIRST <= LAST <= 65535, not {text!r}"
        )
    return PortRange(first, last)


def release_finished(session: Session) -> None:
    """Delete the rows of members that have ended (their ports are free again)."""
    finished = select(db.Task.id).where(db.Task.state.in_(_TERMINAL))
    session.execute(delete(db.JobPort).where(db.JobPort.task_id.in_(finished)))


def allocate(session: Session, ports: PortRange, members: list[db.Task]) -> int:
    """The lowest port of the range free on every member's node, recorded for each member
    (inside the caller's transaction). Raises SpecError when the range is used up there."""
    release_finished(session)
    session.flush()
    nodes = [m.node or "" for m in members]
    taken = set(session.scalars(select(db.JobPort.port).where(db.JobPort.node.in_(nodes))))
    port = next((p for p in range(ports.first, ports.last + 1) if p not in taken), None)
    if port is None:
        raise SpecError(
            f"every port of c.RiverHost.job_port_range ({ports}) is held by host-network jobs "
            f"on {', '.join(sorted(set(nodes)))}; widen the range or wait for a job to end"
        )
    for member in members:
        session.add(
            db.JobPort(node=member.node or "", port=port, job_id=member.job_id, task_id=member.id)
        )
    session.flush()
    return port
