"""Task records: submission, validated transitions, and what runners report.

The rule that keeps state honest: a transition is committed to the DB before anyone hears
of it (event, HTTP answer), and a task in a terminal state never leaves it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from river_runner.containers import (
    mount_source,
    parse_env_name,
    parse_image,
    parse_mount,
)
from river_runner.ids import SnowflakeGenerator
from river_runner.protocol import (
    EVENT_LOG,
    EVENT_TASK,
    RUNNER_REPORTABLE,
    TERMINAL_STATES,
    TaskState,
)
from river_runner.spec import ResourceRequest, SpecError, parse_request
from river_server import db, jobs, leases, preemption
from river_server.arrays import array_env, parse_array
from river_server.auth import role_at_least
from river_server.blobs import BlobStore
from river_server.dbwork import DbWork
from river_server.events import EventBus
from river_server.images import ImageRefused, check_images
from river_server.logstore import LogStore
from river_server.priorities import Priorities, PriorityRefused
from river_server.runner_client import RunnerClient, RunnerUnreachable
from river_server.serialize import task_json
from river_server.time_limits import TimeLimitRefused, TimeLimits
from river_server.usage import FairShareSettings
from river_server.usage import charge as charge_usage

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from river_server.environments import EnvironmentService
    from river_server.nodes import NodeConnections
    from river_server.overlay import OverlayService

TASK_KINDS = ("command", "python")
# Spec fields only a container can honour: a task with any of them runs on docker nodes only.
CONTAINER_FIELDS = ("image", "environment", "mounts", "privileged")
ACTIVE_STATES = tuple(s.value for s in TaskState if s.holds_resources)
WAITING_STATES = (TaskState.QUEUED.value, TaskState.PENDING_APPROVAL.value)
FINAL_STATES = tuple(s.value for s in TERMINAL_STATES)
# How long a kill whose runner no longer runs the task waits for the runner's final report
# (normally milliseconds behind: the runner's outbox sends it at once) before answering.
KILL_REPORT_WAIT_S = 5.0


class TaskError(Exception):
    """A request about a task that can not be honoured; `status` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _validate_spec(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = body.get("kind") or ("python" if body.get("script") is not None else "command")
    if kind not in TASK_KINDS:
        raise SpecError(f"kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
    spec: dict[str, Any] = {}
    if kind == "python":
        script = body.get("script")
        if not isinstance(script, str):
            raise SpecError("a python task needs 'script': the program text")
        spec["script"] = script
    else:
        command = body.get("command")
        if (
            isinstance(command, list)
            and command
            and all(isinstance(c, str) for c in command)
            or isinstance(command, str)
            and command.strip()
        ):
            spec["command"] = command
        else:
            raise SpecError("a command task needs 'command': an argv list or a shell string")
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise SpecError("'env' must be an object of NAME: value")
    spec["env"] = {k: str(v) for k, v in env.items()}
    workdir = body.get("workdir")
    if workdir is not None and not isinstance(workdir, str):
        raise SpecError("'workdir' must be a string")
    if workdir:
        spec["workdir"] = workdir
    spec.update(_container_spec(body))
    if body.get("data"):  # pushed blobs / pulled names (river_server/handlers/data.py)
        values = body["data"].get("push") or body["data"].get("pull")
        if kind != "python" and values:  # pushed *files* suit any task (data.files)
            raise SpecError("'data' (pushed and pulled values) needs a python task")
        spec["data"] = body["data"]
    spec.update(_python_spec(body, kind, spec))
    return kind, spec


def _python_spec(body: dict[str, Any], kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`python` names the interpreter of a python task on the process backend (the node
    resolves it: river_runner.interpreters). A container runs its image's python, so
    naming one there is a mistake said at once, not an interpreter silently ignored."""
    python = body.get("python")
    if python in (None, ""):
        return {}
    fallback = body.get("python_fallback", False)
    if kind != "python":
        raise SpecError(
            "'python' applies to python (script) tasks; a command task names its "
            "interpreter in its command"
        )
    if (spec.get("image") or spec.get("environment")) and not fallback:
        raise SpecError(
            "'python' picks an interpreter on a process-backend node; a task with "
            "'image' or 'environment' runs the container's python: leave one out"
        )
    if spec.get("image") or spec.get("environment"):
        return {}  # the magic's default (kernel's interpreter): the container's wins
    return {"python": python, "python_fallback": True} if fallback else {"python": python}


def _container_spec(body: dict[str, Any]) -> dict[str, Any]:
    """image / environment / mounts / privileged, checked (who may use them: check_privileges)."""
    spec: dict[str, Any] = {}
    if body.get("image") not in (None, ""):
        spec["image"] = parse_image(body["image"])
    if body.get("environment") not in (None, ""):
        if "image" in spec:
            raise SpecError("give either 'image' or 'environment' (an exported one), not both")
        spec["environment"] = parse_env_name(body["environment"])
    mounts = body.get("mounts")
    if mounts not in (None, []):
        if not isinstance(mounts, list):
            raise SpecError("'mounts' must be a list of \"SRC:DST[:ro]\" strings")
        spec["mounts"] = [parse_mount(m) for m in mounts]
    privileged = body.get("privileged", False)
    if not isinstance(privileged, bool):
        raise SpecError("'privileged' must be true or false")
    if privileged:
        spec["privileged"] = True
    return spec


def needs_container(spec: dict[str, Any] | None) -> bool:
    """Whether a task can only run on a docker-backend node (a VM VPS runs on a node
    whose runner runs VMs instead: river_server/dispatcher.py)."""
    spec = spec or {}
    vps = spec.get("vps")
    if vps and vps.get("vm"):
        return False
    return bool(vps) or any(spec.get(key) for key in CONTAINER_FIELDS)


class Queue(Protocol):
    """What the task service needs of the dispatcher. The dispatcher moves tasks through
    their states with this service, so it is built after it and bound with `bind_queue`
    (the one cycle between services; docs/design-decisions.md)."""

    wait_reasons: dict[int, str]

    def wake(self) -> None: ...

    def infeasible(
        self, request: ResourceRequest, container: bool = False, size: int | None = None
    ) -> str | None: ...


class TaskService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        bus: EventBus,
        logs: LogStore,
        blobs: BlobStore,
        ids: SnowflakeGenerator,
        runner_client: RunnerClient,
        connections: NodeConnections,
        overlay: OverlayService,
        environments: EnvironmentService,
        log: logging.Logger,
        *,
        require_approval: bool,
        task_spec_max_bytes: int,
        max_tasks_per_user: int,
        user_mount_prefixes: tuple[str, ...],
        work: DbWork,
        host_network_role: str = "operator",
        time_limits: TimeLimits | None = None,
        fair_share: FairShareSettings | None = None,
        priorities: Priorities | None = None,
    ) -> None:
        self.sessions = sessions
        # Sync methods here run on the DB threads; the async ones hand them there.
        self.work = work
        self.bus = bus
        self.logs = logs
        self.blobs = blobs
        self.ids = ids
        self.runner_client = runner_client
        self.connections = connections
        self.overlay = overlay
        self.environments = environments
        self.log = log
        self.require_approval = require_approval
        self.task_spec_max_bytes = task_spec_max_bytes
        self.max_tasks_per_user = max_tasks_per_user
        self.user_mount_prefixes = user_mount_prefixes
        # Who may ask for a host-network job (its ports: the dispatcher's, job_ports.py).
        self.host_network_role = host_network_role
        # Per-role default and maximum run time, and the SIGTERM-to-SIGKILL grace.
        self.time_limits = (time_limits or TimeLimits()).checked()
        # A task giving back its resources is charged to its owner's usage at once.
        self.fair_share = fair_share or FairShareSettings()
        # Per-role priority maximum, and the checkpoint grace of a displaced task.
        self.priorities = (priorities or Priorities()).checked()
        self._queue: Queue | None = None
        self._stops: set[asyncio.Future[None]] = set()

    def bind_queue(self, queue: Queue) -> None:
        self._queue = queue

    @property
    def queue(self) -> Queue:
        if self._queue is None:
            raise RuntimeError("TaskService has no queue yet: bind_queue(dispatcher) first")
        return self._queue

    # ---- reading --------------------------------------------------------------------
    def queue_info(self, session: Session) -> dict[int, int]:
        """1-based queue position of every queued task, oldest first."""
        ids = session.scalars(
            select(db.Task.id).where(db.Task.state == TaskState.QUEUED.value).order_by(db.Task.id)
        )
        return {task_id: position for position, task_id in enumerate(ids, start=1)}

    def to_json(self, task: db.Task, positions: dict[int, int] | None = None) -> dict[str, Any]:
        position = wait = None
        if task.state == TaskState.QUEUED.value:
            if positions is None:
                with self.sessions() as session:
                    positions = self.queue_info(session)
            position = positions.get(task.id)
            wait = self.queue.wait_reasons.get(task.id, "waiting for the scheduler")
        return task_json(task, queue_position=position, wait_reason=wait)

    # ---- submitting -----------------------------------------------------------------
    def submit(
        self,
        owner: str,
        body: dict[str, Any],
        role: str = "user",
        *,
        vps: dict[str, Any] | None = None,
        inherit_address_from: int | None = None,
    ) -> db.Task:
        """Validate and store a task. `vps`: it is an incarnation of that VPS record;
        `inherit_address_from`: the previous incarnation, whose reserved overlay address
        this one takes over. `nodes` in the body: a multi-node job (river_server/jobs.py);
        its members are stored together and rank 0 is returned."""
        size = jobs.job_size(body)
        launch_with = {k: body.get(k) for k in ("launcher", "nproc_per_node")}
        network = None
        if size is not None:
            try:
                network = jobs.check_network(
                    self.overlay, body.get("network"), role, self.host_network_role
                )
            except jobs.JobNetworkRefused as exc:
                raise TaskError(403, str(exc)) from None
            body = jobs.member_body(body)
        kind, spec = _validate_spec(body)
        self._check_bounds(owner, spec)
        if vps is not None:  # a VPS incarnation (river_server.vps): a long-lived container
            kind = "vps"
            spec["vps"] = vps
        # A reserved overlay address (ip_token): recorded in spec, pins the reservation's node.
        body = self.overlay.apply_ip_token(body, owner, role, spec)
        if inherit_address_from is not None:
            body = self.overlay.inherit(body, spec, inherit_address_from)
        array = parse_array(body)
        if array is not None:
            spec["array"] = array
            spec["env"] = {**spec.get("env", {}), **array_env(array)}
        request = parse_request(body, min_cores=0 if role_at_least(role, "operator") else 1)
        launcher = jobs.check_launcher(launch_with, size, kind, request)
        name = body.get("name") or ""
        if not isinstance(name, str) or len(name) > 256:
            raise SpecError("'name' must be a string of at most 256 characters")
        self.check_privileges(spec, role)
        try:
            limit = self.time_limits.resolve(body.get("time_limit"), role)
        except TimeLimitRefused as exc:
            raise TaskError(400, str(exc)) from None
        if limit is not None:
            spec["time_limit"] = limit
        try:
            priority = self.priorities.resolve(body.get("priority"), role)
        except PriorityRefused as exc:
            raise TaskError(400, str(exc)) from None
        if body.get("preemptible"):
            spec["preemptible"] = True
        lease_id = self._bound_lease(owner, body.get("lease"))
        try:  # River's own images (VPS snapshots, environments) are their owners' alone
            check_images(self.sessions, self.environments, owner, role, spec)
        except ImageRefused as exc:
            raise TaskError(exc.status, str(exc)) from None
        reason = self.queue.infeasible(request, container=needs_container(spec), size=size)
        if reason:
            raise SpecError(reason)
        state = (
            TaskState.PENDING_APPROVAL.value
            if self.require_approval and not role_at_least(role, "operator")
            else TaskState.QUEUED.value
        )
        now = time.time()
        job_id = self.ids.next_id() if size is not None else None
        members = []
        for rank in range(size or 1):
            member_spec = spec
            if job_id is not None:
                job = {"id": str(job_id), "rank": rank, "size": size, "network": network}
                if launcher is not None:  # torchrun wraps the script (jobs.launcher_args)
                    job["launcher"] = launcher
                member_spec = {**spec, "job": job}
            members.append(
                db.Task(
                    id=self.ids.next_id(),
                    name=name,
                    owner=owner,
                    kind=kind,
                    spec=member_spec,
                    request=request.to_json(),
                    state=state,
                    submitted_at=now,
                    job_id=job_id,
                    job_rank=None if job_id is None else rank,
                    priority=priority,
                    lease_id=lease_id,
                )
            )
        with self.sessions.begin() as session:
            for task in members:
                session.add(task)
                detail = "submitted" if job_id is None else f"submitted in job {job_id}"
                session.add(db.TaskTransition(task_id=task.id, state=task.state, detail=detail))
                self.overlay.claim(session, task)  # spends the ip_token with the task
        for task in members:
            self.publish(task)
        self.queue.wake()
        return members[0]

    def _check_bounds(self, owner: str, spec: dict[str, Any]) -> None:
        """Refuse what would let one user grow the host's database without limit: a huge
        program text (stored with the task, sent to a runner and shown in the UI) and an
        endless queue (every dispatcher pass looks at each waiting task)."""
        size = len(json.dumps(spec, separators=(",", ":")).encode())
        if size > self.task_spec_max_bytes:
            raise TaskError(
                413,
                f"the task's script, command and env come to {size} bytes; this host takes at "
                f"most {self.task_spec_max_bytes} (c.RiverHost.task_spec_max_bytes): put "
                "large code or data in files (%%river --push, shared storage) and run those",
            )
        with self.sessions() as session:
            open_tasks = session.scalar(
                select(func.count())
                .select_from(db.Task)
                .where(db.Task.owner == owner, db.Task.state.not_in(FINAL_STATES))
            )
        if open_tasks >= self.max_tasks_per_user:
            raise TaskError(
                429,
                f"{owner} already has {open_tasks} unfinished tasks, the most this host takes "
                f"(c.RiverHost.max_tasks_per_user = {self.max_tasks_per_user}); wait for some "
                "to finish or kill queued ones",
            )

    def check_privileges(self, spec: dict[str, Any], role: str) -> None:
        """Raise TaskError(403) for container options beyond the caller's role: `privileged`
        and host bind mounts both give root on the node, so they are operator powers; a
        user may mount only under c.RiverHost.user_mount_prefixes."""
        if role_at_least(role, "operator"):
            return
        if spec.get("privileged"):
            raise TaskError(403, f"privileged containers need the operator role; you are {role}")
        prefixes = self.user_mount_prefixes
        if spec.get("mounts"):
            # The runner checks again, on the path resolved on its node (symlinks): the
            # path as written here says nothing about where it leads (dispatcher.launch_body).
            spec["user_mounts"] = True
        for mount in spec.get("mounts") or []:
            source = mount_source(mount)
            if not any(
                source == p.rstrip("/") or source.startswith(p.rstrip("/") + "/") for p in prefixes
            ):
                allowed = ", ".join(prefixes) or "none are configured"
                raise TaskError(
                    403,
                    f"mounting {source} needs the operator role; you are {role}, and users may "
                    f"mount only under c.RiverHost.user_mount_prefixes ({allowed})",
                )

    # ---- transitions ----------------------------------------------------------------
    def publish(self, task: db.Task) -> None:
        self.bus.publish(EVENT_TASK, {"task": self.to_json(task), "owner": task.owner})

    def transition(
        self,
        session: Session,
        task: db.Task,
        state: TaskState,
        detail: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move a task (inside the caller's transaction); False if it is already final."""
        if TaskState(task.state) in TERMINAL_STATES:
            return False
        now = time.time()
        if task.state in ACTIVE_STATES and not state.holds_resources and task.started_at:
            charge_usage(session, [task], now, self.fair_share)
        task.state = state.value
        for key, value in fields.items():
            setattr(task, key, value)
        if state == TaskState.RUNNING and task.started_at is None:
            task.started_at = now
        if state in TERMINAL_STATES:
            task.finished_at = now
            if detail and not task.reason:
                task.reason = detail
        session.add(db.TaskTransition(task_id=task.id, state=state.value, at=now, detail=detail))
        return True

    def commit_and_publish(self, session: Session, tasks: Iterable[db.Task]) -> None:
        tasks = list(tasks)
        session.commit()
        for task in tasks:
            self.publish(task)
        self._end_jobs_of(tasks)
        if any(TaskState(t.state).terminal or t.state == TaskState.QUEUED.value for t in tasks):
            self.queue.wake()

    def _end_jobs_of(self, tasks: list[db.Task]) -> None:
        """A job member that ended badly ends its job: the others are recorded killed
        (committed before anyone hears of it), then their runners are told to stop them."""
        ended = [t for t in tasks if t.job_id is not None and TaskState(t.state).terminal]
        if not ended:
            return
        for url, secret, task_id in jobs.end_siblings(self, self.connections, ended):
            self.work.call_on_loop(self._start_stop, url, secret, task_id)

    def _start_stop(self, url: str, secret: str, task_id: int) -> None:
        stop = asyncio.ensure_future(self.kill_on_runner(url, secret, task_id))
        self._stops.add(stop)
        stop.add_done_callback(self._stops.discard)

    # ---- user actions ---------------------------------------------------------------
    async def control(self, task: db.Task, action: str) -> db.Task:
        """kill / pause / resume on behalf of a user."""
        state = TaskState(task.state)
        if state.terminal:
            raise TaskError(409, f"task {task.id} is already {state.value}")
        if state in (TaskState.QUEUED, TaskState.PENDING_APPROVAL):
            if action != "kill":
                raise TaskError(
                    409,
                    f"task {task.id} is {state.value}; only running tasks can be paused or resumed",
                )
            return await self.work.write(self._end_here, task.id, "killed before it started")
        if action == "pause" and state != TaskState.RUNNING:
            raise TaskError(
                409, f"task {task.id} is {state.value}; only a running task can be paused"
            )
        if action == "resume" and state != TaskState.PAUSED:
            raise TaskError(
                409, f"task {task.id} is {state.value}; only a paused task can be resumed"
            )
        if action == "kill" and state == TaskState.ASSIGNING:
            return await self._kill_assigning(task)
        if action == "kill" and (task.spec or {}).get("preempting"):
            # Killed while being displaced: it ends killed, not back in the queue.
            await self.work.write(self._drop_preempting, task.id)
        node = self.connections.get(task.node or "")
        if node is None:
            if action != "kill":
                raise TaskError(409, f"node {task.node} is offline; try again when it is back")
            return await self.work.write(
                self._end_here, task.id, f"killed while node {task.node} was offline"
            )
        try:
            await self.runner_client.call(node.url, node.secret, f"/api/tasks/{task.id}/{action}")
        except RunnerUnreachable as exc:
            if exc.status == 404:
                # The runner no longer runs it: it has ended there and its final report is
                # on the way (the runner's outbox is ordered and retried). Answer with the
                # final state once it is in, never with the runner's 404 as a 502.
                raise await self._ended_on_runner(task.id) from None
            raise TaskError(502, f"could not {action} task {task.id}: {exc}") from None
        return task

    async def end_all_of(self, owner: str, why: str) -> int:
        """Kill every unfinished task (VPS incarnations included) of `owner`: a deleted
        account's work must not run on with nobody able to see or stop it. Returns how many
        were ended; one that ends on its own meanwhile is not an error."""
        tasks = await self.work.read(self._unfinished_of, owner)
        ended = 0
        for task in tasks:
            try:
                await self.control(task, "kill")
            except TaskError as exc:
                if exc.status != 409:
                    self.log.warning("could not end task %s of %s: %s", task.id, owner, exc)
                continue
            ended += 1
        if ended:
            self.log.info("ended %d task(s) of %s: %s", ended, owner, why)
        return ended

    def _unfinished_of(self, owner: str) -> list[db.Task]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(db.Task).where(
                        db.Task.owner == owner, db.Task.state.not_in(FINAL_STATES)
                    )
                )
            )

    def drop_preempting(self, task_id: int) -> None:
        """Forget that a task is being displaced (a kill, or a VPS snapshot that failed):
        its end is then its end, and its waiter looks for other victims."""
        self._drop_preempting(task_id)

    def _drop_preempting(self, task_id: int) -> None:
        with self.sessions.begin() as session:
            fresh = session.get(db.Task, task_id)
            if fresh is not None and (fresh.spec or {}).get("preempting"):
                fresh.spec = {k: v for k, v in fresh.spec.items() if k != "preempting"}

    def _bound_lease(self, owner: str, value: Any) -> int | None:
        """The kernel lease a submission binds it to (river_server/leases.py), or None."""
        if value in (None, ""):
            return None
        with self.sessions() as session:
            try:
                return leases.bound_lease(session, owner, value, time.time())
            except leases.LeaseRefused as exc:
                raise TaskError(exc.status, str(exc)) from None

    def end_now(self, task_id: int, why: str) -> db.Task:
        """Record the task KILLED with `why` (unless already final), before its runner is
        told: a lapsed kernel lease (leases.py). The runner's late report cannot undo it."""
        return self._end_here(task_id, why)

    def _end_here(self, task_id: int, why: str) -> db.Task:
        """Record KILLED (unless already final) before anyone hears of it."""
        with self.sessions() as session:
            fresh = session.get(db.Task, task_id)
            assert fresh is not None
            if self.transition(session, fresh, TaskState.KILLED, why):
                self.commit_and_publish(session, [fresh])
            return fresh

    async def _kill_assigning(self, task: db.Task) -> db.Task:
        """Kill a task placed on a runner that may not have it yet.

        The kill is recorded first, as the task's final state: whatever the runner does
        next, the host never goes back to `running` (a terminal state is final), and a
        launch that lands later is killed there (Dispatcher._launch checks the state after
        the runner answers; a report of it running is answered with a kill). Then the
        runner is told, best effort: a 404 only means the launch has not reached it yet.
        """
        fresh = await self.work.write(self._end_here, task.id, "killed before it started")
        node = self.connections.get(task.node or "")
        if node is not None:
            await self.kill_on_runner(node.url, node.secret, task.id)
        return fresh

    async def kill_on_runner(self, url: str, secret: str, task_id: int) -> None:
        """Tell a runner to stop a task the host has already ended; any failure is logged
        (reconciliation kills what the runner still reports)."""
        try:
            await self.runner_client.call(url, secret, f"/api/tasks/{task_id}/kill")
        except RunnerUnreachable as exc:
            if exc.status != 404:
                self.log.warning("could not kill task %s on its runner: %s", task_id, exc)

    async def _ended_on_runner(self, task_id: int) -> TaskError:
        """The 409 for a task its runner no longer runs, with its final state when the
        runner's report arrives within KILL_REPORT_WAIT_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_REPORT_WAIT_S
        while True:
            state = await self.work.read(self.state_of, task_id)
            if state is None or state.terminal:
                final = state.value if state else "gone"
                return TaskError(409, f"task {task_id} already ended: {final}")
            if loop.time() >= deadline:
                return TaskError(
                    409,
                    f"task {task_id} already ended on its runner; its final state is still on "
                    "the way (see GET /river/api/tasks/ID shortly)",
                )
            await asyncio.sleep(0.05)

    def state_of(self, task_id: int) -> TaskState | None:
        with self.sessions() as session:
            fresh = session.get(db.Task, task_id)
            return TaskState(fresh.state) if fresh is not None else None

    # ---- runner reports -------------------------------------------------------------
    def apply_runner_messages(
        self, node_name: str, messages: list[dict[str, Any]]
    ) -> tuple[list[str], int]:
        """Apply an ordered batch from a runner; return the IDs of tasks the runner should
        stop, and how many messages were dropped because they were about tasks that were
        not placed on that runner.

        A runner speaks only for the tasks placed on it (`task.node`): its credential is no
        licence to append lines (a `--pull` marker becomes a pickle the owner's kernel
        loads) or states to anyone else's task. Foreign messages are dropped, not refused:
        an honest runner can hold lines of a task the host has since moved, and a refused
        batch would stay at the head of its outbox for ever.
        """
        stop: list[str] = []
        dropped = 0
        changed: dict[int, db.Task] = {}
        with self.sessions() as session:
            for message in messages:
                task_id = int(message["task_id"])
                task = changed.get(task_id) or session.get(db.Task, task_id)
                if task is None or task.node != node_name:
                    dropped += 1
                    if message.get("kind") != "log":
                        stop.append(str(task_id))
                    continue
                if message.get("kind") == "log":
                    lines = message.get("lines") or []
                    offset = int((task.spec or {}).get("log_offset") or 0)
                    self._apply_log(task_id, preemption.shift(lines, offset))
                    continue
                if self._apply_status(session, task, message):
                    changed[task_id] = task
                elif TaskState(task.state).terminal and message.get("state") in (
                    "running",
                    "paused",
                ):
                    stop.append(str(task_id))
            self.commit_and_publish(session, changed.values())
        if dropped:
            self.log.warning(
                "runner %s reported on %d message(s) about tasks not placed on it; dropped",
                node_name,
                dropped,
            )
        return stop, dropped

    def _apply_status(self, session: Session, task: db.Task, message: dict[str, Any]) -> bool:
        try:
            state = TaskState(message["state"])
        except (KeyError, ValueError):
            return False
        if state not in RUNNER_REPORTABLE or state.value == task.state:
            return False
        if (
            (task.spec or {}).get("preempting")
            and state.terminal
            # A VPS's shell exits 0 on a signal: its every end while displaced is the kill.
            and (state != TaskState.COMPLETED or bool((task.spec or {}).get("vps")))
            and task.state in ACTIVE_STATES
        ):
            return self._requeue_displaced(session, task)
        fields: dict[str, Any] = {}
        if "exit_code" in message:
            fields["exit_code"] = message["exit_code"]
        return self.transition(session, task, state, message.get("detail") or None, **fields)

    def _requeue_displaced(self, session: Session, task: db.Task) -> bool:
        """A displaced preemptible task has stopped: back to the queue, never lost. Its
        log gets a marker line and its next run's lines follow (preemption.py)."""
        note = preemption.requeue_note(task)
        last = self.logs.last_seq(task.id)
        marker = preemption.marker_line(task, last, note)
        fields = preemption.requeue_fields(task, last)
        if not self.transition(session, task, TaskState.QUEUED, note, **fields):
            return False
        task.reason = note  # why it is back in the queue (cleared when it is placed again)
        self._apply_log(task.id, [marker])
        return True

    def _apply_log(self, task_id: int, lines: list[dict[str, Any]]) -> None:
        for line in self.blobs.append_log(self.logs, task_id, lines):
            self.bus.publish(EVENT_LOG, {"task_id": str(task_id), **line})

    def mark_lost(self, session: Session, tasks: Iterable[db.Task], why: str) -> list[db.Task]:
        return [t for t in tasks if self.transition(session, t, TaskState.LOST, why)]

    def active_on(self, session: Session, node_name: str) -> list[db.Task]:
        return list(
            session.scalars(
                select(db.Task).where(db.Task.node == node_name, db.Task.state.in_(ACTIVE_STATES))
            )
        )
