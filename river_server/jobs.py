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

Network, per job: `overlay` (default; each member in a namespace of its own at an overlay
address, so every member can listen on the same rendezvous port 29500) or `host` (members
in their nodes' own network stacks at the addresses their runners registered with, a port
from c.RiverHost.job_port_range free on every member's node: river_server/job_ports.py).
Host mode is for roles of at least c.RiverHost.host_network_role (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from river_runner.protocol import TaskState
from river_runner.spec import ResourceRequest, SpecError
from river_server import db, job_ports
from river_server.auth import role_at_least

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
    TaskState.TIMEOUT.value,
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
    dropped = ("nodes", "gpus_per_node", "network", "launcher", "nproc_per_node")
    out = {k: v for k, v in body.items() if k not in dropped}
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


NETWORKS = ("overlay", "host")


def check_network(overlay: OverlayService, network: Any, role: str, host_network_role: str) -> str:
    """The job's validated network mode; SpecError (400) or JobNetworkRefused (403)."""
    network = network or "overlay"
    if network not in NETWORKS:
        raise SpecError(f"network must be 'overlay' or 'host', not {network!r}")
    if network == "host":
        if not role_at_least(role, host_network_role):
            raise JobNetworkRefused(
                f"network 'host' gives a job its nodes' own network; it is for roles of at "
                f"least {host_network_role} here (c.RiverHost.host_network_role); use "
                "network 'overlay' or ask an operator"
            )
        return network
    if not overlay.enabled:
        raise SpecError(
            "a multi-node job on the overlay needs the overlay network on this host "
            "(c.RiverHost.overlay_enabled = True); or use network 'host'"
        )
    return network


LAUNCHERS = ("torchrun",)


def check_launcher(
    body: dict[str, Any], size: int | None, kind: str, request: ResourceRequest
) -> dict[str, Any] | None:
    """The job's validated launcher ({name, nproc_per_node}) or None; SpecError (400)
    saying what to fix. torchrun wraps a Python script, so it needs `nodes` and a script;
    its processes per member are bounded by what the member holds: its GPUs when it asks
    for GPUs (one process per GPU), else its cores (0 cores, an operator's unpinned
    member, sets no bound)."""
    launcher, nproc = body.get("launcher") or None, body.get("nproc_per_node")
    if launcher is None:
        if nproc is not None:
            raise SpecError("'nproc_per_node' goes with a launcher: add launcher 'torchrun'")
        return None
    if launcher not in LAUNCHERS:
        raise SpecError(f"launcher must be 'torchrun', not {launcher!r}")
    if size is None:
        raise SpecError(
            "launcher 'torchrun' is for a multi-node job: add 'nodes' (1 or more members)"
        )
    if kind != "python":
        raise SpecError(
            "launcher 'torchrun' wraps a Python script: send 'script', or run torchrun "
            "yourself in the command"
        )
    nproc = 1 if nproc is None else nproc
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise SpecError(f"'nproc_per_node' must be a whole number of at least 1, not {nproc!r}")
    gpus = request.gpu_count
    if gpus and nproc > gpus:
        raise SpecError(
            f"'nproc_per_node' {nproc} is more than the {gpus} GPUs each member asks for: "
            f"ask for {nproc} GPUs per node or start at most {gpus} processes"
        )
    if not gpus and request.cores and nproc > request.cores:
        raise SpecError(
            f"'nproc_per_node' {nproc} is more than the {request.cores} cores each member "
            f"asks for: ask for {nproc} cores (-c {nproc}) or start at most {request.cores}"
        )
    return {"name": launcher, "nproc_per_node": nproc}


def launcher_args(job: dict[str, Any]) -> list[str]:
    """What goes between a placed member's interpreter and its script: torchrun's static
    rendezvous on the job's master (`python -m torch.distributed.run ... SCRIPT`); the
    module form, so the task's own interpreter runs it and no `torchrun` on PATH is
    needed. Empty for a job without a launcher."""
    launcher = job.get("launcher")
    if not launcher or "master_addr" not in job:
        return []
    return [
        "-m",
        "torch.distributed.run",
        "--nnodes",
        str(job["size"]),
        "--nproc-per-node",
        str(launcher["nproc_per_node"]),
        "--node-rank",
        str(job["rank"]),
        "--master-addr",
        str(job["master_addr"]),
        "--master-port",
        str(job["master_port"]),
    ]


class JobNetworkRefused(Exception):
    """A role below c.RiverHost.host_network_role asked for a host-network job (403)."""


def job_env(job: dict[str, Any]) -> dict[str, str]:
    """The rendezvous variables of one placed member (torchrun / torch.distributed names
    too, one process per node: WORLD_SIZE is the number of members). Under a launcher
    the member is torchrun, which starts nproc_per_node processes and sets each one's
    RANK, LOCAL_RANK (and its own WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK ...): River
    leaves RANK and LOCAL_RANK out and says WORLD_SIZE = nodes x nproc_per_node."""
    rank, size = str(job["rank"]), str(job["size"])
    addr, port = str(job["master_addr"]), str(job["master_port"])
    env = {
        "RIVER_JOB_ID": str(job["id"]),
        "RIVER_NODE_RANK": rank,
        "RIVER_NUM_NODES": size,
        "RIVER_MASTER_ADDR": addr,
        "RIVER_MASTER_PORT": port,
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
        "NODE_RANK": rank,
    }
    launcher = job.get("launcher")
    if launcher:
        nproc = int(launcher["nproc_per_node"])
        return {**env, "RIVER_NPROC_PER_NODE": str(nproc), "WORLD_SIZE": str(int(size) * nproc)}
    return {**env, "WORLD_SIZE": size, "RANK": rank, "LOCAL_RANK": "0"}


def hostfile(addresses: list[str]) -> str:
    """An MPI (Open MPI) hostfile: one member per line, in rank order."""
    return "".join(f"{address} slots=1\n" for address in addresses)


def rendezvous(
    overlay: OverlayService, ports: job_ports.PortRange, session: Session, members: list[db.Task]
) -> None:
    """Give each placed member (rank order) its address and record the rendezvous in its
    spec; inside the placement transaction, so a job is never half addressed. Overlay: an
    overlay address per member, port 29500. Host: each node's registered address and one
    port free on all of them. Raises SpecError when that cannot be had."""
    network = ((members[0].spec or {}).get("job") or {}).get("network") or "overlay"
    if network == "host":
        addresses = [node_address(session, m.node or "") for m in members]
        port = job_ports.allocate(session, ports, members)
    else:
        addresses = [overlay.assign_job_address(session, m) for m in members]
        port = MASTER_PORT
    for member, address in zip(members, addresses, strict=True):
        spec = dict(member.spec or {})
        if network != "host":
            spec["overlay_ip"] = address
        spec["job"] = {
            **spec["job"],
            "master_addr": addresses[0],
            "master_port": port,
            "hosts": addresses,
        }
        member.spec = spec


def node_address(session: Session, name: str) -> str:
    """A node's own address as its runner registered it (the host of its URL)."""
    node = session.get(db.Node, name)
    address = urlsplit(node.url).hostname if node is not None else None
    if not address:
        raise SpecError(f"node {name} has no registered address for a host-network job")
    return address


def launch_extras(task: db.Task) -> dict[str, Any]:
    """What a placed member's launch adds: the rendezvous env and the hostfile text."""
    job = (task.spec or {}).get("job")
    if not job or "master_addr" not in job:
        return {}
    return {
        "env": job_env(job),
        "hostfile": hostfile(list(job.get("hosts") or [])),
        "launcher": launcher_args(job),
    }


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
