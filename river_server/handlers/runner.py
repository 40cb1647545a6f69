"""Routes only runners call. They use the runner credential scheme and never Jupyter's
login (no cookies, so no XSRF), and they refuse user tokens. Their database work runs on
the host's DB threads (river_server/dbwork.py), never on the loop."""

from __future__ import annotations

import json
from typing import Any

from tornado import web

from river_runner.protocol import MSG_LOG, MSG_STATUS, parse_runner_auth
from river_server.nodes import RegistrationError
from river_server.services import River
from river_server.standby import refuse_if_standby


class RunnerAPIHandler(web.RequestHandler):
    @property
    def river(self) -> River:
        return self.settings["river"]

    def check_xsrf_cookie(self) -> None:
        """Runner calls carry a credential header, never a cookie."""

    def prepare(self) -> None:
        # Runners talk to the leader only; a standby names it (X-River-Leader).
        refuse_if_standby(self, leader_only=True)

    def presented_secret(self) -> str:
        secret = parse_runner_auth(self.request.headers.get("Authorization"))
        if not secret:
            raise web.HTTPError(401, "runner credential required (Authorization: river-runner ...)")
        if not secret.isascii():  # no River secret is; comparing it would raise (a 500)
            raise web.HTTPError(
                401, "the runner credential has characters that are not ASCII; it is not River's"
            )
        return secret

    async def authenticate_node(self) -> str:
        """The name of the node whose credential this request carries."""
        name = await self.river.nodes.credential_owner(self.presented_secret())
        if name is None:
            raise web.HTTPError(401, "unknown runner credential")
        return name

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as exc:  # not JSON, or not UTF-8
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
    async def post(self) -> None:
        secret = self.presented_secret()
        body = self.json_body()
        try:
            reply = await self.river.db.write(self.river.nodes.register, secret, body)
        except RegistrationError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.finish(reply)


class HeartbeatHandler(RunnerAPIHandler):
    async def post(self) -> None:
        name = await self.authenticate_node()
        reply = await self.river.nodes.beat(name, self.json_body())
        if reply is None:
            raise web.HTTPError(404, "this host does not know your address: register again")
        self.finish(reply)


class RunnerEventsHandler(RunnerAPIHandler):
    async def post(self) -> None:
        name = await self.authenticate_node()
        if not self.river.nodes.is_online(name):
            raise web.HTTPError(404, "register before sending events")
        messages = self.json_body().get("messages")
        if not isinstance(messages, list):
            raise web.HTTPError(400, "body needs 'messages': a list")
        problem = _malformed(messages)
        if problem:
            raise web.HTTPError(400, problem)
        stop, dropped = await self.river.db.write(
            self.river.tasks.apply_runner_messages, name, messages
        )
        # Reports about tasks not placed on this runner are acknowledged (so an honest
        # runner's outbox moves on) but dropped; `dropped` says how many.
        self.finish({"ok": True, "kill": stop, "dropped": dropped})


def _malformed(messages: list[Any]) -> str | None:
    """Why a batch cannot be applied, or None. Checked whole before anything is applied."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return f"{where} must be an object"
        if message.get("kind") not in (MSG_LOG, MSG_STATUS):
            return f"{where}.kind must be {MSG_LOG!r} or {MSG_STATUS!r}"
        task_id = message.get("task_id")
        if not isinstance(task_id, (str, int)) or not str(task_id).isdigit():
            return f"{where}.task_id must be a task ID (digits)"
        lines = message.get("lines") or []
        if message["kind"] == MSG_LOG and (
            not isinstance(lines, list)
            or not all(isinstance(line, dict) and _is_int(line.get("seq")) for line in lines)
        ):
            return f"{where}.lines must be a list of objects with an integer 'seq'"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
