"""The runner's HTTP API, which only the host may call (runner credential required)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
import time
from typing import Any

from tornado import web, websocket

from river_runner import port_forward
from river_runner.agent import RunnerAgent
from river_runner.api_base import RunnerHandler
from river_runner.backends.base import ExecRefused, TaskLaunch
from river_runner.protocol import parse_runner_auth, same_secret
from river_runner.task_files_api import TaskFilesHandler

log = logging.getLogger("river.runner")


class HealthHandler(RunnerHandler):
    async def get(self) -> None:
        self.finish({"name": self.agent.config.name, "running": self.agent.backend.running()})


class LaunchHandler(RunnerHandler):
    async def post(self) -> None:
        body = self.json_body()
        try:
            launch = TaskLaunch.from_json(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise web.HTTPError(400, f"bad launch request: {exc}") from None
        try:
            handle = await self.agent.launch(launch)
        except Exception as exc:
            log.warning("could not start task %s", launch.task_id, exc_info=True)
            raise web.HTTPError(500, f"could not start task {launch.task_id}: {exc}") from None
        self.finish({"task_id": str(launch.task_id), "handle": str(handle)})


class ControlHandler(RunnerHandler):
    async def post(self, task_id: str, action: str) -> None:
        backend = self.agent.backend
        if action == "terminate":  # preemption's checkpoint signal: SIGTERM, SIGKILL after grace
            grace = self.json_body().get("grace", 30.0)
            if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
                raise web.HTTPError(400, "grace must be a number of seconds, at least 0")
            if not await backend.terminate(int(task_id), float(grace)):
                raise web.HTTPError(404, f"task {task_id} is not running here")
            self.finish({"task_id": task_id, "action": action})
            return
        operation = {"kill": backend.kill, "pause": backend.pause, "resume": backend.resume}[action]
        if action == "kill" and self.agent.cancel_fetch(int(task_id)):
            self.finish({"task_id": task_id, "action": action})  # stopped before it started
            return
        done = await operation(int(task_id))
        if not done:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        if action in ("pause", "resume"):
            self.agent.report_pause(int(task_id), paused=action == "pause")
        self.finish({"task_id": task_id, "action": action})


VPS_REPOSITORY_RE = re.compile(r"^river-vps/[0-9]+$")


class SnapshotHandler(RunnerHandler):
    """VPS snapshots (docker backend): `snapshot` commits the running container of a task to
    the next tag of `repository` and keeps the newest `keep`; `forget` removes the tags in
    `numbers` (all of them without it)."""

    async def post(self, task_id: str, action: str) -> None:
        body = self.json_body()
        repository = body.get("repository")
        if not isinstance(repository, str) or not VPS_REPOSITORY_RE.match(repository):
            raise web.HTTPError(400, "repository must be river-vps/<id>")
        backend = self.agent.backend
        if not hasattr(backend, "snapshot"):
            raise web.HTTPError(409, f"the {backend.name} backend keeps no snapshots")
        if action == "forget":
            numbers = body.get("numbers")
            if numbers is not None and not (
                isinstance(numbers, list) and all(isinstance(n, int) for n in numbers)
            ):
                raise web.HTTPError(400, "numbers must be a list of snapshot numbers")
            removed = await backend.forget_snapshots(repository, numbers)
            self.finish({"removed": removed})
            return
        try:
            keep = int(body.get("keep", 3))
        except (TypeError, ValueError):
            raise web.HTTPError(400, "keep must be a number") from None
        try:
            result = await backend.snapshot(int(task_id), repository, keep)
        except Exception as exc:
            raise web.HTTPError(500, f"snapshot of task {task_id} failed: {exc}") from None
        if result is None:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        self.finish(result)


EXEC_TICKET_TTL_S = 60.0
# A login shell: bash where the image has it, else sh.
EXEC_SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null; then exec bash -l; fi; exec sh -l"]


class ExecTickets:
    """Single-use, short-lived tickets for the exec WebSocket: the host asks for one (with
    its runner credential) and hands it to the terminal process that connects; so the
    runner secret never leaves the host, and a ticket seen in a process list is worth one
    connection within a minute."""

    def __init__(self) -> None:
        self._tickets: dict[str, tuple[int, float]] = {}

    def issue(self, task_id: int) -> str:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        ticket = secrets.token_urlsafe(32)
        self._tickets[ticket] = (task_id, now + EXEC_TICKET_TTL_S)
        return ticket

    def redeem(self, ticket: str, task_id: int) -> bool:
        entry = self._tickets.pop(ticket, None)
        return entry is not None and entry[0] == task_id and entry[1] > time.monotonic()


class ExecTicketHandler(RunnerHandler):
    def initialize(self, agent: RunnerAgent, tickets: ExecTickets) -> None:  # type: ignore[override]
        super().initialize(agent)
        self.tickets = tickets

    async def post(self, task_id: str) -> None:
        if not hasattr(self.agent.backend, "open_exec"):
            raise web.HTTPError(409, f"the {self.agent.backend.name} backend has no exec")
        if int(task_id) not in self.agent.backend.running():
            raise web.HTTPError(404, f"task {task_id} is not running here")
        # Per task (a runner with VMs): refused now, not by the terminal it would open.
        refusal = getattr(self.agent.backend, "exec_refusal", None)
        if refusal is not None and (why := refusal(int(task_id))):
            raise web.HTTPError(409, why)
        self.finish({"ticket": self.tickets.issue(int(task_id))})


class ExecRunHandler(RunnerHandler):
    """Run a command in a task's container, detached or to its end (no TTY): how the host
    starts Jupyter or TensorBoard in a VPS."""

    async def post(self, task_id: str) -> None:
        body = self.json_body()
        command = body.get("command")
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            raise web.HTTPError(400, "command must be a non-empty list of strings")
        backend = self.agent.backend
        if not hasattr(backend, "run_exec"):
            raise web.HTTPError(409, f"the {backend.name} backend has no exec")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                None, backend.run_exec, int(task_id), command, bool(body.get("detach"))
            )
        except ExecRefused as exc:
            raise web.HTTPError(409, str(exc)) from None
        except Exception as exc:
            raise web.HTTPError(502, f"exec in task {task_id} failed: {exc}") from None
        if result is None:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        self.finish(result)


class ExecSocket(websocket.WebSocketHandler):
    """A shell with a TTY in a task's container. Auth: a ticket (?ticket=) from
    ExecTicketHandler, or the runner credential. Binary frames carry the terminal's bytes
    both ways; a text frame {"resize": [rows, cols]} resizes it."""

    def initialize(self, agent: RunnerAgent, tickets: ExecTickets) -> None:
        self.agent = agent
        self.tickets = tickets
        self.exec_id: str | None = None
        self.raw: Any = None

    async def get(self, task_id: str) -> None:  # type: ignore[override]
        secret = parse_runner_auth(self.request.headers.get("Authorization"))
        ticket = self.get_argument("ticket", "")
        if not (
            (secret and same_secret(secret, self.agent.inbound_secret))
            or (ticket and self.tickets.redeem(ticket, int(task_id)))
        ):
            raise web.HTTPError(401, reason="runner credential or exec ticket required")
        if not hasattr(self.agent.backend, "open_exec"):
            raise web.HTTPError(409, reason="this backend has no exec")
        loop = asyncio.get_running_loop()
        try:
            opened = await loop.run_in_executor(
                None, self.agent.backend.open_exec, int(task_id), EXEC_SHELL
            )
        except ExecRefused as exc:
            raise web.HTTPError(409, reason=str(exc)) from None
        except Exception as exc:
            raise web.HTTPError(502, reason=f"exec failed: {exc}") from None
        if opened is None:
            raise web.HTTPError(404, reason=f"task {task_id} is not running here")
        self.exec_id, self.raw = opened
        await super().get(task_id)

    def open(self, task_id: str) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        threading.Thread(target=self._pump, args=(loop,), daemon=True).start()

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while True:
                data = self.raw.recv(65536)
                if not data:
                    break
                loop.call_soon_threadsafe(self._send, data)
        except OSError:
            pass
        loop.call_soon_threadsafe(self.close)

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(websocket.WebSocketClosedError):
            self.write_message(data, binary=True)

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            try:
                rows, cols = json.loads(message)["resize"]
                self.agent.backend.resize_exec(self.exec_id, int(rows), int(cols))
            except (ValueError, KeyError, TypeError):
                pass
            return
        with contextlib.suppress(OSError):
            self.raw.sendall(message)

    def on_close(self) -> None:
        if self.raw is not None:
            with contextlib.suppress(OSError):
                self.raw.close()


def make_app(agent: RunnerAgent) -> web.Application:
    args = {"agent": agent}
    exec_args = {"agent": agent, "tickets": ExecTickets()}
    return web.Application(
        [
            (r"/api/health", HealthHandler, args),
            (r"/api/tasks", LaunchHandler, args),
            (r"/api/tasks/(\d+)/(kill|pause|resume|terminate)", ControlHandler, args),
            (r"/api/tasks/(\d+)/(snapshot|forget)", SnapshotHandler, args),
            (r"/api/tasks/(\d+)/exec-ticket", ExecTicketHandler, exec_args),
            (r"/api/tasks/(\d+)/exec", ExecSocket, exec_args),
            (r"/api/tasks/(\d+)/exec-run", ExecRunHandler, args),
            (r"/api/tasks/(\d+)/files/(put|get)", TaskFilesHandler, args),
            *port_forward.routes(args),
        ]
    )
