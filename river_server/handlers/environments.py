"""REST routes for container environments (see docs/api.md and river_server/environments.py).

The service's docker calls block, so each runs on one of the service's thread pools: quick
calls on one, execs and exports (admitted per user, 429 beyond) on another, so a hanging
exec never delays another user's request."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from tornado import web

from river_runner.wire.queries import EnvironmentDelete, NamePage
from river_runner.wire.requests import EmptyBody, EnvironmentCreate, EnvironmentExec, Request
from river_server.environments import EnvironmentError
from river_server.handlers.base import RiverAPIHandler
from river_server.paging import page_of, page_request


class _EnvironmentHandler(RiverAPIHandler):
    async def call(
        self, fn: Any, *args: Any, wait: float | None = None, long: bool = False, **kwargs: Any
    ) -> Any:
        loop = asyncio.get_running_loop()
        service = self.river.environments
        try:
            if long:
                future = asyncio.wrap_future(
                    service.submit_long(self.username, fn, *args, **kwargs), loop=loop
                )
            else:
                future = loop.run_in_executor(
                    service.executor, functools.partial(fn, *args, **kwargs)
                )
        except EnvironmentError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        try:
            return await asyncio.wait_for(future, wait)
        except EnvironmentError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        except asyncio.TimeoutError:
            raise web.HTTPError(
                504, f"the environment operation took longer than {wait:g}s"
            ) from None


class EnvironmentsHandler(_EnvironmentHandler):
    bodies = {"post": EnvironmentCreate}
    queries = {"get": NamePage}

    @web.authenticated
    async def get(self) -> None:
        self.require_role("viewer")
        page = page_request(self.query(NamePage))
        environments = await self.call(self.river.environments.list)
        environments, following = page_of(environments, page, "name")
        self.write_json({"environments": environments, "next": following})

    @web.authenticated
    async def post(self) -> None:
        self.require_role("user")
        body = self.body(EnvironmentCreate)
        environment = await self.call(
            self.river.environments.create, self.username, body.name, body.image
        )
        self.write_json({"environment": environment}, status=201)


class EnvironmentHandler(_EnvironmentHandler):
    queries = {"delete": EnvironmentDelete}

    @web.authenticated
    async def get(self, name: str) -> None:
        self.require_role("viewer")
        self.write_json({"environment": await self.call(self.river.environments.get, name)})

    @web.authenticated
    async def delete(self, name: str) -> None:
        self.require_role("user")
        tarball = self.query(EnvironmentDelete).tarball
        result = await self.call(
            self.river.environments.delete, self.username, self.role, name, tarball=tarball
        )
        self.write_json(result)


class EnvironmentActionHandler(_EnvironmentHandler):
    ACTION_BODIES: dict[str, type[Request]] = {"export": EmptyBody, "exec": EnvironmentExec}

    @classmethod
    def request_model(cls, method: str, path_args: Sequence[str] = ()) -> type[Request] | None:
        """One route, two actions: the body's model follows the action in the path."""
        if method.lower() != "post" or len(path_args) < 2:
            return None
        return cls.ACTION_BODIES.get(path_args[1])

    @web.authenticated
    async def post(self, name: str, action: str) -> None:
        self.require_role("user")
        service = self.river.environments
        if action == "export":
            self.body(EmptyBody)
            environment = await self.call(service.export, self.username, self.role, name, long=True)
            self.write_json({"environment": environment})
            return
        body = self.body(EnvironmentExec)
        timeout = body.timeout
        # The service kills the command at its limit; this only guards the wait itself.
        limit = service.limits.exec_timeout or 3600.0
        result = await self.call(
            service.exec,
            self.username,
            self.role,
            name,
            body.command,
            None if timeout is None else float(timeout),
            wait=float(timeout or limit) + 30,
            long=True,
        )
        self.write_json(result)
