"""The base of the runner's HTTP handlers: the host's credential, JSON bodies and errors."""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from river_runner.agent import RunnerAgent
from river_runner.protocol import parse_runner_auth, same_secret


class RunnerHandler(web.RequestHandler):
    """Base: every request must carry the secret this runner gave the host."""

    agent: RunnerAgent

    def initialize(self, agent: RunnerAgent) -> None:
        self.agent = agent

    def prepare(self) -> None:
        secret = parse_runner_auth(self.request.headers.get("Authorization"))
        if not secret or not same_secret(secret, self.agent.inbound_secret):
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
        except ValueError as exc:  # not JSON, or not UTF-8
            raise web.HTTPError(400, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return body
