"""Turns the queue into placements: runs the scheduler and hands tasks to runners.

Passes are coalesced: any number of wake-ups while a pass runs cause one more pass, so a
burst of submissions or completions costs a handful of passes, not one each. A pass runs on
the DB writer thread (river_server/dbwork.py); wake-ups and launches live on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from river_runner.protocol import TaskState
from river_runner.spec import ResourceRequest, Target, parse_target
from river_server import arrays, db, fairshare, jobs, preemption, quotas, usage
from river_server.dbwork import DbWork
from river_server.job_ports import DEFAULT_RANGE, PortRange, parse_range
from river_server.runner_client import RunnerClient, RunnerNoAnswer
from river_server.scheduler import (
    Held,
    NodeView,
    QueuedTask,
    SchedulePlan,
    Scheduler,
    gang_infeasible_reason,
    infeasible_reason,
)
from river_server.tasks import ACTIVE_STATES, needs_container

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from river_server.environments import EnvironmentService
    from river_server.nodes import NodeConnections
    from river_server.overlay import OverlayService
    from river_server.tasks import TaskService


def request_from_json(data: dict[str, Any]) -> ResourceRequest:
    """Rebuild the stored request (explicit GPU indices live in the target)."""
    target: Target | None = parse_target(data["target"]) if data.get("target") else None
    return ResourceRequest(
        cores=int(data.get("cores", 1)),
        memory=int(data.get("memory", 0)),
        gpus=int(data.get("gpus", 0)),
        target=target,
    )


def vm_launch(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a runner needs to boot a VM VPS (its id and disk size); None: not a VM."""
    record = (spec or {}).get("vps") or {}
    if not record.get("vm"):
        return None
    return {"vps_id": str(record["id"]), "disk": int(record["vm"].get("disk") or 0)}


def _node_view(node: db.Node, online: bool) -> NodeView:
    return NodeView(
        name=node.name,
        cpus=list(node.cpus or []),
        memory=int(node.memory or 0),
        gpus=[int(g["index"]) for g in node.gpus or []],
        numa=list(node.numa or []),
        online=online,
    )


def priority_order(
    queued: list[Any], charges: dict[str, float], groups: dict[str, float] | None = None
) -> list[Any]:
    """Queued tasks (oldest first) by priority, highest first; then the lightest group and
    owner (fair share: `charges`, `groups` from fairshare.group_charges); then FIFO. One
    stable sort; plain fair order (or FIFO) when every priority is 0."""
    if not any(t.priority for t in queued):
        return fairshare.order(queued, charges, group=groups)
    key = fairshare.sort_key(charges, groups)
    return sorted(queued, key=lambda t: (-(t.priority or 0), *key(t.owner)))


def gangs(tasks: list[db.Task]) -> list[QueuedTask]:
    """Queued tasks for the scheduler, oldest first, the members of a job as one gang
    (at its rank 0's place). A job some of whose members are held back (quota, say) is
    not offered: its members wait for the rest."""
    members: dict[int, list[db.Task]] = {}
    for t in tasks:
        if t.job_id is not None:
            members.setdefault(t.job_id, []).append(t)
    out: list[QueuedTask] = []
    for t in tasks:
        if t.job_id is None:
            out.append(QueuedTask(t.id, request_from_json(t.request), t.submitted_at, t.owner))
            continue
        group = members.pop(t.job_id, None)
        size = int(((t.spec or {}).get("job") or {}).get("size") or 0)
        if group is None or len(group) != size:
            continue
        group.sort(key=lambda m: m.job_rank or 0)
        out.append(
            QueuedTask(
                t.job_id,
                request_from_json(t.request),
                t.submitted_at,
                t.owner,
                members=tuple(m.id for m in group),
            )
        )
    return out


class Dispatcher:
    """Built after the task service (it moves tasks through their states); the task service
    reaches back only through its `Queue` protocol, bound by the composition root."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        connections: NodeConnections,
        tasks: TaskService,
        environments: EnvironmentService,
        runner_client: RunnerClient,
        log: logging.Logger,
        backfill_window: float,
        user_mount_prefixes: tuple[str, ...],
        *,
        work: DbWork,
        fence: Callable[[Session], bool] | None = None,
        overlay: OverlayService,
        job_ports: PortRange | None = None,
        fair_share: usage.FairShareSettings | None = None,
        snapshot_vps: Callable[[db.Task], Awaitable[Any]] | None = None,
    ) -> None:
        self.sessions = sessions
        # A displaced VPS's checkpoint (VpsService.snapshot): None, VPSes are not displaced.
        self.snapshot_vps = snapshot_vps
        self.work = work
        self.connections = connections
        self.tasks = tasks
        self.environments = environments
        # A placed job's rendezvous: overlay addresses, or host-network ports from this range.
        self.overlay = overlay
        self.job_ports = job_ports or parse_range(DEFAULT_RANGE)
        self.runner_client = runner_client
        self.log = log
        self.user_mount_prefixes = user_mount_prefixes
        # Leadership's fencing check, run inside each pass's transaction: a host that is no
        # longer the leader of its epoch places nothing (river_server/leadership.py).
        self.fence = fence
        self.scheduler = Scheduler(backfill_window=backfill_window)
        self.wait_reasons: dict[int, str] = {}
        # Fair share orders the queue between users (river_server/fairshare.py).
        self.fair_share = fair_share or usage.FairShareSettings()
        self._last_charge = 0.0
        self._charges: dict[str, float] = {}
        # Checkpoint grace of a displaced preemptible task (river_server/preemption.py).
        self.preempt_grace = tasks.priorities.grace
        self._stops: set[asyncio.Task] = set()
        # Victims whose checkpoint this process started (DB writer thread only): a marked
        # victim not in it was marked by a host before a restart, and `resume` drives it.
        self._driven: set[int] = set()
        self._held_by_node: dict[str, list[Held]] = {}
        self._wanted = False
        self._running: asyncio.Task | None = None
        self._launches: set[asyncio.Task] = set()

    # ---- views ----------------------------------------------------------------------
    def _node_views(self, session: Any) -> list[NodeView]:
        nodes = session.scalars(select(db.Node)).all()
        return [_node_view(n, self.connections.is_online(n.name)) for n in nodes]

    def _views(self, session: Any) -> tuple[list[NodeView], list[Held]]:
        views, held, _ = self._views_and_active(session)
        return views, held

    def _views_and_active(self, session: Any) -> tuple[list[NodeView], list[Held], list[db.Task]]:
        views = self._node_views(session)
        active = [
            t
            for t in session.scalars(select(db.Task).where(db.Task.state.in_(ACTIVE_STATES)))
            if t.node
        ]
        held = [
            Held(
                node=t.node or "",
                cpus=list(t.cpus or []),
                memory=int(t.memory or 0),
                gpus=list(t.gpus or []),
            )
            for t in active
        ]
        return views, held, active

    def _docker_nodes(self, session: Any) -> set[str]:
        return set(session.scalars(select(db.Node.name).where(db.Node.backend == "docker")))

    def infeasible(
        self, request: ResourceRequest, container: bool = False, size: int | None = None
    ) -> str | None:
        """Why the request can never run (None: it can, now or later). A `container` task
        (image, environment, mounts, privileged) can only run on docker-backend nodes.
        `size`: a multi-node job of that many members, each asking for `request`."""
        with self.sessions() as session:
            views = self._node_views(session)  # capacities only: what is held is irrelevant
            docker_nodes = self._docker_nodes(session) if container and views else set()
        if container and views:
            target = request.target.node if request.target else None
            if target in {v.name for v in views} and target not in docker_nodes:
                return (
                    f"node '{target}' runs tasks as plain processes; a task with an image, "
                    "environment, mounts or privileged needs a node with the docker backend"
                )
            if not docker_nodes:
                return (
                    "no registered node runs the docker backend; a task with an image, "
                    "environment, mounts or privileged needs one"
                )
            views = [v for v in views if v.name in docker_nodes]
        if size is not None:
            return gang_infeasible_reason(request, size, views)
        return infeasible_reason(request, views)

    # ---- passes ---------------------------------------------------------------------
    def wake(self) -> None:
        if not self.work.on_loop():  # from a DB worker: the pass task lives on the loop
            self.work.call_on_loop(self.wake)
            return
        self._wanted = True
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run_passes())

    async def _run_passes(self) -> None:
        while self._wanted:
            self._wanted = False
            try:
                await self.work.write(self.schedule_pass)
            except Exception:
                self.log.exception("scheduling pass failed")
            await asyncio.sleep(0)

    def schedule_pass(self) -> int:
        """Place what fits now; return how many tasks were placed."""
        tasks = self.tasks
        with self.sessions() as session:
            if self.fence is not None and not self.fence(session):
                return 0
            # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): another host's pass on
            # the same rows waits for this commit, then finds them no longer queued, so an
            # assignment is never applied twice.
            queued = session.scalars(
                select(db.Task)
                .where(db.Task.state == TaskState.QUEUED.value)
                .order_by(db.Task.id)
                .with_for_update(of=db.Task)
            ).all()
            if not queued:
                self.wait_reasons = {}
                return 0
            # Array members beyond their array's concurrency limit wait outside the plan.
            queued, throttled = arrays.throttle(
                queued, arrays.active_counts(session, ACTIVE_STATES)
            )
            # Tasks over their owner's (or group's) core/GPU quota wait outside the plan too.
            queued, over_quota = quotas.filter_queued(session, queued, ACTIVE_STATES)
            charges = self._fair_charges(session) if self.fair_share.enabled else {}
            groups = usage.group_charges(session, charges) if charges else {}
            queued = priority_order(queued, charges, groups)
            views, held, active = self._views_and_active(session)
            docker_nodes = self._docker_nodes(session)
            plan = self._plan(queued, views, held, docker_nodes)
            moves = self._preempt(session, queued, plan, views, active, docker_nodes, charges)
            by_id = {t.id: t for t in queued}
            placed = []
            placed_jobs: dict[int, list[db.Task]] = {}
            for task_id, placement in plan.placements.items():
                task = by_id[task_id]
                if tasks.transition(
                    session,
                    task,
                    TaskState.ASSIGNING,
                    f"placed on {placement.node}",
                    node=placement.node,
                    cpus=placement.cpus,
                    gpus=placement.gpus,
                    memory=placement.memory,
                    assigned_at=time.time(),
                    reason=None,  # a requeued task's "displaced by" note is not its end
                ):
                    placed.append(task)
                    if task.job_id is not None:
                        placed_jobs.setdefault(task.job_id, []).append(task)
            failed = self._address_jobs(session, placed_jobs)
            self.wait_reasons = {**throttled, **over_quota, **plan.waiting}
            tasks.commit_and_publish(session, placed)
        for task in placed:
            if task.id in failed:
                continue
            self.work.call_on_loop(self._start_launch, task)
        for move in moves:
            for victim in move.victims:
                self._driven.add(victim.id)
                self.work.call_on_loop(
                    self._start_displace, victim.node, victim.id, preemption.checkpoint(victim)
                )
        return len(placed)

    def _preempt(
        self,
        session: Any,
        queued: list[db.Task],
        plan: SchedulePlan,
        views: list[NodeView],
        active: list[db.Task],
        docker: set[str],
        charges: dict[str, float],
    ) -> list[preemption.Displacement]:
        """Displace preemptible work for waiters the plan could not place (queue order):
        victims are marked in this transaction and signalled once it commits."""
        if self.snapshot_vps is None:  # nothing could checkpoint a VPS: offer none
            active = [t for t in active if preemption.checkpoint(t) != preemption.SNAPSHOT]
        if not plan.waiting or not any(preemption.displaceable(t) for t in active):
            return []
        waiting = [
            (t, request_from_json(t.request))
            for t in queued
            if t.id in plan.waiting and t.job_id is None
        ]
        extra = [Held(p.node, p.cpus, p.memory, p.gpus) for p in plan.placements.values()]
        moves: list[preemption.Displacement] = []
        for container in (True, False):
            group = [(t, r) for t, r in waiting if needs_container(t.spec) == container]
            if not group:
                continue
            nodes = [v for v in views if v.name in docker] if container else views
            moves += preemption.plan(group, active, nodes, extra, charges)
        for move in moves:
            preemption.mark(session, move, self.preempt_grace)
            names = ", ".join(str(v.id) for v in move.victims)
            plan.waiting[move.waiter.id] = (
                f"displacing preemptible task {names} on node {move.node} ({move.why}); "
                "starts when it has stopped"
            )
            self.log.info(
                "task %s displaces %s on %s (%s)", move.waiter.id, names, move.node, move.why
            )
        return moves

    def resume(self, node: str) -> None:
        """A runner has registered (on the DB writer): finish what a previous host process
        began on it. Each victim there that is marked but whose checkpoint this process never
        started (the host restarted between the mark and the runner's report) gets it
        started again; without this it stayed running and marked for ever, its waiter
        waiting and no other waiter able to take it (preemption.displaceable)."""
        drive: list[tuple[int, str]] = []
        with self.sessions.begin() as session:
            if self.fence is not None and not self.fence(session):
                return
            self._prune_driven(session)
            for victim in self.tasks.active_on(session, node):
                if not (victim.spec or {}).get("preempting") or victim.id in self._driven:
                    continue
                how = preemption.checkpoint(victim)
                self._driven.add(victim.id)
                drive.append((victim.id, how))
                what = (
                    "snapshot, then stop"
                    if how == preemption.SNAPSHOT
                    else f"SIGTERM, then SIGKILL after {self.preempt_grace:g}s"
                )
                session.add(
                    db.TaskTransition(
                        task_id=victim.id,
                        state=victim.state,
                        at=time.time(),
                        detail=f"checkpoint started again after a host restart ({what})",
                    )
                )
                self.log.info("displacement of task %s on %s driven again", victim.id, node)
        for task_id, how in drive:
            self.work.call_on_loop(self._start_displace, node, task_id, how)

    def _prune_driven(self, session: Any) -> None:
        """Forget victims that are no longer marked (requeued, ended, released)."""
        if not self._driven:
            return
        still = session.scalars(
            select(db.Task).where(
                db.Task.id.in_(list(self._driven)), db.Task.state.in_(ACTIVE_STATES)
            )
        )
        self._driven = {t.id for t in still if (t.spec or {}).get("preempting")}

    def _start_displace(self, node: str | None, task_id: int, how: str) -> None:
        stop = asyncio.ensure_future(self._displace(node or "", task_id, how))
        self._stops.add(stop)
        stop.add_done_callback(self._stops.discard)

    async def _displace(self, node: str, task_id: int, how: str) -> None:
        """Checkpoint a victim: a task gets SIGTERM now, SIGKILL after the grace (its
        runner's `terminate`); a VPS is snapshotted, then killed. Its end report requeues
        it (TaskService._apply_status)."""
        connection = self.connections.get(node)
        if connection is None:
            return  # its node went offline: the task is lost the usual way
        action, body = "terminate", {"grace": self.preempt_grace}
        if how == preemption.SNAPSHOT:
            if not await self._snapshot_victim(task_id):
                return
            action, body = "kill", {}
        try:
            await self.runner_client.call(
                connection.url, connection.secret, f"/api/tasks/{task_id}/{action}", body
            )
        except Exception as exc:
            self.log.warning("could not signal displaced task %s: %s", task_id, exc)

    async def _snapshot_victim(self, task_id: int) -> bool:
        """Snapshot a displaced VPS; when that fails it keeps running (its files are never
        given up for a waiter) and loses its mark, so the waiter looks elsewhere."""
        task = await self.work.read(self._load, task_id)
        try:
            if task is None or self.snapshot_vps is None:
                raise RuntimeError("it is gone")
            await self.snapshot_vps(task)
            return True
        except Exception as exc:
            self.log.warning("displaced VPS task %s not snapshotted, kept: %s", task_id, exc)
            await self.work.write(self.tasks.drop_preempting, task_id)
            return False

    def _load(self, task_id: int) -> db.Task | None:
        with self.sessions() as session:
            task = session.get(db.Task, task_id)
            if task is not None:
                session.expunge(task)
            return task

    def _fair_charges(self, session: Any) -> dict[str, float]:
        """Charge running tasks (at most every `interval` s); each owner's charge."""
        settings, now = self.fair_share, time.time()
        if now - self._last_charge >= settings.interval:
            self._last_charge = now
            holding = session.scalars(
                select(db.Task).where(
                    db.Task.state.in_(ACTIVE_STATES), db.Task.started_at.is_not(None)
                )
            )
            usage.charge(session, holding, now, settings)
        self._charges = fairshare.charges(
            usage.load(session), now, settings.half_life, settings.gpu_weight
        )
        return self._charges

    def _start_launch(self, task: db.Task) -> None:
        launch = asyncio.ensure_future(self._launch(task))
        self._launches.add(launch)
        launch.add_done_callback(self._launches.discard)

    def _address_jobs(self, session: Any, placed_jobs: dict[int, list[db.Task]]) -> set[int]:
        """Rendezvous for each placed job (addresses, master, port); a job that cannot
        get them fails whole, with the reason. Returns the ids of members not to launch."""
        failed: set[int] = set()
        for members in placed_jobs.values():
            members.sort(key=lambda t: t.job_rank or 0)
            try:  # addresses given to earlier members of a failed job are freed with them
                jobs.rendezvous(self.overlay, self.job_ports, session, members)
            except Exception as exc:  # SpecError: no free overlay address or job port
                for member in members:
                    self.tasks.transition(
                        session, member, TaskState.FAILED, f"could not start the job: {exc}"
                    )
                    failed.add(member.id)
        return failed

    def _plan(
        self, queued: list[db.Task], views: list[NodeView], held: list[Held], docker: set[str]
    ) -> SchedulePlan:
        """Plan container tasks on docker nodes only, then the rest on every node.

        The scheduler stays unaware of backends: container tasks (the more constrained ones)
        are planned first against the docker nodes, their placements are then held, and the
        other tasks are planned against all nodes. Within each group the policy (FIFO,
        backfill, best fit, anti-starvation) is the scheduler's; across the groups container
        tasks go first."""
        now = time.time()

        def queue(tasks: list[db.Task]) -> list[QueuedTask]:
            return gangs(tasks)

        vms = [t for t in queued if vm_launch(t.spec)]
        if vms:
            # VMs first, on the nodes whose runner runs them; the rest as before, around them.
            capable = self.connections.vm_nodes()
            first = self.scheduler.plan(
                queue(vms), [v for v in views if v.name in capable], held, now
            )
            if not capable:
                why = "waiting for a node whose runner runs VMs (--vm-accel) to join"
                first.waiting = {task_id: why for task_id in first.waiting}
            rest = [t for t in queued if not vm_launch(t.spec)]
            held = held + [
                Held(p.node, p.cpus, p.memory, p.gpus) for p in first.placements.values()
            ]
            second = self._plan(rest, views, held, docker) if rest else SchedulePlan({}, {})
            return SchedulePlan(
                placements={**first.placements, **second.placements},
                waiting={**first.waiting, **second.waiting},
            )
        boxed = [t for t in queued if needs_container(t.spec)]
        if not boxed:
            return self.scheduler.plan(queue(queued), views, held, now)
        plain = [t for t in queued if not needs_container(t.spec)]
        docker_views = [v for v in views if v.name in docker]
        first = self.scheduler.plan(queue(boxed), docker_views, held, now)
        if not docker_views:
            why = "waiting for a node with the docker backend (image/environment/mounts) to join"
            first.waiting = {task_id: why for task_id in first.waiting}
        if not plain:
            return first
        held = held + [Held(p.node, p.cpus, p.memory, p.gpus) for p in first.placements.values()]
        second = self.scheduler.plan(queue(plain), views, held, now)
        return SchedulePlan(
            placements={**first.placements, **second.placements},
            waiting={**first.waiting, **second.waiting},
        )

    def launch_body(self, task: db.Task, user_number: int | None = None) -> dict[str, Any]:
        spec = task.spec or {}
        extras = jobs.launch_extras(task)  # a job member's rendezvous env and hostfile
        return {
            # The owner's account id: a root runner runs the task as uid FIRST + it, so no
            # other user's task shares its files (river_runner/task_account.py).
            "user_number": user_number,
            "hostfile": extras.get("hostfile"),
            "launcher": extras.get("launcher") or [],  # python -m torch.distributed.run ...
            "task_id": str(task.id),
            "kind": "command" if task.kind == "vps" else task.kind,  # a VPS runs its command
            "command": spec.get("command"),
            "script": spec.get("script"),
            "env": {**(spec.get("env") or {}), **extras.get("env", {})},
            "workdir": spec.get("workdir"),
            "python": spec.get("python"),  # process backend (river_runner.interpreters)
            "python_fallback": bool(spec.get("python_fallback")),
            "image": spec.get("image"),
            "environment": spec.get("environment"),
            # Runners load only the export the host recorded (river_runner.backends.docker_env)
            "environment_digest": (
                self.environments.digest(spec["environment"]) if spec.get("environment") else None
            ),
            "mounts": spec.get("mounts") or [],
            # A user's mounts must resolve under these on the runner; None: an operator's.
            "mount_prefixes": (list(self.user_mount_prefixes) if spec.get("user_mounts") else None),
            "privileged": bool(spec.get("privileged")),
            "data": spec.get("data"),  # pushed blobs to fetch, values to pull (data plane)
            "overlay_ip": spec.get("overlay_ip"),  # a reserved overlay address (ip_token)
            # A host-network job's member runs in its node's own stack (river_server/jobs.py)
            "host_network": ((spec.get("job") or {}).get("network") == "host"),
            "cpus": task.cpus or [],
            "memory": task.memory or 0,
            "gpus": task.gpus or [],
            "name": task.name,
            "hostname": (spec.get("vps") or {}).get("hostname"),  # a VPS's: vps-<id>
            "vm": vm_launch(spec),  # a VM VPS's disk and id (river_runner/backends/vm.py)
            # The runner ends it at the limit: SIGTERM, SIGKILL after the grace (agent.py).
            # A VPS is stopped by the host instead, with its snapshot (a normal stop).
            "time_limit": None if spec.get("vps") else spec.get("time_limit"),
            "kill_grace": self.tasks.time_limits.grace,
        }

    def _owner_number(self, owner: str) -> int | None:
        """The owner's stable number (their account id; a name is never reused, see
        db.RetiredUserName). None: no such account, which a per-user runner refuses."""
        with self.sessions() as session:
            return session.scalar(select(db.User.id).where(db.User.name == owner))

    def _still_assigning(self, task_id: int) -> bool:
        with self.sessions() as session:
            fresh = session.get(db.Task, task_id)
            return fresh is not None and fresh.state == TaskState.ASSIGNING.value

    async def _launch(self, task: db.Task) -> None:
        """Hand a placed task to its runner. A kill may land at any await here: it is
        recorded in the DB first (TaskService._kill_assigning), so the state is checked
        before the launch is sent and again after the runner answers; a launch that landed
        after a kill is killed on the runner, so nothing runs behind a killed task."""
        connection = self.connections.get(task.node or "")
        error: str | None = None
        if connection is None:
            error = f"node {task.node} went offline before the task started"
        elif not await self.work.read(self._still_assigning, task.id):
            return  # killed between placement and launch: nothing to start
        else:
            try:
                number = await self.work.read(self._owner_number, task.owner)
                await self.runner_client.call(
                    connection.url, connection.secret, "/api/tasks", self.launch_body(task, number)
                )
            except RunnerNoAnswer as exc:
                # The runner may or may not have it (a slow or partitioned runner): leave
                # the task `assigning`. Reconciliation settles it from the runner's own
                # report: running there, or requeued if the runner never got it.
                self.log.warning("launch of task %s unanswered: %s", task.id, exc)
                return
            except Exception as exc:
                error = str(exc)
            else:
                if await self.work.read(self._ended, task.id):
                    await self.tasks.kill_on_runner(connection.url, connection.secret, task.id)
                return
        # The runner refused it: it ends as failed, with the reason, rather than
        # silently bouncing between nodes.
        await self.work.write(self._fail_launch, task.id, error)

    def _fail_launch(self, task_id: int, error: str | None) -> None:
        with self.sessions() as session:
            fresh = session.get(db.Task, task_id)
            if fresh is not None and fresh.state == TaskState.ASSIGNING.value:
                self.tasks.transition(session, fresh, TaskState.FAILED, f"could not start: {error}")
                self.tasks.commit_and_publish(session, [fresh])

    def _ended(self, task_id: int) -> bool:
        with self.sessions() as session:
            fresh = session.get(db.Task, task_id)
            return fresh is None or TaskState(fresh.state).terminal
