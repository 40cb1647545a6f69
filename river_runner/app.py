"""The runner's HTTP API, which only the host may call (runner credential required)."""

from __future__ import annotations

import hmac
import json
from typing import Any

from tornado import web

from river_runner.agent import RunnerAgent
from river_runner.backends.base import TaskLaunch
from river_runner.protocol import parse_runner_auth


class RunnerHandler(web.RequestHandler):
    """Base: every request must carry the secret this runner gave the host."""

    agent: RunnerAgent

    def initialize(self, agent: RunnerAgent) -> None:
        self.agent = agent

    def prepare(self) -> None:
        secret = parse_runner_auth(self.request.headers.get("Authorization"))
        if not secret or not hmac.compare_digest(secret, self.agent.inbound_secret):
            raise web.HTTPError(401, reason="runner credential required")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], web.HTTPError) and exc_info[1].log_message:
            message = exc_info[1].log_message
        self.finish({"message": message})

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as exc:
            raise web.HTTPError(400, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return body


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
            raise web.HTTPError(500, f"could not start task {launch.task_id}: {exc}") from None
        self.finish({"task_id": str(launch.task_id), "handle": str(handle)})


class ControlHandler(RunnerHandler):
    async def post(self, task_id: str, action: str) -> None:
        backend = self.agent.backend
        operation = {"kill": backend.kill, "pause": backend.pause, "resume": backend.resume}[action]
        done = await operation(int(task_id))
        if not done:
            raise web.HTTPError(404, f"task {task_id} is not running here")
        if action in ("pause", "resume"):
            self.agent.report_pause(int(task_id), paused=action == "pause")
        self.finish({"task_id": task_id, "action": action})


def make_app(agent: RunnerAgent) -> web.Application:
    args = {"agent": agent}
    return web.Application(
        [
            (r"/api/health", HealthHandler, args),
            (r"/api/tasks", LaunchHandler, args),
            (r"/api/tasks/(\d+)/(kill|pause|resume)", ControlHandler, args),
        ]
    )
