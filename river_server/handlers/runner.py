"""Routes only runners call. They use the runner credential scheme and never Jupyter's
login (no cookies, so no XSRF), and they refuse user tokens."""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from river_runner.protocol import parse_runner_auth
from river_server.nodes import RegistrationError
from river_server.services import River


class RunnerAPIHandler(web.RequestHandler):
    @property
    def river(self) -> River:
        return self.settings["river"]

    def check_xsrf_cookie(self) -> None:
        """Runner calls carry a credential header, never a cookie."""

    def presented_secret(self) -> str:
        secret = parse_runner_auth(self.request.headers.get("Authorization"))
        if not secret:
            raise web.HTTPError(401, "runner credential required (Authorization: river-runner ...)")
        return secret

    def authenticate_node(self) -> str:
        """The name of the node whose credential this request carries."""
        name = self.river.nodes.name_for_credential(self.presented_secret())
        if name is None:
            raise web.HTTPError(401, "unknown runner credential")
        return name

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError as exc:
            raise web.HTTPError(400, f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "body must be a JSON object")
        return body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))


class RegisterHandler(RunnerAPIHandler):
    def post(self) -> None:
        secret = self.presented_secret()
        try:
            reply = self.river.nodes.register(secret, self.json_body())
        except RegistrationError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.finish(reply)


class HeartbeatHandler(RunnerAPIHandler):
    def post(self) -> None:
        name = self.authenticate_node()
        reply = self.river.nodes.heartbeat(name, self.json_body())
        if reply is None:
            raise web.HTTPError(404, "this host does not know your address: register again")
        self.finish(reply)


class RunnerEventsHandler(RunnerAPIHandler):
    def post(self) -> None:
        name = self.authenticate_node()
        if not self.river.nodes.is_online(name):
            raise web.HTTPError(404, "register before sending events")
        messages = self.json_body().get("messages")
        if not isinstance(messages, list):
            raise web.HTTPError(400, "body needs 'messages': a list")
        stop = self.river.tasks.apply_runner_messages(name, messages)
        self.finish({"ok": True, "kill": stop})
