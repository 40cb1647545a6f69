"""Shared pieces of the user-facing API handlers: auth, JSON bodies, ownership."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from river_runner.ids import parse_id
from river_server import db
from river_server.auth import role_at_least, user_role
from river_server.services import River


class RiverAPIHandler(APIHandler):
    @property
    def river(self) -> River:
        return self.settings["river"]

    @property
    def username(self) -> str:
        return self.current_user.username

    @property
    def role(self) -> str:
        return user_role(self.current_user)

    def require_role(self, minimum: str) -> None:
        if not role_at_least(self.role, minimum):
            raise web.HTTPError(403, f"this needs the {minimum} role; you are {self.role}")

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as exc:
            raise web.HTTPError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body

    def load_task(self, task_id: str, *, action: str = "see") -> db.Task:
        """The task, if it exists and the caller may `action` it (see / control / read logs)."""
        try:
            number = parse_id(task_id)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        with self.river.sessions() as session:
            task = session.get(db.Task, number)
        if task is None:
            raise web.HTTPError(404, f"no task {task_id}")
        if task.owner != self.username and not role_at_least(self.role, "operator"):
            if action == "see" and role_at_least(self.role, "viewer"):
                return task
            # Hide existence from those who may not touch it.
            raise web.HTTPError(404, f"no task {task_id}")
        return task

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))
