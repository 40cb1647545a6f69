"""`/river/api/leases`: notebook kernels' leases for kernel-bound tasks (leases.py).

Its own module: a lease is the kernel's, not a task's; tasks name it when submitted."""

from __future__ import annotations

from tornado import web

from river_runner.wire.requests import EmptyBody
from river_server.handlers.base import RiverAPIHandler
from river_server.leases import LeaseRefused


class LeasesHandler(RiverAPIHandler):
    bodies = {"post": EmptyBody}

    @web.authenticated
    async def post(self) -> None:
        self.require_role("user")
        self.body(EmptyBody)
        self.write_json({"lease": await self.river.leases.create(self.username)}, status=201)


class LeaseActionHandler(RiverAPIHandler):
    bodies = {"post": EmptyBody}

    @web.authenticated
    async def post(self, lease_id: str, action: str) -> None:
        self.require_role("user")
        self.body(EmptyBody)
        try:
            lease = await self.river.leases.renew(
                lease_id, self.username, release=action == "release"
            )
        except LeaseRefused as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"lease": lease})
