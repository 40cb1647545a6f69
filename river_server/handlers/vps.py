"""REST routes for VPSes (see river_server/vps.py and docs/vps.md)."""

from __future__ import annotations

from tornado import web

from river_runner.ids import parse_id
from river_runner.spec import SpecError
from river_runner.wire.queries import NumberPage, VpsList
from river_runner.wire.requests import EmptyBody, VpsAppStart, VpsCreate, VpsExec
from river_server import db
from river_server.auth import role_at_least
from river_server.handlers.base import RiverAPIHandler, min_cores
from river_server.paging import page_of, page_request
from river_server.tasks import TaskError


class VpsBase(RiverAPIHandler):
    def load_vps(self, vps_id: str) -> db.Task:
        """The VPS's current incarnation, if the caller owns it (or is an operator); 404
        otherwise, so others learn nothing of its existence."""
        try:
            number = parse_id(vps_id)
        except ValueError as exc:
            raise web.HTTPError(400, str(exc)) from None
        task = self.river.vps.current(number)
        if task is None or (
            task.owner != self.username and not role_at_least(self.role, "operator")
        ):
            raise web.HTTPError(404, f"no VPS {vps_id}")
        return task


class VpsListHandler(VpsBase):
    bodies = {"post": VpsCreate}
    queries = {"get": VpsList}

    @web.authenticated
    def get(self) -> None:
        params = self.query(VpsList)
        show_all = params.all
        owner = None if show_all and role_at_least(self.role, "operator") else self.username
        service = self.river.vps
        found = service.incarnations(owner)
        items = [service.to_json(tasks[-1]) for _, tasks in sorted(found.items(), reverse=True)]
        items, following = page_of(items, page_request(params), "id", newest_first=True)
        self.write_json({"vps": items, "next": following})

    @web.authenticated
    def post(self) -> None:
        self.require_role("user")
        body = self.body(VpsCreate, context=min_cores(self.role)).fields_set()
        try:
            task, private_key = self.river.vps.create(self.username, body, self.role)
        except SpecError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        data = self.river.vps.to_json(task)
        if private_key is not None:
            data["private_key"] = private_key  # shown once, never stored
        self.write_json({"vps": data}, status=201)


class VpsHandler(VpsBase):
    @web.authenticated
    def get(self, vps_id: str) -> None:
        self.write_json({"vps": self.river.vps.to_json(self.load_vps(vps_id))})

    @web.authenticated
    async def delete(self, vps_id: str) -> None:
        task = self.load_vps(vps_id)
        try:
            await self.river.vps.delete(task)
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"deleted": vps_id})


class VpsActionHandler(VpsBase):
    bodies = {"post": EmptyBody}

    @web.authenticated
    async def post(self, vps_id: str, action: str) -> None:
        self.body(EmptyBody)
        task = self.load_vps(vps_id)
        service = self.river.vps
        try:
            if action == "stop":
                await service.stop(task)
            elif action == "restart":
                await service.restart(task, self.role)
            elif action == "snapshot":
                await service.snapshot(task)
            else:
                await service.control(task, action)
        except SpecError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"vps": service.to_json(self.load_vps(vps_id))})


class VpsTerminalHandler(VpsBase):
    bodies = {"post": EmptyBody}

    @web.authenticated
    async def post(self, vps_id: str) -> None:
        self.body(EmptyBody)
        task = self.load_vps(vps_id)
        try:
            name = await self.river.vps.open_terminal(task, self.settings.get("terminal_manager"))
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"name": name}, status=201)


class VpsSnapshotsHandler(VpsBase):
    queries = {"get": NumberPage}

    @web.authenticated
    def get(self, vps_id: str) -> None:
        snapshots = self.river.vps.snapshots(self.load_vps(vps_id))
        page = page_request(self.query(NumberPage))
        snapshots, following = page_of(snapshots, page, "number")
        self.write_json({"snapshots": snapshots, "next": following})


class VpsSnapshotHandler(VpsBase):
    @web.authenticated
    async def delete(self, vps_id: str, number: str) -> None:
        task = self.load_vps(vps_id)
        if not number.isdigit():
            raise web.HTTPError(400, f"a snapshot is named by its number, not {number!r}")
        try:
            task = await self.river.vps.delete_snapshot(task, int(number))
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"snapshots": self.river.vps.snapshots(task)})


class VpsExecHandler(VpsBase):
    bodies = {"post": VpsExec}

    @web.authenticated
    async def post(self, vps_id: str) -> None:
        body = self.body(VpsExec)
        task = self.load_vps(vps_id)
        try:
            result = await self.river.vps.exec(task, body.command, body.detach)
        except SpecError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json(result)


class VpsAppsHandler(VpsBase):
    bodies = {"post": VpsAppStart}

    @web.authenticated
    async def post(self, vps_id: str) -> None:
        body = self.body(VpsAppStart).fields_set()
        task = self.load_vps(vps_id)
        try:
            task = await self.river.vps.start_app(task, body, self.base_url)
        except SpecError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json({"vps": self.river.vps.to_json(task)}, status=201)
