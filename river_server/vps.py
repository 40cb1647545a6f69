"""VPSes: long-lived containers or QEMU VMs built on tasks (see docs/vps.md).

A VPS has its own snowflake ID. Each time it runs it is one task of kind "vps" (an
*incarnation*) whose `spec["vps"]` carries the VPS's record: id, SSH mode, snapshots, and
whether it was stopped or deleted. Scheduling, resources, ownership, events and
reconciliation are the task machinery's. Stop commits the container (`docker commit` to
`river-vps/<id>:<n>` on its runner, newest `c.RiverHost.vps_snapshots_keep` kept) and then
kills it; restart submits a new incarnation from the newest snapshot, pinned to the node that
holds it. The newest incarnation's record is the VPS's current one.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from river_runner import sshkeys
from river_runner.protocol import TaskState
from river_runner.spec import SpecError, parse_memory
from river_server import db, vps_apps
from river_server.auth import role_at_least
from river_server.runner_client import RunnerClient, RunnerUnreachable
from river_server.tasks import TaskError, TaskService
from river_server.vps_record import newest_snapshot

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from river_runner.ids import SnowflakeGenerator
    from river_server.nodes import NodeConnections
    from river_server.ssh_proxy import SshProxy

SSH_MODES = ("disabled", "none", "upload", "generate")
# Runs in any image with a POSIX shell; ends at once on SIGTERM (docker stop / kill). With
# SSH keys given (and an sshd in the image) it first installs them for root, makes the
# VPS's own host keys once (they persist in its snapshots) and starts sshd.
VPS_COMMAND = """trap 'exit 0' TERM INT
if [ -n "$RIVER_SSH_AUTHORIZED_KEYS" ] && [ -x /usr/sbin/sshd ]; then
  mkdir -p /root/.ssh /run/sshd && chmod 700 /root/.ssh
  printf '%s\\n' "$RIVER_SSH_AUTHORIZED_KEYS" > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  ssh-keygen -A >/dev/null 2>&1
  /usr/sbin/sshd -D -e &
elif [ -n "$RIVER_SSH_AUTHORIZED_KEYS" ]; then
  echo "river: this image has no /usr/sbin/sshd; SSH into this VPS will not work" >&2
fi
while :; do sleep 3600 & wait $!; done"""
SSH_KEYS_ENV = "RIVER_SSH_AUTHORIZED_KEYS"
RESOURCE_FIELDS = ("cores", "memory", "gpus", "target", "time_limit", "priority")
DEFAULT_VM_DISK = "8G"
MIN_VM_DISK, MAX_VM_DISK = 2 * 1024**3, 2 * 1024**4


def repository(vps_id: int | str) -> str:
    return f"river-vps/{vps_id}"


def _ssh_settings(body: dict[str, Any], vps_id: int) -> tuple[dict[str, Any], str | None]:
    """The recorded SSH settings and, for `generate`, the private key (returned once)."""
    mode = body.get("ssh", "disabled")
    if mode in (None, False):
        mode = "disabled"
    if mode not in SSH_MODES:
        raise SpecError(f"ssh must be one of {', '.join(SSH_MODES)}, not {mode!r}")
    settings: dict[str, Any] = {"ssh": mode}
    private = None
    if mode == "upload":
        key = body.get("public_key")
        if not isinstance(key, str) or not key.strip().startswith(("ssh-", "ecdsa-", "sk-")):
            raise SpecError("ssh 'upload' needs 'public_key': an OpenSSH public key line")
        settings["public_key"] = key.strip()
    elif mode == "generate":
        private, public = sshkeys.new_key(f"river-vps-{vps_id}")
        settings["public_key"] = public
    elif body.get("public_key") not in (None, ""):
        raise SpecError("'public_key' goes with ssh 'upload' only")
    return settings, private


class VpsService:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        tasks: TaskService,
        ids: SnowflakeGenerator,
        connections: NodeConnections,
        runner_client: RunnerClient,
        log: logging.Logger,
        snapshots_keep: int,
    ) -> None:
        self.sessions = sessions
        self.tasks = tasks
        self.ids = ids
        self.connections = connections
        self.runner_client = runner_client
        self.log = log
        self.snapshots_keep = snapshots_keep
        # The SSH proxy, once the app has it listening (None: no SSH access to VPSes).
        self.ssh_proxy: SshProxy | None = None
        self.terminals: dict[str, str] = {}  # terminal name → VPS owner

    # ---- reading --------------------------------------------------------------------
    def incarnations(self, owner: str | None = None) -> dict[int, list[db.Task]]:
        """VPS id → its tasks, oldest first (deleted VPSes left out)."""
        query = select(db.Task).where(db.Task.kind == "vps").order_by(db.Task.id)
        if owner is not None:
            query = query.where(db.Task.owner == owner)
        with self.sessions() as session:
            rows = session.scalars(query).all()
        found: dict[int, list[db.Task]] = {}
        for task in rows:
            record = (task.spec or {}).get("vps") or {}
            if "id" in record:
                found.setdefault(int(record["id"]), []).append(task)
        return {k: v for k, v in found.items() if not v[-1].spec["vps"].get("deleted")}

    def current(self, vps_id: int) -> db.Task | None:
        """The VPS's newest incarnation (None when deleted or unknown). The database picks
        it (one row back, not every incarnation of every VPS): the proxy and the SSH proxy
        ask on every request and login."""
        with self.sessions() as session:
            task = db.newest_vps_task(session, vps_id)
        if task is None or task.spec["vps"].get("deleted"):
            return None
        return task

    def to_json(self, task: db.Task) -> dict[str, Any]:
        record = task.spec["vps"]
        state = task.state
        if TaskState(state).terminal:
            state = "stopped" if record.get("stopped") else state
        data = self.tasks.to_json(task)
        return {
            "id": str(record["id"]),
            "name": task.name,
            "owner": task.owner,
            "hostname": record.get("hostname"),
            "state": state,
            "task_state": task.state,
            "task_id": str(task.id),
            "node": task.node,
            "image": record.get("image"),
            "running_image": task.spec.get("image"),
            "ssh": record.get("ssh", "disabled"),
            "public_key": record.get("public_key"),
            "snapshots": list(record.get("snapshots") or []),
            "snapshot_node": record.get("snapshot_node"),
            "vm": bool(record.get("vm")),
            "disk": (record.get("vm") or {}).get("disk"),
            # Its reserved overlay address (ip_token), a VM's as a container's; restarts keep it.
            "overlay_ip": (task.spec or {}).get("overlay_ip"),
            "ports": list(record.get("apps") or []),
            "ssh_proxy_port": self._ssh_port(record),
            "created_at": record.get("created_at"),
            "request": data.get("request"),
            "cpus": data.get("cpus"),
            "gpus": data.get("gpus"),
            "memory": data.get("memory"),
            "reason": (record.get("stopped_reason") if record.get("stopped") else None)
            or task.reason,
            "no_cull": bool(record.get("no_cull")),
            "preemptible": bool(task.spec.get("preemptible")),
        }

    def _ssh_port(self, record: dict[str, Any]) -> int | None:
        proxy = self.ssh_proxy
        if proxy is None or record.get("ssh", "disabled") == "disabled":
            return None
        return proxy.port

    def authorized_keys(self, record: dict[str, Any]) -> str:
        """root's authorized_keys in the VPS: the proxy's key, and the user's own (so the
        key also works where the VPS's address is reachable, e.g. on the overlay)."""
        if record.get("ssh", "disabled") == "disabled":
            return ""
        lines = []
        if self.ssh_proxy is not None:
            lines.append(self.ssh_proxy.authorized_key)
        if record.get("public_key"):
            lines.append(record["public_key"])
        return "\n".join(lines)

    # ---- lifecycle ------------------------------------------------------------------
    def create(self, owner: str, body: dict[str, Any], role: str) -> tuple[db.Task, str | None]:
        if body.get("no_cull") and not role_at_least(role, "operator"):
            raise TaskError(
                403,
                f"no_cull (never stopped for being idle) needs the operator role; you are "
                f"{role}: leave it out, or ask an operator",
            )
        vm = self._vm_settings(body)
        if body.get("preemptible") and vm is not None:
            raise SpecError(
                "a VM VPS cannot be preemptible (only a container's snapshot can be taken "
                "before it is displaced); leave out 'preemptible' or 'vm'"
            )
        vps_id = self.ids.next_id()
        settings, private = _ssh_settings(body, vps_id)
        image = body.get("image") or None  # None: the runner's default image
        record = {
            "id": str(vps_id),
            "image": image,
            "hostname": f"vps-{vps_id}",
            "created_at": time.time(),
            "snapshots": [],
            **settings,
            # A JupyterHub server's port (river_server/hub_servers.py), kept by restarts.
            "hub_port": body.get("hub_port") or None,
        }
        if vm is not None:
            record["vm"] = vm
        if body.get("no_cull"):
            record["no_cull"] = True
        task_body = self._task_body(body, image, self.authorized_keys(record))
        task = self.tasks.submit(owner, task_body, role=role, vps=record)
        return task, private

    def _vm_settings(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A VM's record ({"disk": bytes}) when the request asks for one, else None; a VM
        request no node can run is refused with each node's reason."""
        backend = body.get("backend") or "docker"
        wanted = bool(body.get("vm")) or backend in ("vm", "qemu")
        if backend not in ("docker", "vm", "qemu"):
            raise SpecError(f"backend must be 'docker' or 'vm', not {backend!r}")
        if not wanted:
            if body.get("disk") not in (None, ""):
                raise SpecError("'disk' sizes a VM's disk; add vm: true (--vm) or leave it out")
            return None
        for key in ("image", "mounts", "privileged", "environment"):
            if body.get(key):
                raise SpecError(
                    f"'{key}' applies to container VPSes; a VM boots its runner's base image"
                )
        disk = parse_memory(body.get("disk") or DEFAULT_VM_DISK)
        if not MIN_VM_DISK <= disk <= MAX_VM_DISK:
            raise SpecError("disk must be between 2G and 2T, e.g. 20G")
        capable = self.connections.vm_nodes()
        if not capable:
            raise TaskError(400, f"cannot create a VM: {self.connections.no_vm_reason()}")
        target = str(body.get("target") or "").split(":")[0]
        if target and target not in capable:
            raise TaskError(
                400, f"cannot create a VM on {target}: {self.connections.no_vm_reason()}"
            )
        return {"disk": disk}

    @staticmethod
    def _task_body(body: dict[str, Any], image: str | None, keys: str) -> dict[str, Any]:
        task_body: dict[str, Any] = {
            "kind": "command",
            "command": ["/bin/sh", "-c", VPS_COMMAND],
            "name": body.get("name") or "",
        }
        if image:
            task_body["image"] = image
        for key in ("env", "mounts", "privileged", "ip_token", "preemptible", *RESOURCE_FIELDS):
            if body.get(key) not in (None, ""):
                task_body[key] = body[key]
        env = {k: v for k, v in (task_body.get("env") or {}).items() if k != SSH_KEYS_ENV}
        if keys:
            env[SSH_KEYS_ENV] = keys
        if env:
            task_body["env"] = env
        return task_body

    def _save_record(self, task: db.Task, **changes: Any) -> db.Task:
        with self.sessions() as session:
            fresh = session.get(db.Task, task.id)
            assert fresh is not None
            spec = dict(fresh.spec)
            spec["vps"] = {**spec["vps"], **changes}
            fresh.spec = spec
            flag_modified(fresh, "spec")
            session.commit()
            session.refresh(fresh)
            session.expunge(fresh)
        return fresh

    async def _runner_call(self, task: db.Task, action: str, body: dict[str, Any]) -> dict:
        node = self.connections.get(task.node or "")
        if node is None:
            raise TaskError(409, f"node {task.node} is offline; try again when it is back")
        try:
            return await self.runner_client.call(
                node.url, node.secret, f"/api/tasks/{task.id}/{action}", body
            )
        except RunnerUnreachable as exc:
            if exc.status == 409:  # the runner says why it cannot (e.g. a VM without its key)
                raise TaskError(409, str(exc).partition("said 409: ")[2] or str(exc)) from None
            raise TaskError(502, f"could not {action} VPS on {task.node}: {exc}") from None

    async def snapshot(self, task: db.Task, stopping: bool = False) -> db.Task:
        """A container's `docker commit` now; a VM's disk only as part of a stop (taken
        after its clean shutdown, river_runner/vm_snapshots.py)."""
        if task.spec["vps"].get("vm") and not stopping:
            raise TaskError(
                409,
                "a VM's disk is snapshotted when it stops (after its clean shutdown): "
                "stop it (%river vps stop ID); restart boots the newest snapshot",
            )
        if task.state not in (TaskState.RUNNING.value, TaskState.PAUSED.value):
            raise TaskError(409, f"the VPS is {self.to_json(task)['state']}; snapshots need it up")
        record = task.spec["vps"]
        result = await self._runner_call(
            task,
            "snapshot",
            {"repository": repository(record["id"]), "keep": self.snapshots_keep},
        )
        snapshots = [f"{repository(record['id'])}:{n}" for n in result.get("snapshots", [])]
        return self._save_record(task, snapshots=snapshots, snapshot_node=task.node)

    def snapshots(self, task: db.Task) -> list[dict[str, Any]]:
        """The VPS's snapshots, oldest first: image, number, node; the newest is what a
        restart starts from."""
        record = task.spec["vps"]
        found = []
        for image in record.get("snapshots") or []:
            number = image.rpartition(":")[2]
            found.append(
                {"image": image, "number": int(number), "node": record.get("snapshot_node")}
            )
        return found

    async def delete_snapshot(self, task: db.Task, number: int) -> db.Task:
        """Remove one snapshot's image from its node and from the record."""
        record = task.spec["vps"]
        image = f"{repository(record['id'])}:{number}"
        if image not in (record.get("snapshots") or []):
            raise TaskError(404, f"VPS {record['id']} has no snapshot {number}")
        node = self.connections.get(record.get("snapshot_node") or "")
        if node is None:
            raise TaskError(
                409, f"node {record.get('snapshot_node')} holds that snapshot and is offline"
            )
        try:
            await self.runner_client.call(
                node.url,
                node.secret,
                f"/api/tasks/{task.id}/forget",
                {"repository": repository(record["id"]), "numbers": [number]},
            )
        except RunnerUnreachable as exc:
            raise TaskError(502, f"could not remove snapshot {number}: {exc}") from None
        kept = [s for s in record["snapshots"] if s != image]
        return self._save_record(task, snapshots=kept)

    async def stop(self, task: db.Task, reason: str | None = None) -> db.Task:
        """Snapshot, then end it. `reason`: why, when not its owner's wish (a time limit,
        river_server/vps_limits.py), shown as the stopped VPS's reason."""
        if TaskState(task.state).terminal:
            raise TaskError(409, f"the VPS is already {self.to_json(task)['state']}")
        if task.state in (TaskState.RUNNING.value, TaskState.PAUSED.value):
            # A VM's runner takes it once the ACPI shutdown has ended QEMU (vm_snapshots.py).
            task = await self.snapshot(task, stopping=True)
        elif task.spec["vps"].get("vm"):
            # A VM that never came up: its disk (if any) stays on its node for the restart.
            task = self._save_record(task, snapshot_node=task.node)
        # (A VPS that never started has nothing to keep: it just ends.)
        task = self._save_record(task, stopped=True, stopped_reason=reason)
        try:
            await self.tasks.control(task, "kill")
        except TaskError:
            self._save_record(task, stopped=False, stopped_reason=None)
            raise
        return task

    async def restart(self, task: db.Task, role: str) -> db.Task:
        if not TaskState(task.state).terminal:
            raise TaskError(409, f"the VPS is {task.state}; stop it before restarting")
        record = dict(task.spec["vps"])
        body: dict[str, Any] = {"name": task.name, **_request_body(task.request or {})}
        for key in ("env", "mounts", "privileged", "time_limit"):
            if task.spec.get(key):
                body[key] = task.spec[key]
        if task.priority:
            body["priority"] = task.priority
        if task.spec.get("preemptible"):
            body["preemptible"] = True
        image = record.get("image")
        if record.get("vm") and record.get("snapshot_node"):
            body["target"] = (task.request or {}).get("target") or record["snapshot_node"]
        elif snapshot := newest_snapshot(record, (task.request or {}).get("target")):
            image, body["target"] = snapshot  # the image lives on the node that holds it
        record["stopped"] = False
        record["stopped_reason"] = None
        record["idle_since"] = None  # a new incarnation is judged afresh (idle_cull.py)
        record["apps"] = []  # started apps end with the container
        record["incarnation"] = int(record.get("incarnation", 0)) + 1
        task_body = self._task_body(body, image, self.authorized_keys(record))
        return self.tasks.submit(
            task.owner, task_body, role=role, vps=record, inherit_address_from=task.id
        )

    async def control(self, task: db.Task, action: str) -> db.Task:
        if action in ("pause", "resume"):
            return await self.tasks.control(task, action)
        raise TaskError(400, f"unknown action {action}")

    async def open_terminal(self, task: db.Task, terminal_manager: Any) -> str:
        """A JupyterLab terminal running a TTY shell in the VPS: the runner issues a
        single-use exec ticket, and the terminal runs river_runner.vps_shell against the
        runner's exec WebSocket (so it works wherever the runner is). Its owner may use it
        (RiverAuthorizer asks `terminal_owner`)."""
        if terminal_manager is None:
            raise TaskError(503, "this server has no terminals (jupyter-server-terminals)")
        if task.state != TaskState.RUNNING.value:
            raise TaskError(409, f"the VPS is {self.to_json(task)['state']}, not running")
        answer = await self._runner_call(task, "exec-ticket", {})
        node = self.connections.get(task.node or "")
        assert node is not None  # _runner_call just reached it
        base = "ws" + node.url.rstrip("/")[len("http") :]
        url = f"{base}/api/tasks/{task.id}/exec?ticket={answer['ticket']}"
        name = f"river_vps_{task.spec['vps']['id']}_{secrets.token_hex(4)}"
        terminal_manager.create(
            name=name, shell_command=[sys.executable, "-m", "river_runner.vps_shell", url]
        )
        self.terminals[name] = task.owner
        return name

    async def exec(self, task: db.Task, command: Any, detach: bool) -> dict[str, Any]:
        """Run a command in the VPS (no TTY): detached, or to its end with exit code and
        output. How `%river vps jupyter` starts Jupyter inside it."""
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise SpecError('command must be a list of strings, e.g. ["ls", "-l"]')
        if task.state != TaskState.RUNNING.value:
            raise TaskError(409, f"the VPS is {self.to_json(task)['state']}, not running")
        return await self._runner_call(task, "exec-run", {"command": command, "detach": detach})

    async def start_app(self, task: db.Task, body: dict[str, Any], base_url: str) -> db.Task:
        """Start Jupyter or TensorBoard in the VPS (river_server/vps_apps.py) and record it
        among the VPS's ports; the caller waits for it to answer through the proxy."""
        vps_id = str(task.spec["vps"]["id"])
        launch = vps_apps.plan(body, vps_id, base_url)
        found = await self.exec(task, launch.probe, detach=False)
        if found.get("exit_code") != 0:
            raise TaskError(409, vps_apps.not_installed(launch.name, vps_id))
        await self.exec(task, launch.command, detach=True)
        entry = {
            "port": launch.port,
            "name": launch.name,
            "path": launch.path,
            "ready_path": launch.ready_path,
        }
        others = [p for p in task.spec["vps"].get("apps") or [] if p.get("port") != launch.port]
        return self._save_record(task, apps=[*others, entry])

    def terminal_owner(self, name: str) -> str | None:
        return self.terminals.get(name)

    async def delete(self, task: db.Task) -> None:
        state = TaskState(task.state)
        if not state.terminal:
            await self.tasks.control(task, "kill")
        record = task.spec["vps"]
        node_name = record.get("snapshot_node") or task.node
        if (record.get("snapshots") or record.get("vm")) and node_name:
            node = self.connections.get(node_name)
            if node is not None:
                try:
                    await self.runner_client.call(
                        node.url,
                        node.secret,
                        f"/api/tasks/{task.id}/forget",
                        {"repository": repository(record["id"])},
                    )
                except RunnerUnreachable as exc:
                    self.log.warning("VPS %s: snapshots not removed: %s", record["id"], exc)
        self._save_record(task, deleted=True)


def _request_body(request: dict[str, Any]) -> dict[str, Any]:
    """Submission fields that ask again for what a stored ResourceRequest asked for."""
    body: dict[str, Any] = {}
    if request.get("cores") is not None:
        body["cores"] = request["cores"]
    if request.get("memory"):
        body["memory"] = request["memory"]
    if request.get("gpus"):
        body["gpus"] = request["gpus"]
    if request.get("target"):
        body["target"] = request["target"]
    return body


def visible_to(task: db.Task, username: str, role: str) -> bool:
    return task.owner == username or role_at_least(role, "operator")
