"""Multi-node jobs (gangs): one submission, N member tasks placed and ended together.

Job model: a job is its id (a snowflake) and its members, which are ordinary tasks with
`job_id` and `job_rank` columns and `spec["job"]` = {id, rank, size, network, and, once
placed, master_addr, master_port}. A member is a task in every respect (state, logs,
kill), so nothing that handles tasks needs a second path; what makes them a job is:

- placement: the dispatcher hands the queued members of a job to the scheduler as one
  gang (all on distinct nodes, or none), then `rendezvous` gives each member an overlay
  address and the rendezvous variables, and the members are launched together;
- ending: when a member fails, is killed, runs out of memory or is lost, `end_siblings`
  records the others as killed with a reason naming that member and its rank, then has
  their runners stop them (so killing any member, or the job, kills all of them).

Network: `overlay` only for now (each member in a namespace of its own at an overlay
address, so every member can listen on the same rendezvous port); `host` is refused with
a 400 until host mode is built (docs/design-decisions.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_runner.protocol import TaskState
from river_runner.spec import SpecError
from river_server import db

if TYPE_CHECKING:
    from river_server.nodes import NodeConnections
    from river_server.overlay import OverlayService
    from river_server.tasks import TaskService

MASTER_PORT = 29500  # torch.distributed's default; free in each member's own namespace
# Ending states of a member that end the whole job (a member that completes does not:
# rank 0 often finishes last, after the others have exited 0).
ENDS_JOB = (
    TaskState.FAILED.value,
    TaskState.KILLED.value,
    TaskState.KILLED_OOM.value,
    TaskState.LOST.value,
)


def job_size(body: dict[str, Any]) -> int | None:
    """The validated `nodes` of a submission (None: a single task)."""
    nodes = body.get("nodes")
    if nodes is None:
        return None
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise SpecError(f"'nodes' must be a whole number of at least 1, not {nodes!r}")
    return nodes


def member_body(body: dict[str, Any]) -> dict[str, Any]:
    """The per-member request: `gpus_per_node` is the member's `gpus`."""
    out = {k: v for k, v in body.items() if k not in ("nodes", "gpus_per_node", "network")}
    per_node = body.get("gpus_per_node")
    if per_node is not None:
        if body.get("gpus") not in (None, 0, per_node):
            raise SpecError("give 'gpus_per_node' or 'gpus' for a job's members, not both")
        out["gpus"] = per_node
    if body.get("target"):
        raise SpecError("a multi-node job cannot target one node; leave out the target")
    if body.get("ip_token"):
        raise SpecError(
            "a multi-node job gets its members' overlay addresses itself; drop ip_token"
        )
    return out


def check_network(overlay: OverlayService) -> str:
    if not overlay.enabled:
        raise SpecError(
            "a multi-node job needs the overlay network on this host "
            "(c.RiverHost.overlay_enabled = True); network 'host' is not yet available"
        )
    return "overlay"


def job_env(job: dict[str, Any]) -> dict[str, str]:
    """The rendezvous variables of one placed member (torchrun / torch.distributed names
    too, one process per node: WORLD_SIZE is the number of members)."""
    rank, size = str(job["rank"]), str(job["size"])
    addr, port = str(job["master_addr"]), str(job["master_port"])
    return {
        "RIVER_JOB_ID": str(job["id"]),
        "RIVER_NODE_RANK": rank,
        "RIVER_NUM_NODES": size,
        "RIVER_MASTER_ADDR": addr,
        "RIVER_MASTER_PORT": port,
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        "WORLD_SIZE": size,
        "RANK": rank,
        "LOCAL_RANK": "0",
        "NODE_RANK": rank,
    }


def hostfile(addresses: list[str]) -> str:
    """An MPI (Open MPI) hostfile: one member per line, in rank order."""
    return "".join(f"{address} slots=1\n" for address in addresses)


def rendezvous(overlay: OverlayService, session: Session, members: list[db.Task]) -> None:
    """Give each placed member (rank order) an overlay address on its node and record the
    rendezvous in its spec; inside the placement transaction, so a job is never half
    addressed. Raises SpecError when a member's node has no overlay allocation."""
    addresses = [overlay.assign_job_address(session, m) for m in members]
    for member, address in zip(members, addresses, strict=True):
        spec = dict(member.spec or {})
        spec["overlay_ip"] = address
        spec["job"] = {
            **spec["job"],
            "master_addr": addresses[0],
            "master_port": MASTER_PORT,
            "hosts": addresses,
        }
        member.spec = spec


def launch_extras(task: db.Task) -> dict[str, Any]:
    """What a placed member's launch adds: the rendezvous env and the hostfile text."""
    job = (task.spec or {}).get("job")
    if not job or "master_addr" not in job:
        return {}
    return {"env": job_env(job), "hostfile": hostfile(list(job.get("hosts") or []))}


def members_of(session: Session, job_id: int) -> list[db.Task]:
    return list(
        session.scalars(select(db.Task).where(db.Task.job_id == job_id).order_by(db.Task.job_rank))
    )


def end_siblings(
    tasks: TaskService, connections: NodeConnections, ended: list[db.Task]
) -> list[tuple[str, str, int]]:
    """Record the unfinished siblings of members that ended badly as killed, with the
    reason; return (url, secret, task id) of those a runner must still stop."""
    to_stop: list[tuple[str, str, int]] = []
    jobs = {t.job_id: t for t in ended if t.job_id is not None and t.state in ENDS_JOB}
    if not jobs:
        return to_stop
    with tasks.sessions() as session:
        changed = []
        for job_id, cause in jobs.items():
            why = f"job {job_id} ended: member {cause.id} (rank {cause.job_rank}) {cause.state}" + (
                f": {cause.reason}" if cause.reason else ""
            )
            for sibling in members_of(session, job_id):
                if sibling.id == cause.id or TaskState(sibling.state).terminal:
                    continue
                placed = sibling.state != TaskState.QUEUED.value
                if tasks.transition(session, sibling, TaskState.KILLED, why):
                    changed.append(sibling)
                    connection = connections.get(sibling.node or "") if placed else None
                    if connection is not None:
                        to_stop.append((connection.url, connection.secret, sibling.id))
        if changed:
            tasks.commit_and_publish(session, changed)
    return to_stop
