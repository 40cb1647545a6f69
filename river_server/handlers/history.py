"""`GET /nodes/{name}/history` and `GET /usage/history`: what the charts draw (history.py).

Node history is cluster state, like `GET /nodes`: every logged-in role reads it. Usage
history names users and how much they ran, so a caller below operator gets their own series
and the cluster's total only (docs/security.md, "Usage history")."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from tornado import web

from river_runner.wire.queries import NodeHistoryQuery, UsageHistoryQuery
from river_server import db, history
from river_server.auth import role_at_least
from river_server.handlers.base import RiverAPIHandler


class NodeHistoryHandler(RiverAPIHandler):
    queries = {"get": NodeHistoryQuery}

    @web.authenticated
    async def get(self, name: str) -> None:
        params = self.query(NodeHistoryQuery)
        now = time.time()
        since = now - 3600.0 if params.since is None else params.since
        sessions, settings = self.river.sessions, self.river.config.history

        def reading() -> dict[str, Any] | None:
            with sessions() as session:
                if session.scalar(select(db.Node.name).where(db.Node.name == name)) is None:
                    return None
                return history.node_json(session, name, since, params.step, now, settings)

        answer = await self.river.db.read(reading)
        if answer is None:
            raise web.HTTPError(404, f"no node named {name!r} (see GET /river/api/nodes)")
        self.write_json({"history": answer})


class UsageHistoryHandler(RiverAPIHandler):
    queries = {"get": UsageHistoryQuery}

    @web.authenticated
    async def get(self) -> None:
        params = self.query(UsageHistoryQuery)
        now = time.time()
        since = now - 86400.0 if params.since is None else params.since
        only = None if role_at_least(self.role, "operator") else self.username
        sessions = self.river.sessions

        def reading() -> dict[str, Any]:
            with sessions() as session:
                return history.usage_json(session, since, params.step, now, only)

        self.write_json({"usage": await self.river.db.read(reading)})
