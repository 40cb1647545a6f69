"""Shared pieces of the user-facing API handlers: auth, JSON bodies, ownership."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar, get_origin

from jupyter_server.base.handlers import APIHandler
from pydantic import ValidationError
from tornado import web

from river_runner.ids import parse_id
from river_runner.wire import Request, describe_errors
from river_runner.wire.queries import TRANSPORT, NoQuery, Query
from river_server import db
from river_server.auth import role_at_least, user_role
from river_server.services import River

RequestT = TypeVar("RequestT", bound=Request)
QueryT = TypeVar("QueryT", bound=Query)


def min_cores(role: str) -> dict[str, int]:
    """Validation context: 0 cores (unpinned, outside quotas) is an operator power."""
    return {"min_cores": 0 if role_at_least(role, "operator") else 1}


class RiverAPIHandler(APIHandler):
    # The body model of each method that takes a JSON body ("post", "patch", "put"), from
    # river_runner.wire: read by body(), the OpenAPI document and the contract test
    # (tests/integration/test_request_models.py), so a route cannot take an unchecked body.
    bodies: ClassVar[dict[str, type[Request]]] = {}

    # The query model of each method that takes query parameters, from
    # river_runner/wire/queries.py; every other method takes none (NoQuery). Checked in
    # prepare(), so no route can read a parameter unchecked or ignore a misspelled one;
    # the OpenAPI document's parameters come from the same models (river_server/openapi.py).
    queries: ClassVar[dict[str, type[Query]]] = {}
    _query: Query | None = None

    @classmethod
    def query_model(cls, method: str) -> type[Query]:
        return cls.queries.get(method.lower(), NoQuery)

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if not self._finished:
            self._query = self._checked_query()

    def _checked_query(self) -> Query:
        """The query string, validated by the method's model: a 400 naming each bad
        parameter and what is allowed otherwise."""
        model = self.query_model(self.request.method or "")
        values: dict[str, Any] = {}
        for name, raw in self.request.query_arguments.items():
            if name in TRANSPORT:  # Jupyter's credentials, not a parameter of the route
                continue
            try:
                texts = [item.decode("utf-8") for item in raw]
            except UnicodeDecodeError:
                raise web.HTTPError(400, f"query parameter '{name}' is not UTF-8") from None
            field = model.model_fields.get(name)
            if field is not None and get_origin(field.annotation) is list:
                values[name] = texts
            elif len(texts) > 1:
                raise web.HTTPError(
                    400, f"query parameter '{name}' is given {len(texts)} times; give it once"
                )
            else:
                values[name] = texts[0]
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise web.HTTPError(400, describe_errors(model, exc, "query parameter")) from None

    def query(self, model: type[QueryT]) -> QueryT:
        """The query parameters, as checked by prepare() against the declared `model`."""
        if not isinstance(self._query, model) or type(self._query) is not model:
            raise RuntimeError(f"{type(self).__name__} declares {type(self._query)}, reads {model}")
        return self._query

    @classmethod
    def request_model(cls, method: str, path_args: Sequence[str] = ()) -> type[Request] | None:
        """The model of `method`'s body; handlers whose actions differ by path override."""
        return cls.bodies.get(method.lower())

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
        except ValueError as exc:  # not JSON, or not UTF-8 (UnicodeDecodeError)
            raise web.HTTPError(400, f"request body is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "request body must be a JSON object")
        return body

    def body(self, model: type[RequestT], context: dict[str, Any] | None = None) -> RequestT:
        """The JSON body, validated by `model`: a 400 naming each bad field otherwise.
        `context` carries caller-dependent bounds (e.g. min_cores) into the checks."""
        declared = self.request_model(self.request.method or "", self.path_args)
        if declared is not model:  # a programming error: the route declares another model
            raise RuntimeError(f"{type(self).__name__} declares {declared}, reads {model}")
        try:
            return model.model_validate(self.json_body(), context=context)
        except ValidationError as exc:
            raise web.HTTPError(400, describe_errors(model, exc)) from None

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
