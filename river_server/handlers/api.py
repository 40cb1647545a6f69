"""REST routes for users: nodes, tasks, task control and logs (see docs/api.md).

Their database work runs on the host's DB threads (river_server/dbwork.py): a reader for
lists and lookups, the writer for submissions and control, never the event loop."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from tornado import web

from river_runner.spec import SpecError
from river_runner.wire.queries import LogsQuery, TaskList
from river_runner.wire.requests import EmptyBody, TaskSubmit
from river_server import db, jobs
from river_server.auth import role_at_least
from river_server.datastore import DataError
from river_server.handlers.base import RiverAPIHandler, min_cores
from river_server.handlers.data import check_task_data
from river_server.paging import page_request
from river_server.serialize import task_detail_json
from river_server.tasks import TaskError


class NodesHandler(RiverAPIHandler):
    @web.authenticated
    async def get(self) -> None:
        nodes = self.river.nodes

        def listing() -> list[dict[str, Any]]:
            return [nodes.to_json(n) for n in nodes.all_nodes()]

        self.write_json({"nodes": await self.river.db.read(listing)})


class TasksHandler(RiverAPIHandler):
    bodies = {"post": TaskSubmit}
    queries = {"get": TaskList}

    @web.authenticated
    async def get(self) -> None:
        params = self.query(TaskList)
        show_all = params.all
        states = params.state.split(",") if params.state else []
        page = page_request(params)
        query = select(db.Task).order_by(db.Task.id.desc()).limit(page.limit + 1)
        if page.before is not None:
            query = query.where(db.Task.id < page.before)
        if not show_all:
            query = query.where(db.Task.owner == self.username)
        if states:
            query = query.where(db.Task.state.in_(states))
        tasks_service = self.river.tasks

        def listing() -> dict[str, Any]:
            with self.river.sessions() as session:
                rows = session.scalars(query).all()
                positions = tasks_service.queue_info(session)
            more = len(rows) > page.limit
            rows = rows[: page.limit]
            return {
                "tasks": [tasks_service.to_json(t, positions) for t in rows],
                "next": str(rows[-1].id) if more else None,
            }

        self.write_json(await self.river.db.read(listing))

    @web.authenticated
    async def post(self) -> None:
        self.require_role("user")
        body = self.body(TaskSubmit, context=min_cores(self.role)).fields_set()
        try:
            check_task_data(self.river.data, self.username, body.get("data"))
        except DataError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        try:
            answer = await self.river.db.write(self._submit, self.username, self.role, body)
        except SpecError as exc:
            raise web.HTTPError(400, str(exc)) from None
        except TaskError as exc:  # e.g. 403: privileged or a mount beyond the caller's role
            raise web.HTTPError(exc.status, str(exc)) from None
        self.write_json(answer, status=201)

    def _submit(self, owner: str, role: str, body: dict[str, Any]) -> dict[str, Any]:
        """On the DB writer: store the task and build the answer from the same state."""
        tasks = self.river.tasks
        task = tasks.submit(owner, body, role=role)
        answer: dict[str, Any] = {"task": tasks.to_json(task)}
        if task.job_id is not None:  # a multi-node job: every member, in rank order
            with self.river.sessions() as session:
                members = jobs.members_of(session, task.job_id)
            answer["members"] = [tasks.to_json(m) for m in members]
        return answer


class TaskHandler(RiverAPIHandler):
    @web.authenticated
    async def get(self, task_id: str) -> None:
        task = await self.fetch_task(task_id)
        tasks_service = self.river.tasks
        data = await self.river.db.read(tasks_service.to_json, task)
        if task.owner == self.username or role_at_least(self.role, "operator"):
            data = {**data, "spec": task_detail_json(task)["spec"]}
        self.write_json({"task": data})


class TaskActionHandler(RiverAPIHandler):
    bodies = {"post": EmptyBody}

    @web.authenticated
    async def post(self, task_id: str, action: str) -> None:
        self.body(EmptyBody)
        task = await self.fetch_task(task_id, action="control")
        try:
            task = await self.river.tasks.control(task, action)
        except TaskError as exc:
            raise web.HTTPError(exc.status, str(exc)) from None
        fresh = await self.river.db.read(self._get_task, task.id)
        self.write_json({"task": await self.river.db.read(self.river.tasks.to_json, fresh or task)})


class TaskLogsHandler(RiverAPIHandler):
    queries = {"get": LogsQuery}

    @web.authenticated
    async def get(self, task_id: str) -> None:
        task = await self.fetch_task(task_id, action="logs")
        since = self.query(LogsQuery).since
        lines = self.river.logs.read(task.id, since)
        self.write_json({"lines": lines, "next": lines[-1]["seq"] if lines else since})
